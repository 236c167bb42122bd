"""views: queue_stats, runner_health, job_timeline

Revision ID: 0002
Revises: 0001
"""

from pgqueue.migrations import apply_down, apply_up

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_up(revision)


def downgrade() -> None:
    apply_down(revision)
