"""Applying the schema: alembic drives, the SQL files in ``sql/migrations`` are the content.

Each alembic revision ``alembic/versions/NNNN_slug.py`` runs ``sql/migrations/NNNN_slug.sql``
(and ``NNNN_slug.down.sql`` to revert), rendered for the schema being migrated, so
the schema has one source. Alembic's bookkeeping table, ``alembic_version``, lives
in the pgqueue schema itself: two schemas are migrated independently.

``migrate()`` is idempotent and safe when several processes run it at once: the
whole upgrade is one transaction that first takes a transaction-level advisory
lock derived from the schema name, and alembic reads the current revision only
after the lock is held.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import sql as pgsql

from . import db, errors, sqlfiles
from .version import __version__

logger = logging.getLogger(__name__)

# Alembic keeps its running context in module globals (alembic.context, alembic.op):
# two threads of one process must not run it at once. Processes are serialised by
# the advisory lock in run_environment().
_ALEMBIC_IN_PROCESS = threading.Lock()


def _engine(dsn: str, connect_timeout: float) -> Any:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=lambda: db.connect(dsn, connect_timeout=connect_timeout, autocommit=False),
        poolclass=NullPool,
    )


def _alembic_config(connection: Any, schema: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(sqlfiles.data_dir("alembic")))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    cfg.attributes["schema"] = schema
    return cfg


# A migration that must lock a table waits at most this long for it, then gives up (rolls back,
# so the statements queued behind it run) and tries again later: an ALTER waiting behind a long
# reader must not block every worker's statements, heartbeats included.
LOCK_TIMEOUT = 3.0
DEFAULT_LOCK_WAIT = 600.0


def migrate(dsn: str, schema: str, *, connect_timeout: float = 5.0, target: str = "head",
            lock_wait: float = DEFAULT_LOCK_WAIT) -> tuple[str | None, str | None]:
    """Upgrade ``schema`` to ``target``; returns the revisions before and after.

    Each try takes locks with a short ``lock_timeout``; when a lock is held elsewhere (a long
    transaction), the try rolls back and is made again with a growing pause, for up to
    ``lock_wait`` seconds, with a line saying who holds things up."""
    import random

    deadline = time.monotonic() + lock_wait
    pause = 0.5
    while True:
        try:
            return _migrate_once(dsn, schema, connect_timeout=connect_timeout, target=target)
        except _LockBusy as busy:
            if time.monotonic() + pause > deadline:
                raise errors.PgQueueError(
                    f"migration of schema {schema!r} gave up after {lock_wait:.0f} s: a table it must "
                    f"change stayed locked by another session ({busy.holders}); end that "
                    "transaction, or run the migration at a quieter time") from None
            logger.warning("migration of schema %r is waiting for a lock held by another session "
                           "(%s); trying again in %.1f s", schema, busy.holders, pause)
            time.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(pause * 2, 15.0)


class _LockBusy(Exception):
    def __init__(self, holders: str) -> None:
        self.holders = holders


def _migrate_once(dsn: str, schema: str, *, connect_timeout: float,
                  target: str) -> tuple[str | None, str | None]:
    from alembic import command

    sqlfiles.validate_schema_name(schema)
    engine = _engine(dsn, connect_timeout)
    try:
        with _ALEMBIC_IN_PROCESS, engine.begin() as connection:
            _lock(connection, schema)  # before reading the revision: another may be migrating
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")
            before = _revision_in(connection, schema)
            command.upgrade(_alembic_config(connection, schema), target)
            after = _revision_in(connection, schema)
    except errors.PgQueueError:
        raise
    except Exception as exc:
        cause = _driver_error(exc)
        if getattr(cause, "sqlstate", None) == "55P03":  # lock_not_available
            raise _LockBusy(_long_transactions(dsn, connect_timeout)) from exc
        raise _migration_error(exc, dsn) from exc
    finally:
        engine.dispose()
    if before != after:
        logger.debug("migrated schema %r from %s to %s", schema, before or "nothing", after)
    return before, after


def _driver_error(exc: BaseException) -> BaseException:
    cause = exc
    while getattr(cause, "orig", None) is not None:  # SQLAlchemy wraps driver errors
        cause = cause.orig  # type: ignore[assignment]
    return cause


def _long_transactions(dsn: str, connect_timeout: float) -> str:
    """The oldest open transactions on the server, for the waiting message."""
    try:
        with db.connect(dsn, connect_timeout=connect_timeout) as conn:
            rows = conn.execute(
                "SELECT pid, round(extract(epoch FROM now() - xact_start))::int, state, "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity "
                "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
                "ORDER BY xact_start LIMIT 3").fetchall()
    except Exception:
        return "could not see who"
    if not rows:
        return "a transaction that has just ended"
    return "; ".join(f"pid {pid}, open {age} s, {state}: {query!r}" for pid, age, state, query in rows)


def downgrade(dsn: str, schema: str, target: str = "base", *, connect_timeout: float = 5.0) -> None:
    """Revert ``schema`` to ``target`` (``base`` drops every pgqueue object and its data)."""
    from alembic import command

    engine = _engine(dsn, connect_timeout)
    try:
        with _ALEMBIC_IN_PROCESS, engine.begin() as connection:
            command.downgrade(_alembic_config(connection, schema), target)
    finally:
        engine.dispose()


def _migration_error(exc: Exception, dsn: str) -> Exception:
    cause = _driver_error(exc)
    if isinstance(cause, psycopg.OperationalError):
        return errors.DatabaseUnavailable(f"migration failed on {db.mask_dsn(dsn)}: {db._one_line(cause)}")
    if isinstance(cause, psycopg.Error):
        return errors.PgQueueError(f"migration failed on {db.mask_dsn(dsn)}: {db._one_line(cause)}")
    return exc


def _lock(connection: Any, schema: str) -> None:
    """Transaction-level advisory lock of this schema's migrations (released at commit)."""
    class_id, object_id = sqlfiles.advisory_key(schema, "migrate")
    connection.exec_driver_sql(sqlfiles.queries_for(schema).meta_migrate_lock,
                               {"class_id": class_id, "object_id": object_id})


def _revision_in(connection: Any, schema: str) -> str | None:
    exists = connection.exec_driver_sql(
        "SELECT to_regclass(%(name)s) IS NOT NULL", {"name": f'"{schema}".alembic_version'}
    ).scalar()
    if not exists:
        return None
    return connection.exec_driver_sql(sqlfiles.queries_for(schema).meta_schema_revision).scalar()


# ------------------------------------------------------------ alembic hooks

def run_environment(context: Any) -> None:
    """Body of ``alembic/env.py``: lock, create the schema, run the revisions."""
    if context.is_offline_mode():
        raise errors.ConfigurationError("offline migrations are not supported: use `pgqueue schema`")
    connection = context.config.attributes.get("connection")
    schema = context.config.attributes.get("schema")
    if connection is None or schema is None:
        raise errors.ConfigurationError(
            "run pgqueue's migrations with `pgqueue migrate` or App.migrate(), not the alembic command"
        )
    context.configure(
        connection=connection,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        _lock(connection, schema)  # re-entrant: already held when called through migrate()
        connection.exec_driver_sql(
            pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)).as_string(None)
        )
        context.run_migrations()


def _driver_connection() -> psycopg.Connection:
    from alembic import op

    return op.get_bind().connection.driver_connection


def _current_schema() -> str:
    from alembic import op

    return op.get_context().version_table_schema


def apply_up(revision: str) -> None:
    """Run ``sql/migrations/<revision>_*.sql`` for the schema being migrated."""
    schema = _current_schema()
    db.execute_script(_driver_connection(), sqlfiles.migration(revision).render(schema))


def apply_down(revision: str) -> None:
    migration = sqlfiles.migration(revision)
    down = migration.path.with_name(migration.path.stem + ".down.sql")
    if not down.exists():
        raise errors.ConfigurationError(f"migration {revision} cannot be reverted: {down.name} is missing")
    db.execute_script(_driver_connection(), sqlfiles.render(down.read_text(encoding="utf-8"),
                                                            _current_schema()))


# ------------------------------------------------------------------ checks

def schema_ddl(schema: str, *, since: str | None = None) -> str:
    """The DDL of every migration after ``since``, for teams with their own migration tool.

    The script records the revision in ``alembic_version`` as ``pgqueue migrate``
    would, so either way of applying later migrations keeps working.
    """
    sqlfiles.validate_schema_name(schema)
    pending = [m for m in sqlfiles.migrations() if since is None or m.revision > since]
    if since is not None and since not in {m.revision for m in sqlfiles.migrations()}:
        known = ", ".join(m.revision for m in sqlfiles.migrations())
        raise errors.ConfigurationError(f"unknown revision {since!r}; revisions are: {known}")
    head = sqlfiles.head_revision()
    parts = [
        f"-- pgqueue {__version__}: schema {schema!r}, "
        + (f"migrations after {since} up to {head}" if since else f"all migrations up to {head}"),
        "BEGIN;",
        f'CREATE SCHEMA IF NOT EXISTS "{schema}";',
    ]
    for m in pending:
        parts.append(f"\n-- ---- migration {m.revision}_{m.slug} ----\n")
        parts.append(m.render(schema).rstrip())
    parts.append(
        "\n-- ---- bookkeeping: the revision `pgqueue migrate` continues from ----\n"
        f'CREATE TABLE IF NOT EXISTS "{schema}".alembic_version (\n'
        "    version_num varchar(32) NOT NULL,\n"
        "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n);\n"
        f'DELETE FROM "{schema}".alembic_version;\n'
        f"INSERT INTO \"{schema}\".alembic_version (version_num) VALUES ('{head}');\n"
        "COMMIT;"
    )
    return "\n".join(parts) + "\n"


def check_revision(conn: psycopg.Connection, schema: str) -> str:
    """Raise SchemaNotMigrated unless ``schema`` is at the revision this code needs."""
    head = sqlfiles.head_revision()
    try:
        with conn.transaction():
            rows = db.fetch_all(conn, sqlfiles.queries_for(schema).meta_schema_revision)
    except psycopg.errors.UndefinedTable as exc:
        raise errors.SchemaNotMigrated(
            f"the pgqueue schema {schema!r} does not exist in this database: run `{_migrate_command(schema)}`"
        ) from exc
    current = rows[0][0] if rows else None
    if current == head:
        return current
    known = {m.revision for m in sqlfiles.migrations()}
    if current is None or current in known:
        raise errors.SchemaNotMigrated(
            f"the pgqueue schema {schema!r} is at revision {current or 'none'}, this pgqueue needs "
            f"{head}: run `{_migrate_command(schema)}`"
        )
    # A newer schema: fine during a rolling deploy, as long as its migrations since ours were
    # additive (the schema says from which code revision on it may be used).
    compatible_since = _compatible_since(conn, schema)
    if compatible_since is not None and compatible_since <= head:
        logger.warning("the pgqueue schema %r is at revision %s, newer than this pgqueue %s (%s); "
                       "it stays compatible with code from revision %s on: running, but upgrade "
                       "pgqueue soon", schema, current, __version__, head, compatible_since)
        return current
    raise errors.SchemaNotMigrated(
        f"the pgqueue schema {schema!r} is at revision {current}, newer than this pgqueue "
        f"{__version__} knows (up to {head}) and not compatible with it"
        + (f" (it needs code of revision {compatible_since} or later)" if compatible_since else "")
        + ": upgrade pgqueue"
    )


def _compatible_since(conn: psycopg.Connection, schema: str) -> str | None:
    try:
        with conn.transaction():
            rows = db.fetch_all(conn, sqlfiles.queries_for(schema).meta_compatible_since)
    except psycopg.errors.UndefinedTable:
        return None
    return rows[0][0] if rows else None


def _migrate_command(schema: str) -> str:
    return "pgqueue migrate" if schema == "pgqueue" else f"pgqueue --schema {schema} migrate"
