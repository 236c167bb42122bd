"""initial schema: jobs, runners, job_events, wake-up trigger

Revision ID: 0001
Revises:
"""

from pgqueue.migrations import apply_down, apply_up

revision = "0001"
down_revision = None
branch_labels = ("pgqueue",)
depends_on = None


def upgrade() -> None:
    apply_up(revision)


def downgrade() -> None:
    apply_down(revision)
