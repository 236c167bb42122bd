"""The Django integration tests: a real project (settings.py, testapp), a database of their own
on the test server, real ``manage.py pgqueue work`` subprocesses.

Run them with ``pytest tests/django`` on Python 3.12+ with Django installed (``.ci/django.sh``
runs every supported Django). ``PGQ_DJANGO_DRIVER=psycopg2`` runs them with Django's own
connections on psycopg 2.

Django is set up when this file is imported (test modules import the test app's models);
the session fixture then creates a database on the server of ``database_dsn`` (see
tests/conftest.py), points ``DATABASES`` at it, and runs ``migrate``. Before each test,
pgqueue's tables and the test app's are emptied.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for path in (str(HERE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ["DJANGO_SETTINGS_MODULE"] = "settings"

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from psycopg import conninfo  # noqa: E402

from djhelpers import DjangoWorker, django_env  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def django_database(database_dsn: str) -> Iterator[str]:
    """A database of the session's own, migrated by ``manage.py migrate``; dropped at the end."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections
    from django.test.utils import setup_test_environment, teardown_test_environment

    name = f"pgqdj_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = conninfo.conninfo_to_dict(database_dsn)
    settings.DATABASES["default"].update(
        NAME=name, USER=parts.get("user", ""), PASSWORD=parts.get("password", ""),
        HOST=parts.get("host", ""), PORT=parts.get("port", ""))
    os.environ["PGQ_DJANGO_DSN"] = database_dsn
    os.environ["PGQ_DJANGO_DB"] = name
    setup_test_environment()
    call_command("migrate", verbosity=0)
    try:
        yield conninfo.make_conninfo(database_dsn, dbname=name)
    finally:
        teardown_test_environment()
        connections.close_all()
        from pgqueue.contrib.django import app

        app.close()
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def dsn(django_database: str) -> str:
    """DSN of the session's Django database."""
    return django_database


@pytest.fixture
def pg(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection of the test's own, for looking from outside Django."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(autouse=True)
def clean_tables(django_database: str) -> None:
    from pgqueue.contrib.django import app

    schema = app.settings.schema
    with psycopg.connect(django_database, autocommit=True) as conn:
        conn.execute(f'TRUNCATE "{schema}".jobs, "{schema}".job_events, "{schema}".runners, '
                     f'"{schema}".result_waiters, "{schema}".throughput, testapp_note, testapp_seen')


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    """Start real ``manage.py pgqueue work`` subprocesses; all are killed at teardown."""
    started: list[DjangoWorker] = []

    def start(*args: str, env: dict[str, str] | None = None) -> DjangoWorker:
        worker = DjangoWorker(tmp_path / f"worker-{len(started)}.log", *args, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


__all__ = ["django_env"]
