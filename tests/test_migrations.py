"""Migrations: idempotent, concurrent-safe, reversible, and `pgqueue schema` equivalent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psycopg
import pytest

import pgqueue
from pgqueue import db, migrations, sqlfiles


def tables(admin: psycopg.Connection, schema: str) -> set[str]:
    rows = admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    return {r[0] for r in rows}


def test_migrate_creates_the_schema_and_is_idempotent(make_app, admin, schema_name) -> None:
    app = make_app()
    assert app.migrate() == (None, sqlfiles.head_revision())
    assert app.migrate() == (sqlfiles.head_revision(), sqlfiles.head_revision())
    assert {"jobs", "runners", "job_events", "alembic_version"} <= tables(admin, schema_name)
    assert app.check_schema() == sqlfiles.head_revision()


def test_concurrent_migrations_from_several_processes(database_dsn, admin, schema_name) -> None:
    """Four `pgqueue migrate` processes at once: one migrates, the others find it done."""
    env = {**os.environ, "PGQUEUE_DSN": database_dsn, "PGQUEUE_SCHEMA": schema_name}
    procs = [subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    said = sorted(out for out, _ in outputs)
    head = sqlfiles.head_revision()
    assert said == sorted([f"schema {schema_name!r} migrated from nothing to {head}\n"]
                          + [f"schema {schema_name!r} is up to date (revision {head})\n"] * 3), said
    assert admin.execute(f'SELECT count(*) FROM "{schema_name}".alembic_version').fetchone() == (1,)


def test_concurrent_migrations_from_threads(make_app, schema_name) -> None:
    apps = [make_app() for _ in range(3)]
    results: list[object] = []

    def run(app: pgqueue.App) -> None:
        try:
            results.append(app.migrate())
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    head = sqlfiles.head_revision()
    assert sorted(results, key=str) == sorted([(None, head), (head, head), (head, head)], key=str)


def test_downgrade_to_base_and_upgrade_again(make_app, admin, schema_name, database_dsn) -> None:
    app = make_app()
    app.migrate()
    migrations.downgrade(database_dsn, schema_name, "base")
    assert tables(admin, schema_name) == {"alembic_version"}
    app.migrate()
    assert {"jobs", "runners", "job_events"} <= tables(admin, schema_name)


def test_printed_schema_applies_and_migrate_continues_from_it(make_app, admin, schema_name) -> None:
    db.execute_script(admin, migrations.schema_ddl(schema_name))
    app = make_app()
    assert app.check_schema() == sqlfiles.head_revision()
    head = sqlfiles.head_revision()
    assert app.migrate() == (head, head)


def test_printed_schema_matches_the_migrated_one(make_app, admin, schema_name) -> None:
    """`pgqueue schema` and `pgqueue migrate` must build the same objects."""
    app = make_app()
    app.migrate()
    other = schema_name + "_ddl"
    try:
        db.execute_script(admin, migrations.schema_ddl(other))
        query = """
            SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = %s ORDER BY 1, 2, 3"""
        assert admin.execute(query, (schema_name,)).fetchall() == admin.execute(query, (other,)).fetchall()
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_two_schemas_are_independent_queues(make_app) -> None:
    first = make_app()
    first.migrate()
    other_name = first.settings.schema + "_b"
    second = make_app(schema=other_name)
    try:
        second.migrate()
        task_a = first.task(lambda: None, name="t")
        task_b = second.task(lambda: None, name="t")
        job_a = task_a.enqueue()
        task_b.enqueue()
        task_b.enqueue()
        count = lambda app: app.database.fetch(  # noqa: E731
            f'SELECT count(*) AS n FROM "{app.settings.schema}".jobs')[0]["n"]
        assert (count(first), count(second)) == (1, 2)
        assert job_a.status() == "queued"
    finally:
        with psycopg.connect(first.database.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other_name}" CASCADE')


def test_unmigrated_schema_says_to_run_migrate(make_app) -> None:
    app = make_app()
    with pytest.raises(pgqueue.SchemaNotMigrated, match=f"run `pgqueue --schema {app.settings.schema} migrate`"):
        app.check_schema()
    task = app.task(lambda x: x, name="t")
    with pytest.raises(pgqueue.SchemaNotMigrated, match=f"run `pgqueue --schema {app.settings.schema} migrate`"):
        task.enqueue(1)


def test_schema_behind_or_ahead_is_reported(make_app, admin, schema_name) -> None:
    app = make_app()
    app.migrate()
    admin.execute(f"UPDATE \"{schema_name}\".alembic_version SET version_num = '9999'")
    # Newer, and (says the schema) not compatible with this code: refused.
    admin.execute(f"UPDATE \"{schema_name}\".schema_info SET value = '9999' WHERE key = 'compatible_since'")
    with pytest.raises(pgqueue.SchemaNotMigrated, match="newer than this pgqueue"):
        app.check_schema()
    admin.execute(f"UPDATE \"{schema_name}\".alembic_version SET version_num = '0001'")
    with pytest.raises(pgqueue.SchemaNotMigrated, match="is at revision 0001, this pgqueue needs"):
        app.check_schema()


def test_schema_ddl_rejects_unknown_revision() -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="unknown revision '0999'"):
        migrations.schema_ddl("pgqueue", since="0999")
