"""System checks (``manage.py check``): the pgqueue settings, the database alias, psycopg 3,
and each ``PgQueueBackend``'s configuration. None of them queries the database."""

from __future__ import annotations

from typing import Any

from django.core import checks


def _database_messages(alias: str, obj: Any, prefix: str) -> list[checks.CheckMessage]:
    from django.conf import settings

    if alias not in settings.DATABASES:
        known = ", ".join(sorted(settings.DATABASES)) or "none"
        return [checks.Error(
            f"pgqueue's database alias {alias!r} is not in settings.DATABASES (known: {known})",
            hint="Set PGQUEUE_DATABASE_ALIAS to the alias of the PostgreSQL database that holds "
                 "pgqueue's tables.", obj=obj, id=f"{prefix}.E001")]
    engine = settings.DATABASES[alias].get("ENGINE", "")
    from django.db import connections

    if connections[alias].vendor != "postgresql":
        return [checks.Error(
            f"settings.DATABASES[{alias!r}] uses {engine!r}: pgqueue needs PostgreSQL",
            hint="Use ENGINE 'django.db.backends.postgresql' (or a backend built on it), or point "
                 "PGQUEUE_DATABASE_ALIAS at a PostgreSQL database.", obj=obj, id=f"{prefix}.E002")]
    return []


def _psycopg_messages(obj: Any, prefix: str) -> list[checks.CheckMessage]:
    try:
        import psycopg
        from psycopg import pq

        pq.version()
        del psycopg
    except Exception as exc:  # ImportError, or no libpq for the pure-Python psycopg
        return [checks.Error(
            f"pgqueue's worker needs psycopg 3, which cannot be loaded here: {exc}",
            hint='pip install "psycopg[binary]" (Django itself may keep using psycopg 2).',
            obj=obj, id=f"{prefix}.E003")]
    return []


@checks.register(checks.Tags.compatibility)
def check_pgqueue(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.core.exceptions import ImproperlyConfigured

    from . import app

    try:
        alias = app.config.database_alias
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="pgqueue.E000")]
    return _database_messages(alias, "PGQUEUE_DATABASE_ALIAS", "pgqueue") \
        + _psycopg_messages("pgqueue", "pgqueue")


def backend_messages(backend: Any) -> list[checks.CheckMessage]:
    """PgQueueBackend.check()."""
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    obj = f"TASKS[{backend.alias!r}]"
    messages: list[checks.CheckMessage] = []
    if not apps.is_installed("pgqueue.contrib.django"):
        messages.append(checks.Error(
            "PgQueueBackend needs the pgqueue app", hint="Add 'pgqueue.contrib.django' to "
            "INSTALLED_APPS (it brings the migrations and the worker command).", obj=obj,
            id="pgqueue.tasks.E005"))
        return messages
    unknown = sorted(set(backend.options) - set(backend.KNOWN_OPTIONS))
    if unknown:
        messages.append(checks.Error(
            f"unknown OPTIONS {', '.join(map(repr, unknown))} for PgQueueBackend",
            hint="pgqueue's settings are PGQUEUE_* settings (PGQUEUE_DATABASE_ALIAS, "
                 "PGQUEUE_MAX_ATTEMPTS, ...); per-task options go in @task(...) or "
                 "task.using_pgqueue(...).", obj=obj, id="pgqueue.tasks.E004"))
    from . import app

    try:
        alias = app.config.database_alias
    except ImproperlyConfigured as exc:
        return [*messages, checks.Error(str(exc), obj=obj, id="pgqueue.tasks.E000")]
    messages += _database_messages(alias, obj, "pgqueue.tasks")
    messages += _psycopg_messages(obj, "pgqueue.tasks")
    return messages
