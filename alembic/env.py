"""Alembic environment for pgqueue: runs inside the transaction pgqueue.migrations opens.

Not meant to be run by the `alembic` command directly: use `pgqueue migrate`
(or App.migrate()), which passes the connection and the schema name.
"""

from alembic import context

from pgqueue.migrations import run_environment

run_environment(context)
