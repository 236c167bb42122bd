"""Which driver Django's own connections use in the tests: psycopg 3 or psycopg 2.

Django's PostgreSQL backend takes psycopg 3 whenever it can import it, and pgqueue depends on
psycopg 3, so a project with pgqueue installed gets psycopg 3 unless psycopg cannot be
imported. To test Django on psycopg 2 anyway, ``select("psycopg2")`` imports Django's
backend modules while ``import psycopg`` fails, then gives psycopg back to pgqueue: Django's
connections are psycopg 2 connections, pgqueue's worker still uses psycopg 3.
"""

from __future__ import annotations

import sys


def select(driver: str) -> None:
    if driver == "psycopg":
        return
    if driver != "psycopg2":
        raise ValueError(f"PGQ_DJANGO_DRIVER must be psycopg or psycopg2, not {driver!r}")
    if "django.db.backends.postgresql.base" in sys.modules:
        from django.db.backends.postgresql import psycopg_any

        if psycopg_any.is_psycopg3:
            raise RuntimeError("Django's PostgreSQL backend was imported with psycopg 3 already")
        return
    saved = {name: module for name, module in sys.modules.items()
             if name == "psycopg" or name.startswith("psycopg.")}
    for name in saved:
        del sys.modules[name]
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # import psycopg -> ImportError
    try:
        import django.db.backends.postgresql.base  # noqa: F401
        import django.db.backends.postgresql.psycopg_any as psycopg_any
        import django.contrib.postgres.fields  # noqa: F401
    finally:
        del sys.modules["psycopg"]
        sys.modules.update(saved)
    assert not psycopg_any.is_psycopg3
