"""flow control: key scopes, debounce, per-key locks, queue pause and limits; the SQL API

Revision ID: 0004
Revises: 0003
"""

from pgqueue.migrations import apply_down, apply_up

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_up(revision)


def downgrade() -> None:
    apply_down(revision)
