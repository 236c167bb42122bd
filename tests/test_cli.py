"""The command line: each command against a real server, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from helpers import wait_for
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


@pytest.mark.parametrize(("args", "fragment"), [
    (("work", "--concurrency", "lots"), "'lots' is not a valid integer (see 'pgqueue work --help')"),
    (("work", "--bogus"), "No such option '--bogus' (see 'pgqueue work --help')"),
    (("--bogus",), "No such option '--bogus' (see 'pgqueue --help')"),
    (("nosuch",), "No such command 'nosuch' (see 'pgqueue --help')"),
])
def test_a_bad_command_line_is_one_line(args, fragment) -> None:
    result = run(*args)
    assert_one_line_error(result, fragment)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


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


# ---------------------------------------------------------- what a new user hits

def write_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    (folder / "tasks.py").write_text(
        "import pgqueue\n\napp = pgqueue.App()\n\n\n@app.task\ndef add(a, b):\n    return a + b\n")
    return folder


@pytest.mark.parametrize("wrong", ["role", "database"])
def test_work_with_a_dsn_that_can_never_work_exits_at_once(tmp_path, database_dsn, wrong) -> None:
    project = write_project(tmp_path / "p")
    params = psycopg.conninfo.conninfo_to_dict(database_dsn)
    if wrong == "role":
        dsn = psycopg.conninfo.make_conninfo(database_dsn, user="nosuchrole")
        # A server that asks for a password does not say whether the role exists.
        fragment = ("the password for user 'nosuchrole' was refused" if params.get("password")
                    else "the role 'nosuchrole' does not exist")
    else:
        dsn = psycopg.conninfo.make_conninfo(database_dsn, dbname="no_such_database")
        fragment = "the database 'no_such_database' does not exist"
    started = time.monotonic()
    result = run("--app", "tasks:app", "--dsn", dsn, "work", cwd=project, timeout=60)
    assert time.monotonic() - started < 30
    assert_one_line_error(result, fragment)


def test_work_with_a_bad_password_exits_at_once(private_server, tmp_path) -> None:
    server, dsn, _app = private_server
    project = write_project(tmp_path / "p")
    wrong = dsn.replace(dsn.split("@")[0].rsplit(":", 1)[1], "not-the-password")
    result = run("--app", "tasks:app", "--dsn", wrong, "work", cwd=project, timeout=60)
    assert_one_line_error(result, "the password for user 'postgres' was refused")


def test_work_waits_for_a_server_that_is_down_and_says_so(tmp_path) -> None:
    project = write_project(tmp_path / "p")
    env = {k: v for k, v in os.environ.items() if not (k.startswith("PGQUEUE_") or k == "DATABASE_URL")}
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "--app", "tasks:app", "--dsn",
                                 "postgresql://postgres@127.0.0.1:1/test", "work"], cwd=project, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: log.read_text().count("waiting for the database") >= 2, timeout=30,
                     message="the worker to say twice that it waits for the database")
            assert proc.poll() is None, "a server that is down is waited for, not given up on"
            text = log.read_text()
            assert "still trying after" in text and "Traceback" not in text
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_app_as_a_file_path(tmp_path, database_dsn, schema_name) -> None:
    project = write_project(tmp_path / "p")
    env = {"PGQUEUE_DSN": database_dsn, "PGQUEUE_SCHEMA": schema_name}
    assert run("--app", "./tasks.py:app", "migrate", env=env, cwd=project).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("--app", str(project / "tasks.py") + ":app", "status", env=env, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert_one_line_error(run("--app", "./tasks.py:nope", "status", env=env, cwd=project),
                          "module 'tasks' has no attribute 'nope' (from --app ./tasks.py:nope); it defines app")
    assert_one_line_error(run("--app", "./missing.py:app", "status", env=env, cwd=project),
                          "there is no file")


def test_an_error_inside_the_apps_module_is_one_line(tmp_path, database_dsn) -> None:
    project = write_project(tmp_path / "p")
    (project / "broken.py").write_text("import pgqueue\napp = pgqueue.App()\nraise RuntimeError('boom')\n")
    result = run("--app", "broken:app", "--dsn", database_dsn, "status", cwd=project)
    assert_one_line_error(result, "importing 'broken' (from --app broken:app) raised RuntimeError at")


def test_read_only_commands_do_not_restart_a_stopped_embedded_server(tmp_path) -> None:
    project = write_project(tmp_path / "p")
    try:
        assert run("migrate", cwd=project).returncode == 0
        assert run("embedded", "stop", cwd=project).returncode == 0
        result = run("status", cwd=project)
        assert_one_line_error(result, "is stopped: start it with `pgqueue embedded start`")
        assert run("embedded", "status", cwd=project).stdout.startswith("stopped; data in")
    finally:
        run("embedded", "stop", cwd=project)


def test_the_embedded_server_is_found_from_the_apps_project_whatever_the_folder(tmp_path) -> None:
    project = write_project(tmp_path / "p")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(project)!r}); import tasks; "
            "from pgqueue.settings import project_root; print(project_root(tasks.app._anchor))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == str(project.resolve()), out.stderr


def test_a_task_name_without_its_module_gets_a_suggestion(tmp_path, database_dsn, schema_name) -> None:
    project = write_project(tmp_path / "p")
    env = {"PGQUEUE_DSN": database_dsn, "PGQUEUE_SCHEMA": schema_name}
    assert run("--app", "tasks:app", "migrate", env=env, cwd=project).returncode == 0
    code = "import tasks; tasks.add.enqueue(1, 2)"
    subprocess.run([sys.executable, "-c", code], cwd=project, env={**os.environ, **env}, check=True, timeout=60)
    result = run("jobs", "--task", "add", env=env, cwd=project)
    assert_one_line_error(result, "no task named 'add'; did you mean 'tasks.add'?")
    assert run("jobs", "--task", "tasks.add", env=env, cwd=project).returncode == 0


def test_delay_takes_a_timedelta(app) -> None:
    import datetime as dt

    task = app.task(name="t")(lambda: None)
    before = app.database.fetch("SELECT now() AS now")[0]["now"]
    run_at = task.options(delay=dt.timedelta(minutes=5)).enqueue().info()["run_at"]
    assert dt.timedelta(minutes=4) < run_at - before < dt.timedelta(minutes=6)
