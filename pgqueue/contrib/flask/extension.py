"""``PgQueue``: the Flask extension object, its per-app state and its configuration.

One ``PgQueue`` serves any number of Flask apps (the factory pattern, or two apps with two
databases in one process). Each Flask app gets its own :class:`pgqueue.App`, stored with
the rest of its state in ``app.extensions["pgqueue"]``; the extension object keeps no app.
Tasks declared with ``@pgq.task`` (before any app exists, typically) are registered on the
``pgqueue.App`` of every Flask app the extension is initialised on, under one name; calling
``.enqueue()`` uses the app of ``current_app``.

Configuration, read by ``init_app`` from ``app.config``:

* every pgqueue setting as ``PGQUEUE_<NAME>`` (``PGQUEUE_DSN``, ``PGQUEUE_SCHEMA``,
  ``PGQUEUE_QUEUES``, ``PGQUEUE_CONCURRENCY``, ...; see ``pgqueue.settings``): a key set in
  ``app.config`` wins over the environment variable of the same name, which still applies
  when the key is absent (then ``[tool.pgqueue]``, then the defaults: with no DSN anywhere,
  ``DATABASE_URL``, then the embedded server, as for any App);
* ``PGQUEUE_USE_SQLALCHEMY`` (default False): take the database of Flask-SQLAlchemy
  (``SQLALCHEMY_DATABASE_URI``, or ``SQLALCHEMY_BINDS[PGQUEUE_SQLALCHEMY_BIND]``);
* ``PGQUEUE_EAGER`` (default False): tasks run as soon as their job is committed, inside the
  enqueue call (or the session's commit), through ``pgqueue.testing.run_pending``: for tests
  (see ``eager``). Read at each enqueue, so a test may switch it.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ... import errors
from ...app import App, _default_task_name
from ...settings import Settings
from . import eager
from .tasks import FlaskTask

if TYPE_CHECKING:
    import flask

EXTENSION_KEY = "pgqueue"
CONFIG_PREFIX = "PGQUEUE_"
_OWN_KEYS = {"PGQUEUE_USE_SQLALCHEMY": False, "PGQUEUE_SQLALCHEMY_BIND": None, "PGQUEUE_EAGER": False}
_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "sources")


@dataclasses.dataclass
class AppState:
    """What ``app.extensions["pgqueue"]`` holds for one Flask app."""

    extension: "PgQueue"
    app: App
    #: One eager drain at a time per app (a task that enqueues joins the running one).
    draining: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class PgQueue:
    """The Flask extension: ``pgq = PgQueue(app)``, or ``pgq = PgQueue()`` then
    ``pgq.init_app(app)`` in the app factory."""

    def __init__(self, app: "flask.Flask | None" = None) -> None:
        self._tasks: dict[str, FlaskTask] = {}
        self._apps: "weakref.WeakSet[flask.Flask]" = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<pgqueue.contrib.flask.PgQueue tasks={len(self._tasks)}>"

    # --------------------------------------------------------------- set-up

    def init_app(self, app: "flask.Flask") -> None:
        """Make ``app``'s pgqueue App from its config, register every task on it, run its
        tasks inside ``app.app_context()``, and add the ``flask pgqueue`` commands."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "pgqueue is already initialised on this Flask app: init_app() runs once per app "
                "(import and use the PgQueue instance that did it)")
        for key, default in _OWN_KEYS.items():
            app.config.setdefault(key, default)
        queue_app = App(**_settings_from_config(app.config))
        state = AppState(self, queue_app)
        for task in self._tasks.values():
            task._register_on(queue_app)
        app_ref = weakref.ref(app)

        def app_context(_job: Any) -> Any:
            flask_app = app_ref()
            return flask_app.app_context() if flask_app is not None else None

        queue_app.hooks.around_job(app_context)
        app.extensions[EXTENSION_KEY] = state
        app.teardown_appcontext(eager.at_teardown)
        from .cli import pgqueue_group

        app.cli.add_command(pgqueue_group)
        self._apps.add(app)

    def task(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``@pgq.task`` or ``@pgq.task(name=..., queue=..., priority=..., max_attempts=...,
        retry_backoff=..., timeout=..., no_retry=(...))``: works before any app exists."""
        if func is None:
            return lambda f: self.task(f, **options)
        if not callable(func):
            raise errors.ConfigurationError(f"@pgq.task decorates a function, not {func!r}")
        name = options.pop("name", None) or _default_task_name(func)
        if name in self._tasks:
            raise errors.ConfigurationError(
                f"two tasks are named {name!r} ({self._tasks[name].func!r} and {func!r}): give one "
                "of them @pgq.task(name=...)")
        task = FlaskTask(self, func, name, options)
        self._tasks[name] = task
        for app in list(self._apps):
            task._register_on(app.extensions[EXTENSION_KEY].app)
        return task

    # -------------------------------------------------------------- lookups

    def state(self, app: "flask.Flask | None" = None) -> AppState:
        """The state of ``app`` (default: ``current_app``), or a clear error."""
        if app is None:
            from flask import current_app, has_app_context

            if not has_app_context():
                raise errors.ConfigurationError(
                    "pgqueue's Flask extension needs an app context to know which app's queue to "
                    "use: enqueue inside a request, a CLI command or `with app.app_context():`, "
                    "or use task.bound(app)")
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions.get(EXTENSION_KEY)
        if state is None or state.extension is not self:
            raise errors.ConfigurationError(
                f"this PgQueue is not initialised on the Flask app {app.name!r}: call "
                "pgq.init_app(app) in the app factory")
        return state

    def get_app(self, app: "flask.Flask | None" = None) -> App:
        """The :class:`pgqueue.App` of ``app`` (default: ``current_app``): its ``job(id)``,
        ``migrate()``, ``database``, ``hooks``..."""
        return self.state(app).app

    def job(self, id: int) -> Any:
        """A handle on job ``id`` of the current app's queue."""
        return self.get_app().job(id)

    def enqueue_many(self, task: FlaskTask, calls: Iterable[Any], **options: Any) -> list[Any]:
        """``app.enqueue_many`` on the current app's queue (eager mode honoured)."""
        return task.options(**options).enqueue_many(calls)

    async def aenqueue_many(self, task: FlaskTask, calls: Iterable[Any], **options: Any) -> list[Any]:
        return await task.options(**options).aenqueue_many(calls)

    def run_pending(self, app: "flask.Flask | None" = None, **options: Any) -> Any:
        """``pgqueue.testing.run_pending`` on ``app``'s queue (default: ``current_app``)."""
        from ...testing import run_pending

        return run_pending(self.get_app(app), **options)


def _settings_from_config(config: Any) -> dict[str, Any]:
    """The ``PGQUEUE_<NAME>`` keys of a Flask config, as App keywords."""
    settings = {name: config[CONFIG_PREFIX + name.upper()] for name in _SETTING_NAMES
                if config.get(CONFIG_PREFIX + name.upper()) is not None}
    if config.get("PGQUEUE_USE_SQLALCHEMY"):
        if settings.get("dsn"):
            raise errors.ConfigurationError(
                "PGQUEUE_DSN and PGQUEUE_USE_SQLALCHEMY are both set: keep one (the second takes "
                "Flask-SQLAlchemy's database)")
        settings["dsn"] = _sqlalchemy_url(config, config.get("PGQUEUE_SQLALCHEMY_BIND"))
    return settings


def _sqlalchemy_url(config: Any, bind: str | None) -> str:
    """The URL of Flask-SQLAlchemy's database ``bind`` (None: the default one), as a DSN."""
    if bind is None:
        value = config.get("SQLALCHEMY_DATABASE_URI") or \
            (config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}).get("url")
        where = "SQLALCHEMY_DATABASE_URI"
    else:
        value = (config.get("SQLALCHEMY_BINDS") or {}).get(bind)
        if isinstance(value, dict):
            value = value.get("url")
        where = f"SQLALCHEMY_BINDS[{bind!r}]"
    if not value:
        raise errors.ConfigurationError(
            f"PGQUEUE_USE_SQLALCHEMY is set but {where} is not: configure Flask-SQLAlchemy's "
            "database before calling pgq.init_app(app), or set PGQUEUE_DSN")
    from sqlalchemy.engine import make_url

    url = make_url(value)
    if url.get_backend_name() != "postgresql":
        raise errors.ConfigurationError(
            f"PGQUEUE_USE_SQLALCHEMY: {where} is a {url.get_backend_name()} database; pgqueue "
            "needs PostgreSQL (set PGQUEUE_DSN to one)")
    return url.render_as_string(hide_password=False)
