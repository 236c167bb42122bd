"""Running pgqueue's statements on a Django connection, and the worker's DSN from Django's.

Statements go through Django's own cursor (``connections[alias].cursor()``), on psycopg 3
or psycopg 2 alike: they join whatever ``transaction.atomic()`` block is open (a savepoint
rollback drops the job with the rest), show up in Django's query log and pass through its
``execute_wrapper`` hooks. pgqueue's SQL sends JSON as text and casts it (``::jsonb``);
Django loads ``jsonb`` columns as text on both drivers, so JSON columns are decoded here.

The worker cannot use Django's connections (it needs psycopg 3, LISTEN and connections of
its own): :func:`worker_dsn` builds a libpq connection string from the same ``DATABASES``
entry, through Django's own ``get_connection_params()``.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Mapping

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.utils import ConnectionDoesNotExist

from ... import db, errors

logger = logging.getLogger(__name__)

_JSON_TYPES = {114, 3802}  # json, jsonb
# Keys of get_connection_params() that are Django's or the driver's, not libpq's.
_DRIVER_KEYS = {"cursor_factory", "context", "prepare_threshold", "connection_factory"}


def connection_for(alias: str) -> Any:
    """Django's connection for ``alias``, checked: it exists and is PostgreSQL."""
    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:
        known = ", ".join(sorted(connections.settings)) or "none"
        raise errors.ConfigurationError(
            f"there is no database {alias!r} in settings.DATABASES (known: {known}): set "
            "PGQUEUE_DATABASE_ALIAS to the alias of the PostgreSQL database that holds pgqueue's "
            "tables") from None
    if connection.vendor != "postgresql":
        raise errors.ConfigurationError(
            f"settings.DATABASES[{alias!r}] is a {connection.vendor} database: pgqueue needs "
            "PostgreSQL (ENGINE 'django.db.backends.postgresql'); point PGQUEUE_DATABASE_ALIAS at one")
    return connection


def is_django_connection(conn: Any) -> bool:
    return hasattr(conn, "ensure_connection") and hasattr(conn, "vendor") and hasattr(conn, "alias")


class DjangoFetch:
    """``fetch(query, params) -> rows`` on a Django connection (rows as dicts)."""

    def __init__(self, connection: Any, schema: str) -> None:
        if connection.vendor != "postgresql":
            raise errors.ConfigurationError(
                f"pgqueue needs a PostgreSQL connection; Django's connection {connection.alias!r} "
                f"is {connection.vendor!r}")
        self.connection = connection
        self.schema = schema

    def __call__(self, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(query, dict(params))
                description = cursor.description
                if description is None:
                    return []
                rows = cursor.fetchall()
        except DatabaseError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            translated = db.translate(cause, schema=self.schema)
            if translated is cause:
                raise
            raise translated from exc
        names = [column[0] for column in description]
        json_columns = [i for i, column in enumerate(description) if column[1] in _JSON_TYPES]
        result = []
        for row in rows:
            values = list(row)
            for i in json_columns:
                if isinstance(values[i], (str, bytes)):
                    values[i] = json.loads(values[i])
            result.append(dict(zip(names, values)))
        return result


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults())


def worker_dsn(alias: str) -> str:
    """A libpq connection string for ``DATABASES[alias]``, as Django itself would connect
    (NAME, USER, PASSWORD, HOST, PORT and the libpq keys of OPTIONS: sslmode, options, ...)."""
    from psycopg import conninfo

    connection = connection_for(alias)
    try:
        params = dict(connection.get_connection_params())
    except ImproperlyConfigured as exc:
        raise errors.ConfigurationError(f"settings.DATABASES[{alias!r}]: {exc}") from None
    keywords = _libpq_keywords()
    kept = {k: str(v) for k, v in params.items() if k in keywords and v is not None}
    ignored = sorted(set(params) - keywords - _DRIVER_KEYS)
    if ignored:
        logger.debug("worker connection: ignoring OPTIONS %s of DATABASES[%r] (not libpq settings)",
                     ", ".join(ignored), alias)
    return conninfo.make_conninfo(**kept)
