"""``App``: the settings, the task registry and the way to the database."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, overload

from . import db, errors, migrations, sqlfiles
from .embedded import EmbeddedServer
from .hooks import Hooks
from .jobs import Job
from .schedules import Definition, Schedules
from .settings import Settings, project_root
from .store import JobStore
from .waiting import ResultWaiters
from .queues import QueueControls
from .tasks import EnqueueOptions, Task, TaskConfig, _validate_seconds, validate_max_attempts, \
    validate_lock, validate_lock_limit, validate_priority, validate_queue, validate_task_name

logger = logging.getLogger(__name__)


def resolve_database(settings: Settings, *, create: bool = True, start: bool = True,
                     anchor: Path | None = None) -> tuple[str, str]:
    """The DSN to use and a line saying where it comes from (shown once by every command).

    With no DSN configured, the embedded server under the project root (the folder of the
    nearest pyproject.toml above ``anchor``, the file that made the App, else the current
    folder): started unless ``start`` is false, and created unless ``create`` is false
    (read-only commands neither conjure up an empty database nor restart a stopped one).
    """
    if settings.dsn:
        db.check_dsn(settings.dsn, settings.source("dsn"))
        return settings.dsn, f"{db.mask_dsn(settings.dsn)} (from {settings.source('dsn')})"
    directory = project_root(anchor) / settings.embedded_dir
    server = EmbeddedServer(directory)
    status = server.status()
    if not create and not status["initialised"]:
        raise errors.ConfigurationError(
            f"no database is configured (PGQUEUE_DSN, DATABASE_URL, --dsn) and there is no embedded "
            f"server in {directory} yet: set one, or run `pgqueue migrate` to create the embedded one"
        )
    if not start and not status["running"]:
        raise errors.ConfigurationError(
            f"the embedded PostgreSQL server in {directory} is stopped: start it with "
            "`pgqueue embedded start` (this command only reads, so it does not start it)"
        )
    created = not status["initialised"]
    dsn = server.ensure_running()
    if created:
        logger.warning("created a new embedded PostgreSQL server in %s (no DSN is configured)", directory)
    return dsn, f"embedded PostgreSQL in {directory} ({db.mask_dsn(dsn)}; stop it with `pgqueue embedded stop`)"


def _caller_folder() -> Path | None:
    """The folder of the project file that called App() (a tasks.py, a settings module): the
    embedded server is found from there, so one project uses one database whatever the
    current folder. None (the current folder) when pgqueue itself, an installed package or
    an interactive session made the App."""
    frame = sys._getframe(2)
    filename = frame.f_code.co_filename
    if filename.startswith("<"):
        return None
    path = Path(filename).resolve()
    if _PACKAGE_DIR in path.parents or any(part in ("site-packages", "dist-packages")
                                            for part in path.parts):
        return None
    return path.parent


_PACKAGE_DIR = Path(__file__).resolve().parent


class App:
    """A pgqueue application: where jobs are stored and which tasks exist.

    ``App(dsn=None, *, schema=None, **settings)``: every setting of
    :class:`pgqueue.settings.Settings` is a keyword; unset ones come from
    ``PGQUEUE_*`` environment variables, then ``[tool.pgqueue]`` in pyproject.toml.
    Nothing connects until the database is first used.
    """

    def __init__(self, dsn: str | None = None, *, schema: str | None = None, **settings: Any) -> None:
        overrides = dict(settings)
        if dsn is not None:
            overrides["dsn"] = dsn
        if schema is not None:
            overrides["schema"] = schema
        self.settings = Settings.load(overrides)
        self.tasks: dict[str, Task[..., Any]] = {}
        self.store = JobStore(self)
        #: Pause, resume and limit queues (see ``pgqueue.queues``).
        self.queues = QueueControls(self)
        #: Callbacks around enqueue and each job run (see ``pgqueue.hooks``).
        self.hooks = Hooks()
        #: Cron schedules: the ones this code declares, and the operator's controls.
        self.schedules = Schedules(self)
        self._database: db.Database | None = None
        self._description: str | None = None
        self._lock = threading.Lock()
        self._waiters: ResultWaiters | None = None
        self._create_embedded = True
        self._start_embedded = True
        self._anchor = _caller_folder()

    def __repr__(self) -> str:
        return f"<pgqueue.App schema={self.settings.schema!r} tasks={len(self.tasks)}>"

    # ------------------------------------------------------------ configuration

    def configure(self, **overrides: Any) -> None:
        """Change settings (as arguments) before the database is first used (the CLI's options)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if not overrides:
            return
        with self._lock:
            if self._database is not None:
                raise errors.ConfigurationError("settings cannot change once the App has connected")
            self.settings = self.settings.replace(**overrides)

    def never_create_embedded(self) -> None:
        """With no DSN configured, use a running embedded server but never create or start one
        (read-only commands must not conjure up an empty database, nor restart a stopped one)."""
        self._create_embedded = False
        self._start_embedded = False

    @property
    def queries(self) -> sqlfiles.Queries:
        return sqlfiles.queries_for(self.settings.schema)

    @property
    def database(self) -> db.Database:
        """The App's connection pool (resolving the DSN, or starting the embedded server, once)."""
        if self._database is None:
            with self._lock:
                if self._database is None:
                    dsn, description = resolve_database(self.settings, create=self._create_embedded,
                                                        start=self._start_embedded,
                                                        anchor=self._anchor)
                    self._description = description
                    logger.debug("pgqueue database: %s, schema %r", description, self.settings.schema)
                    self._database = db.Database(
                        dsn,
                        schema=self.settings.schema,
                        pool_size=self.settings.pool_size,
                        connect_timeout=self.settings.connect_timeout,
                        prepared=self.settings.prepared_statements,
                    )
        return self._database

    @property
    def result_waiters(self) -> ResultWaiters:
        """The App's shared LISTEN connection for job.result() waiters (started on first use)."""
        with self._lock:
            if self._waiters is None:
                self._waiters = ResultWaiters(self)
            return self._waiters

    @property
    def database_description(self) -> str:
        self.database  # noqa: B018 - resolves it
        assert self._description is not None
        return self._description

    def close(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.close()
                self._database = None

    # -------------------------------------------------------------- schema

    def migrate(self) -> tuple[str | None, str | None]:
        """Create or upgrade the schema (same as ``pgqueue migrate``); safe to run concurrently."""
        return migrations.migrate(self.database.dsn, self.settings.schema,
                                  connect_timeout=self.settings.connect_timeout)

    def check_schema(self) -> str:
        """Raise SchemaNotMigrated unless the schema is at the revision this code needs."""
        with self.database.connection() as conn:
            return migrations.check_revision(conn, self.settings.schema)

    # ---------------------------------------------------------------- tasks

    @overload
    def task(self, func: Callable[..., Any], /) -> Task[..., Any]: ...

    @overload
    def task(self, *, name: str | None = None, queue: str = "default", priority: int = 0,
             max_attempts: int | None = None, retry_backoff: float | None = None,
             timeout: float | None = None,
             no_retry: Iterable[type[BaseException]] = (),
             lock: str | Callable[..., str | None] | None = None,
             lock_limit: int = 1) -> Callable[[Callable[..., Any]], Task[..., Any]]: ...

    def task(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a task: ``@app.task`` or ``@app.task(name=..., queue=..., priority=...,
        max_attempts=..., retry_backoff=..., timeout=..., no_retry=(ExcType, ...), lock=...,
        lock_limit=...)``. ``lock``: a lock key, or a function of the task's arguments that
        returns one (None: no lock); at most ``lock_limit`` jobs with one lock key run at once,
        cluster wide, in enqueue order."""
        if func is not None:
            return self._register(func, **options)
        return lambda f: self._register(f, **options)

    def _register(self, func: Callable[..., Any], *, name: str | None = None, queue: str = "default",
                  priority: int = 0, max_attempts: int | None = None,
                  retry_backoff: float | None = None, timeout: float | None = None,
                  no_retry: Iterable[type[BaseException]] = (),
                  lock: str | Callable[..., str | None] | None = None,
                  lock_limit: int = 1) -> Task[..., Any]:
        if not callable(func):
            raise errors.ConfigurationError(f"@app.task decorates a function, not {func!r}")
        name = validate_task_name(name or _default_task_name(func))
        validate_queue(queue)
        validate_priority(priority)
        if max_attempts is not None:
            validate_max_attempts(max_attempts)
        if retry_backoff is not None:
            _validate_seconds("retry_backoff", retry_backoff)
        if timeout is not None:
            _validate_seconds("timeout", timeout, allow_zero=False)
        if lock is not None:
            validate_lock(lock)
        validate_lock_limit(lock_limit)
        no_retry = tuple(no_retry)
        for kind in no_retry:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise errors.ConfigurationError(f"no_retry takes exception classes, not {kind!r}")
        if name in self.tasks:
            raise errors.ConfigurationError(
                f"two tasks are named {name!r} ({self.tasks[name].func!r} and {func!r}): "
                "give one of them @app.task(name=...)"
            )
        task: Task[..., Any] = Task(self, func, TaskConfig(
            name=name, queue=queue, priority=priority, max_attempts=max_attempts,
            retry_backoff=retry_backoff, timeout=timeout, no_retry=no_retry, lock=lock,
            lock_limit=lock_limit,
        ))
        self.tasks[name] = task
        return task

    # ------------------------------------------------------------- schedules

    def periodic(self, *, cron: str, id: str | None = None, timezone: str = "UTC",
                 args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
                 queue: str | None = None, priority: int | None = None, catch_up: str = "latest",
                 catch_up_within: Any = 3600.0,
                 overlap: str = "allow") -> Callable[[Task[..., Any]], Task[..., Any]]:
        """Run a task on a cron schedule, stacked above ``@app.task``::

            @app.periodic(cron="*/5 * * * *", id="digest", timezone="Europe/Berlin")
            @app.task
            def digest(): ...

        ``id`` names the schedule for good (default: the task's name; needed for each schedule
        when a task has several). ``catch_up`` after missed ticks: "skip", "latest" (the latest
        missed tick once, if within ``catch_up_within`` seconds, default an hour) or "all";
        ``overlap``: "allow", or "skip" while the schedule's previous job is queued or running.
        Checked here: a bad expression, time zone or option raises ConfigurationError."""
        options = dict(cron=cron, id=id, timezone=timezone, args=tuple(args), kwargs=kwargs,
                       queue=queue, priority=priority, catch_up=catch_up,
                       catch_up_within=catch_up_within, overlap=overlap)

        def decorate(task: Task[..., Any]) -> Task[..., Any]:
            self.schedules.add(task, **options)
            return task

        return decorate

    def schedule(self, task: Task[..., Any], *, cron: str, **options: Any) -> Definition:
        """``@app.periodic`` without a decorator: ``app.schedule(task, cron="0 3 * * *", ...)``."""
        return self.schedules.add(task, cron=cron, **options)

    def get_task(self, name: str) -> Task[..., Any]:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise errors.UnknownTask(f"no task named {name!r} is registered (known: {known})") from None

    # ---------------------------------------------------------------- jobs

    def job(self, id: int) -> Job:
        """A handle on an existing job (no query is made until a method is called)."""
        return Job(self, id)

    def enqueue_many(self, task: Task[..., Any], calls: Iterable[Any], **options: Any) -> list[Job]:
        """Enqueue one job per item of ``calls`` in a single statement.

        Each item is a tuple of positional arguments or a dict of keyword arguments.
        Options as for ``task.options()``: delay, run_at, priority, queue, max_attempts, conn.
        """
        if not isinstance(task, Task) or task.app is not self:
            raise errors.ConfigurationError(f"enqueue_many takes a task of this App, not {task!r}")
        return EnqueueOptions(task).options(**options).enqueue_many(calls)

    async def aenqueue_many(self, task: Task[..., Any], calls: Iterable[Any], **options: Any) -> list[Job]:
        """``enqueue_many`` for asyncio code (``conn=`` an async connection; see ``pgqueue.aio``)."""
        if not isinstance(task, Task) or task.app is not self:
            raise errors.ConfigurationError(f"aenqueue_many takes a task of this App, not {task!r}")
        return await EnqueueOptions(task).options(**options).aenqueue_many(calls)

    async def aclose(self) -> None:
        """Close the App's async pool of the running event loop (e.g. at the end of a
        FastAPI lifespan); ``close()`` closes the blocking one."""
        from . import aio

        await aio.aclose(self)


def _default_task_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "unknown"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if module == "__main__":
        # Run as `python -m pkg.mod`: the worker imports it as pkg.mod, so use that name.
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name.removesuffix(".__main__")
        else:
            logger.warning("task %s is defined in a script run directly; workers that import it "
                           "by module name will not find it: give it @app.task(name=...)", qualname)
    return f"{module}.{qualname}"
