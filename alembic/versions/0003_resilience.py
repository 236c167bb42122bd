"""resilience: liveness locks, elected maintenance, bounded rows, claim and history indexes

Revision ID: 0003
Revises: 0002
"""

from pgqueue.migrations import apply_down, apply_up

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_up(revision)


def downgrade() -> None:
    apply_down(revision)
