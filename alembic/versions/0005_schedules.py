"""cron schedules (leaderless, once per tick) and their history

Revision ID: 0005
Revises: 0004
"""

from pgqueue.migrations import apply_down, apply_up

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_up(revision)


def downgrade() -> None:
    apply_down(revision)
