"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from pgqueue.migrations import apply_down, apply_up

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    apply_up(revision)


def downgrade() -> None:
    apply_down(revision)
