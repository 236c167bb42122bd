"""Django migrations that apply pgqueue's SQL migrations (``sql/migrations/NNNN_slug.sql``),
one Django migration per SQL file, named like it.

Each wrapper is the same two lines (``migrations/0002_views.py``)::

    from pgqueue.contrib.django.migration_ops import sql_migration
    Migration = sql_migration(__name__)

:func:`sql_migration` finds the SQL file from the module's name and depends on the previous
one. Applying it, inside the migration's transaction and on Django's connection:

1. takes the same transaction-level advisory lock as ``pgqueue migrate`` (``meta_migrate_lock``
   with the schema's ``migrate`` key), so the two never run a migration at once;
2. reads the revision recorded in ``<schema>.alembic_version``; when the schema is there
   already (``pgqueue migrate`` ran first, or another process just did) it does nothing;
3. otherwise runs the SQL file rendered for ``PGQUEUE_SCHEMA`` and records the revision in
   ``alembic_version``, as alembic would: ``pgqueue work`` and ``pgqueue migrate`` continue
   from it.

Reverting (``manage.py migrate pgqueue 0002``) runs ``NNNN_slug.down.sql`` when the schema is
at that revision, and records the previous one. It only runs on the database
``PGQUEUE_DATABASE_ALIAS`` (and where routers allow the ``pgqueue`` app).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.db import migrations, router
from django.db.migrations.operations.base import Operation

from ... import sqlfiles

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)$")


def _find(revision: str) -> sqlfiles.Migration:
    return sqlfiles.migration(revision)


class ApplySQLMigration(Operation):
    """Apply (or revert) one SQL migration of pgqueue's, keeping ``alembic_version`` right."""

    reversible = True
    reduces_to_sql = False
    elidable = False

    def __init__(self, revision: str) -> None:
        self.revision = revision

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (f"{__name__}.{type(self).__qualname__}", [self.revision], {})

    def describe(self) -> str:
        m = _find(self.revision)
        return f"pgqueue schema migration {m.revision} (sql/migrations/{m.path.name})"

    @property
    def migration_name_fragment(self) -> str:
        return f"pgqueue_{self.revision}"

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # the schema's objects are no Django models

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any,
                          to_state: Any) -> None:
        self._run(schema_editor, forwards=True)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any,
                           to_state: Any) -> None:
        self._run(schema_editor, forwards=False)

    # ----------------------------------------------------------------------

    def _run(self, schema_editor: Any, *, forwards: bool) -> None:
        from psycopg import sql as pgsql

        from . import app
        from .queries import for_schema

        connection = schema_editor.connection
        if connection.alias != app.database_alias or connection.vendor != "postgresql" \
                or not router.allow_migrate(connection.alias, "pgqueue"):
            return
        schema = app.settings.schema
        core = sqlfiles.queries_for(schema)
        own = for_schema(schema)
        migration = _find(self.revision)
        number = migration.number
        previous = f"{number - 1:04d}" if number > 1 else None
        class_id, object_id = sqlfiles.advisory_key(schema, "migrate")
        with connection.cursor() as cursor:
            cursor.execute(core.meta_migrate_lock, {"class_id": class_id, "object_id": object_id})
            cursor.execute(own["django_version_table"], {"table": f'"{schema}".alembic_version'})
            current = None
            if cursor.fetchone()[0]:
                cursor.execute(core.meta_schema_revision, {})
                row = cursor.fetchone()
                current = row[0] if row else None
            if forwards:
                if current is not None and current >= self.revision:
                    logger.info("pgqueue schema %r is at revision %s already: %s has nothing to do",
                                schema, current, migration.path.name)
                    return
                if current != previous:
                    raise RuntimeError(
                        f"pgqueue schema {schema!r} is at revision {current or 'none'}, but "
                        f"{migration.path.name} follows revision {previous}: the schema and "
                        "Django's record of pgqueue's migrations disagree; run `manage.py "
                        "migrate pgqueue` from the start (`manage.py migrate pgqueue zero --fake`, "
                        "then `manage.py migrate pgqueue`), or `pgqueue migrate`")
                cursor.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                               .format(pgsql.Identifier(schema)).as_string(None))
                cursor.execute(migration.render(schema))
                cursor.execute(own["django_version_table_create"])
                cursor.execute(own["django_version_clear"])
                cursor.execute(own["django_version_set"], {"revision": self.revision})
            else:
                if current != self.revision:
                    return  # not at this revision: nothing of it to revert
                down = migration.path.with_name(migration.path.stem + ".down.sql")
                cursor.execute(sqlfiles.render(down.read_text(encoding="utf-8"), schema))
                cursor.execute(own["django_version_clear"])
                if previous is not None:
                    cursor.execute(own["django_version_set"], {"revision": previous})


def sql_migration(module_name: str, *, state_operations: tuple[Any, ...] = ()) -> type:
    """The Django ``Migration`` class of the wrapper module ``module_name`` (its ``__name__``)."""
    name = module_name.rsplit(".", 1)[-1]
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{module_name}: a pgqueue migration wrapper is named NNNN_slug, like its "
                         "SQL file in sql/migrations")
    revision = match.group(1)
    migration = _find(revision)
    if migration.slug != match.group(2):
        raise ValueError(f"{module_name}: the SQL migration {revision} is {migration.path.name}; "
                         f"name this file {migration.revision}_{migration.slug}.py")
    dependencies = []
    if migration.number > 1:
        before = sqlfiles.migrations()[migration.number - 2]
        dependencies.append(("pgqueue", f"{before.revision}_{before.slug}"))
    return type("Migration", (migrations.Migration,), {
        "__module__": module_name,
        "initial": migration.number == 1,
        "dependencies": dependencies,
        "operations": [ApplySQLMigration(revision), *state_operations],
    })
