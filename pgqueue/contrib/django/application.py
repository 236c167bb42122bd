"""The pgqueue App of a Django project: ``pgqueue.contrib.django.app``.

It is an ordinary :class:`pgqueue.App` whose settings come from Django's ``PGQUEUE_*``
settings (see ``conf``) and whose jobs live in the database ``PGQUEUE_DATABASE_ALIAS``.
What differs:

* every job operation (enqueue, ``job.status()``, ``job.result()``'s reads, cancel) runs on
  **Django's connection** of that alias, so it takes part in the caller's transaction: inside
  ``transaction.atomic()`` a job commits or rolls back with the view's data, savepoints
  included, and a ``TestCase`` sees its own jobs. ``conn=`` may name another alias, or pass
  another connection;
* an enqueue with a ``key`` inside ``atomic()`` runs in a savepoint of its own: whatever the
  database says about the key, the caller's transaction stays usable;
* the task registry also resolves ``django.tasks`` tasks by their module path, so the same
  worker runs both kinds.

Creating it, and decorating tasks, touches no database and reads no Django setting; the
settings are read when first needed (and again after ``override_settings``).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from ... import errors
from ...app import App
from ...settings import Settings
from ...store import JobStore, Operation, T, drive
from . import dbconn
from .errors import DjangoNotReady

if TYPE_CHECKING:
    from .conf import DjangoConfig

NOT_READY = (
    "pgqueue's Django app is not ready: the database was used before Django loaded its apps. "
    "Add 'pgqueue.contrib.django' to INSTALLED_APPS, and enqueue from views, commands or tasks, "
    "not while modules are being imported"
)


def _apps_ready() -> bool:
    from django.apps import apps

    return apps.ready


class DjangoStore(JobStore):
    """Job operations on Django's connection (see the module docstring)."""

    _app: "DjangoApp"

    def _django_connection(self, conn: Any) -> Any:
        if conn is None:
            conn = self._app.database_alias
        if isinstance(conn, str):
            return dbconn.connection_for(conn)
        if dbconn.is_django_connection(conn):
            return conn
        return None

    def run(self, operation: Operation[T], *, conn: Any = None) -> T:
        if not _apps_ready():
            operation.close()
            raise DjangoNotReady(NOT_READY)
        connection = self._django_connection(conn)
        if connection is None:  # a psycopg or SQLAlchemy connection of the caller's
            return super().run(operation, conn=conn)
        return drive(operation, dbconn.DjangoFetch(connection, self._app.settings.schema))

    def enqueue(self, params: dict[str, Any], *, conn: Any = None) -> tuple[int, bool]:
        connection = self._django_connection(conn) if _apps_ready() else None
        if params["key"] is not None and connection is not None and connection.in_atomic_block:
            from django.db import transaction

            # A savepoint: under REPEATABLE READ a key held by a transaction that committed
            # after ours began is a serialization failure; it must not abort the caller's.
            with transaction.atomic(using=connection.alias):
                return super().enqueue(params, conn=connection)
        return super().enqueue(params, conn=connection if connection is not None else conn)


class TaskRegistry(dict):
    """``app.tasks``: the App's tasks by name, and ``django.tasks`` tasks by module path,
    adapted on first lookup (the worker needs no list of them)."""

    def __init__(self, app: "DjangoApp") -> None:
        super().__init__()
        self._app = app

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default

    def __missing__(self, name: str) -> Any:
        from .runtime import resolve_django_task

        found = resolve_django_task(self._app, name)
        if found is None:
            raise KeyError(name)
        return found


class DjangoApp(App):
    """``pgqueue.contrib.django.app`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks = TaskRegistry(self)
        self.store = DjangoStore(self)
        self._config: DjangoConfig | None = None
        self._config_lock = threading.RLock()
        self._django_settings: Settings | None = None
        from .runtime import FinishedSignals, job_scope

        self.finished_signals = FinishedSignals()
        self.finished_signals.app = self
        self.hooks.around_job(job_scope)
        self.hooks.on_worker_event(self.finished_signals.on_worker_event)

    def __repr__(self) -> str:
        return f"<pgqueue.contrib.django.app tasks={dict.__len__(self.tasks)}>"

    # ------------------------------------------------------------ settings

    @property
    def config(self) -> "DjangoConfig":
        """The ``PGQUEUE_*`` Django settings, read once (and again after they change)."""
        config = self._config
        if config is None:
            with self._config_lock:
                if self._config is None:
                    from . import conf

                    self._config = conf.load()
                    self._django_settings = self._config.settings
                config = self._config
        return config

    @property  # type: ignore[override]
    def settings(self) -> Settings:
        if self._django_settings is None:
            self.config  # noqa: B018 - loads them
        assert self._django_settings is not None
        return self._django_settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        # App.__init__ assigns the environment's settings: Django's replace them when read.
        if getattr(self, "_config_lock", None) is None:
            return
        self._django_settings = value

    @property
    def database_alias(self) -> str:
        return self.config.database_alias

    def reload_settings(self) -> None:
        """Forget the settings read so far (``override_settings`` of PGQUEUE_* or DATABASES)."""
        with self._config_lock:
            self.close()
            self._config = None
            self._django_settings = None

    # ------------------------------------------------------------ database

    @property
    def database(self) -> Any:
        """The App's own pool (job.result() waiters, operator functions), connected with the
        credentials of ``DATABASES[PGQUEUE_DATABASE_ALIAS]``."""
        if self._database is None:
            if not _apps_ready():
                raise DjangoNotReady(NOT_READY)
            settings = self.settings
            if settings.dsn is None:
                alias = self.database_alias
                dsn = dbconn.worker_dsn(alias)
                self.settings = dataclasses.replace(
                    settings, dsn=dsn, sources={**settings.sources, "dsn": f"DATABASES[{alias!r}]"})
        return App.database.fget(self)  # type: ignore[attr-defined]

    def _register(self, func: Any, **options: Any) -> Any:
        import asyncio

        if asyncio.iscoroutinefunction(func):
            from .runtime import with_async_hygiene

            func = with_async_hygiene(func)
        return super()._register(func, **options)

    def migrate(self) -> tuple[str | None, str | None]:
        raise errors.ConfigurationError(
            "in a Django project pgqueue's schema is created and upgraded by `manage.py migrate`")
