"""What the examples' end-to-end tests share: a fresh database, and its URL as the examples
take it (DATABASE_URL)."""

from __future__ import annotations

import uuid
from typing import Iterator

import psycopg
import pytest
from psycopg import conninfo


@pytest.fixture
def example_db(database_dsn: str) -> Iterator:
    """make(): a fresh database for the example, dropped at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"pgq_example_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return conninfo.make_conninfo(database_dsn, dbname=name)

    yield make
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def example_url(dsn: str) -> str:
    """A DATABASE_URL for the examples: a URL both SQLAlchemy and libpq read (psycopg 2 is
    SQLAlchemy's default driver for it)."""
    from sqlalchemy.engine import URL

    info = conninfo.conninfo_to_dict(dsn)
    port = info.get("port")
    return URL.create("postgresql", username=info.get("user"), password=info.get("password"),
                      host=info.get("host"), port=int(port) if port else None,
                      database=info.get("dbname")).render_as_string(hide_password=False)
