"""The command line: each command against a real server, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from pgqueue import sqlfiles


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not (k.startswith("PGQUEUE_") or k == "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_then_up_to_date(database_dsn, schema_name) -> None:
    env = {"PGQUEUE_DSN": database_dsn, "PGQUEUE_SCHEMA": schema_name}
    first = run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert f"migrated from nothing to {sqlfiles.head_revision()}" in first.stdout
    assert "pgqueue: database postgresql://" in first.stderr and "(from PGQUEUE_DSN)" in first.stderr
    second = run("--schema", schema_name, "--dsn", database_dsn, "migrate")
    assert "is up to date" in second.stdout
    assert second.stderr.count("pgqueue: database") == 1


def test_schema_prints_ddl_without_connecting() -> None:
    result = run("--dsn", "postgresql://nobody@127.0.0.1:1/none", "--schema", "tenant_a", "schema")
    assert result.returncode == 0, result.stderr
    assert 'CREATE TABLE "tenant_a".jobs' in result.stdout
    assert "INSERT INTO \"tenant_a\".alembic_version" in result.stdout


def test_bad_dsn_is_one_line(tmp_path) -> None:
    assert_one_line_error(run("--dsn", "nonsense", "migrate"), "cannot parse DSN 'nonsense'")


def test_unreachable_server_is_one_line_with_password_hidden() -> None:
    result = run("--dsn", "postgresql://u:hunter2@127.0.0.1:1/db", "migrate")
    assert_one_line_error(result, "cannot connect to postgresql://u:***@127.0.0.1:1/db")
    assert "hunter2" not in result.stderr


def test_bad_setting_in_environment_is_one_line() -> None:
    result = run("migrate", env={"PGQUEUE_CONCURRENCY": "lots", "PGQUEUE_DSN": "postgresql://x@127.0.0.1:1/y"})
    assert_one_line_error(result, "PGQUEUE_CONCURRENCY='lots': concurrency must be a whole number")


def test_bad_app_path_is_one_line(database_dsn) -> None:
    result = run("--app", "no_such_module:app", "--dsn", database_dsn, "migrate")
    assert_one_line_error(result, "cannot import module 'no_such_module'")
    result = run("--app", "os:path", "--dsn", database_dsn, "migrate")
    assert_one_line_error(result, "os:path (from --app) is of type module, not a pgqueue.App")


def test_no_dsn_uses_the_embedded_server_and_keeps_data(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    try:
        first = run("migrate", cwd=project)
        assert first.returncode == 0, first.stderr
        assert f"embedded PostgreSQL in {project / '.pgqueue'}" in first.stderr
        status = run("embedded", "status", cwd=project)
        assert status.stdout.startswith("running in"), status.stdout
        stop = run("embedded", "stop", cwd=project)
        assert "stopped the embedded PostgreSQL server" in stop.stdout
        assert run("embedded", "status", cwd=project).stdout.startswith("stopped; data in")
        # Started again on first use, with the schema still there.
        again = run("migrate", cwd=project)
        assert "is up to date" in again.stdout, again.stderr
    finally:
        run("embedded", "stop", cwd=project)


def test_read_only_commands_do_not_create_an_embedded_server(tmp_path) -> None:
    project = tmp_path / "empty"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "empty"\n')
    result = run("status", cwd=project)
    assert_one_line_error(result, "no database is configured")
    assert not (project / ".pgqueue").exists()


def test_unknown_pgqueue_variables_are_reported(database_dsn, schema_name) -> None:
    result = run("schema", env={"PGQUEUE_CONCURENCY": "5"})
    assert result.returncode == 0
    assert "ignoring PGQUEUE_CONCURENCY: not a pgqueue setting" in result.stderr
