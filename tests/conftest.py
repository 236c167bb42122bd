"""Test harness: a real PostgreSQL for every test, and an isolated schema per test.

The server, in this order:

1. ``PGQUEUE_TEST_DSN`` when set;
2. a PostgreSQL container through testcontainers when a Docker daemon answers;
3. pgqueue's embedded server (pgserver's binaries, or the machine's initdb/pg_ctl)
   in a temporary directory, stopped at the end of the session;
4. otherwise the session fails and says how to provide one. Tests never skip for
   want of a database.

Each test that asks for ``app`` gets a fresh schema (``t_<random>``), migrated
with ``app.migrate()`` and dropped afterwards, so tests are independent of order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

import pgqueue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-long", action="store_true", default=False,
                     help="run the chaos suites (-m chaos) in their long form (also PGQUEUE_CHAOS=long)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The long chaos runs last minutes: past the default per-test timeout, not past this one.
    if config.getoption("--chaos-long") or os.environ.get("PGQUEUE_CHAOS", "") == "long":
        for item in items:
            if item.get_closest_marker("chaos"):
                item.add_marker(pytest.mark.timeout(1500))


def _has_django_tasks() -> bool:
    """Django with its tasks framework (6.0+, or 5.2 with the django-tasks backport): what the
    Django integration tests need. (The core's dev extra installs a plain Django for the
    dashboard's mount test: that is not enough.)"""
    import importlib.util

    spec = importlib.util.find_spec("django")  # tests/django alone would be a namespace package
    if spec is None or spec.origin in (None, "namespace"):
        return False
    return (importlib.util.find_spec("django_tasks") is not None
            or importlib.util.find_spec("django.tasks") is not None)


# tests/django needs Django's tasks framework (Python >= 3.12): `pytest tests/django`, or
# .ci/django.sh, which builds its own virtualenvs.
collect_ignore = [] if _has_django_tasks() else ["django"]

HOW_TO_PROVIDE = (
    "pgqueue's tests need PostgreSQL and none could be had: set PGQUEUE_TEST_DSN to a server "
    "(e.g. postgresql://postgres@127.0.0.1:5432/postgres), start Docker for testcontainers, or "
    "install the embedded extra (pip install -e '.[dev,embedded]') or PostgreSQL's initdb/pg_ctl"
)


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers' dependency
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def database_dsn() -> Iterator[str]:
    """DSN of the test server (see the module docstring for the order)."""
    dsn = os.environ.get("PGQUEUE_TEST_DSN", "").strip()
    if dsn:
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            pytest.fail(f"PGQUEUE_TEST_DSN={dsn!r} does not answer: {exc}", pytrace=False)
        yield dsn
        return

    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return

    from pgqueue.embedded import EmbeddedServer, find_binaries, kill_server

    if not find_binaries():
        pytest.fail(HOW_TO_PROVIDE, pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix="pgqueue-test-"))
    server = EmbeddedServer(directory)
    try:
        yield server.ensure_running()
    except pgqueue.PgQueueError as exc:
        pytest.fail(f"{HOW_TO_PROVIDE}\n(the embedded server failed: {exc})", pytrace=False)
    finally:
        try:
            server.stop()
        except pgqueue.PgQueueError:
            kill_server(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def admin(database_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection for assertions and setup."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema_name(database_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        # Workers of a failed test may still hold connections: end them first.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"pgqueue-test-{name}",),
        )
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def make_app(database_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Build Apps on the test's schema (unmigrated until .migrate())."""
    for key in list(os.environ):
        if key.startswith("PGQUEUE_") and key != "PGQUEUE_TEST_DSN":
            monkeypatch.delenv(key)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    made: list[pgqueue.App] = []

    def make(**settings: object) -> pgqueue.App:
        settings.setdefault("dsn", database_dsn)
        settings.setdefault("schema", schema_name)
        app = pgqueue.App(**settings)  # type: ignore[arg-type]
        made.append(app)
        return app

    yield make
    for app in made:
        with contextlib.suppress(Exception):
            app.close()


@pytest.fixture
def app(make_app) -> pgqueue.App:
    """A migrated App on a fresh schema."""
    app = make_app()
    app.migrate()
    return app


def register_worker_tasks(app: pgqueue.App, admin: psycopg.Connection | None) -> pgqueue.App:
    """Register every task of tests/workerapp.py on ``app`` (same names and options) and
    create the executions table those tasks record into (unless ``admin`` is None: a second
    App on a schema that has it already)."""
    import workerapp

    for name, task in workerapp.app.tasks.items():
        config = task.config
        app.task(name=name, queue=config.queue, priority=config.priority,
                 max_attempts=config.max_attempts, retry_backoff=config.retry_backoff,
                 timeout=config.timeout, no_retry=config.no_retry, lock=config.lock,
                 lock_limit=config.lock_limit)(task.func)
    if admin is None:
        return app
    admin.execute(
        f'CREATE TABLE "{app.settings.schema}".executions (job_id bigint, attempt int, '
        "runner_id bigint, pid int, note text, at timestamptz DEFAULT clock_timestamp())"
    )
    return app


@pytest.fixture
def wapp(app: pgqueue.App, admin: psycopg.Connection) -> pgqueue.App:
    """The test's App with the worker tasks of tests/workerapp.py registered."""
    return register_worker_tasks(app, admin)


@pytest.fixture
def start_worker(database_dsn: str, schema_name: str, tmp_path: Path) -> Iterator:
    """Start real `pgqueue work` subprocesses; all are killed at teardown."""
    from helpers import Worker

    started: list[Worker] = []

    def start(*args: str, env: dict[str, str] | None = None, dsn: str | None = None,
              prefix: list[str] | None = None) -> Worker:
        worker = Worker(dsn or database_dsn, schema_name, tmp_path / f"worker-{len(started)}.log",
                        *args, env=env, prefix=prefix)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def private_server(tmp_path: Path, make_app) -> Iterator:
    """A PostgreSQL server of the test's own (embedded), which the test may stop and start,
    and a migrated App on it with the worker tasks: yields (server, dsn, app)."""
    from pgqueue.embedded import EmbeddedServer, find_binaries, kill_server

    assert find_binaries(), "this test needs PostgreSQL binaries: pip install -e '.[dev,embedded]'"
    server = EmbeddedServer(tmp_path / "private-server")
    dsn = server.ensure_running()
    try:
        app = make_app(dsn=dsn)
        app.migrate()
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_worker_tasks(app, conn)
        yield server, dsn, app
    finally:
        try:
            server.stop()
        except pgqueue.PgQueueError:
            kill_server(server.directory)
