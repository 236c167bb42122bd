"""asyncio: the App's job operations on an async psycopg pool, and waiting for results.

``await task.aenqueue(...)``, ``await task.options(...).aenqueue(...)``,
``await app.aenqueue_many(...)``, ``await job.aresult()``, ``job.astatus()``,
``job.acancel()``, ``job.ainfo()`` delegate here. Nothing here defines a statement, an
argument check or a retry rule: enqueue's checks and parameters come from
``EnqueueOptions`` (``_call_params``, ``_many_params``, ``_around_enqueue``), and every
job operation is one of ``pgqueue.store``'s sans-I/O generators, driven here on an async
connection by :func:`adrive` exactly as ``store.drive`` drives it on a blocking one.

Connections:

* the App's **async pool** (``psycopg_pool.AsyncConnectionPool``, autocommit, at most
  ``pool_size`` connections), one per event loop (a pool belongs to the loop that opened
  it), opened on first use and closed by ``await app.aclose()``. No call takes a thread;
  the only blocking step, resolving the DSN (which may start the embedded server), runs
  once per App in a worker thread;
* ``conn=``, the caller's own async connection, inside its transaction (never committed or
  rolled back here): a psycopg ``AsyncConnection``, an SQLAlchemy ``AsyncConnection`` or
  ``AsyncSession`` on the ``postgresql+psycopg://`` driver. The job exists exactly when
  that transaction commits. (asyncpg is refused: its placeholders are not pgqueue's.)

Waiting: ``aresult()`` registers a waiter as ``result()`` does and sleeps on an
``asyncio.Event`` that the App's one LISTEN connection (``pgqueue.waiting``, shared with
blocking waiters) sets through ``call_soon_threadsafe``: a thousand awaits hold one LISTEN
connection between them, and pool connections only for their short statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from . import db, errors, store
from .jobs import Job
from .store import Operation, Rows, T
from .worker.connections import DIRECT_CHECK, reached_directly

if TYPE_CHECKING:
    from .app import App
    from .tasks import EnqueueOptions

AsyncFetch = Callable[[str, dict[str, Any]], Awaitable[Rows]]

# As job.result(): first look again after 50 ms, doubling up to 10 s (1 s when polling only).
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 10.0
_MAX_POLL_PAUSE = 1.0


async def adrive(operation: Operation[T], fetch: AsyncFetch) -> T:
    """Run a sans-I/O operation with ``await fetch(query, params) -> rows`` (``store.drive``'s
    async twin: the only one, six lines)."""
    try:
        query, params = next(operation)
        while True:
            query, params = operation.send(await fetch(query, params))
    except StopIteration as stop:
        return stop.value


# ------------------------------------------------------------------ the pool

class AsyncDatabase:
    """The App's async pool on one event loop (see the module docstring)."""

    def __init__(self, app: "App") -> None:
        self._app = app
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()
        self.dsn: str | None = None
        self.schema = app.settings.schema

    async def _open(self) -> psycopg_pool.AsyncConnectionPool:
        async with self._opening:
            if self._pool is not None:
                return self._pool
            app = self._app
            settings = app.settings
            if app._database is not None:
                dsn = app._database.dsn
            else:  # resolving may start the embedded server: not on the loop
                dsn = await asyncio.to_thread(lambda: app.database.dsn)
            timeout = max(2, math.ceil(settings.connect_timeout))
            try:
                # One direct connection first: it fails fast with the server's own reason,
                # where the pool would only report a timeout.
                probe = await psycopg.AsyncConnection.connect(db.normalise_dsn(dsn), autocommit=True,
                                                              connect_timeout=timeout)
            except psycopg.OperationalError as exc:
                raise errors.DatabaseUnavailable(
                    f"cannot connect to {db.mask_dsn(dsn)}: {db._one_line(exc)}") from exc
            await probe.close()
            prepared = settings.prepared_statements

            async def configure(conn: psycopg.AsyncConnection) -> None:
                cursor = await conn.execute(DIRECT_CHECK)
                direct = reached_directly(conn, await cursor.fetchone())
                for statement in db.session_setup(conn, direct, prepared):
                    await conn.execute(statement)

            pool = psycopg_pool.AsyncConnectionPool(
                db.normalise_dsn(dsn), min_size=1, max_size=settings.pool_size,
                kwargs={"autocommit": True, "connect_timeout": timeout},
                configure=configure, open=False, name=f"pgqueue-async-{settings.schema}")
            await pool.open(wait=True, timeout=settings.connect_timeout + 5)
            self.dsn, self._pool = dsn, pool
            return pool

    async def fetch(self, query: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run one statement on a pooled connection (its own transaction); the same retry
        rule and error translation as ``db.Database.fetch``."""
        pool = self._pool or await self._open()
        wait = self._app.settings.connect_timeout + 5
        for attempt in (1, 2):
            try:
                async with pool.connection(timeout=wait) as conn:
                    async with conn.cursor(row_factory=dict_row) as cur:
                        await cur.execute(query, params or {})
                        return await cur.fetchall() if cur.description else []
            except errors.PgQueueError:
                raise
            except psycopg_pool.PoolTimeout as exc:
                raise errors.DatabaseUnavailable(
                    f"no connection to {db.mask_dsn(self.dsn or '')} within {wait:.0f} s (server "
                    "down, or every pooled connection busy)") from exc
            except Exception as exc:
                if db.retry_on_fresh_connection(exc, attempt):
                    continue
                translated = db.translate(exc, schema=self.schema, dsn=self.dsn)
                if translated is exc:
                    raise
                raise translated from exc
        raise AssertionError("not reached")

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool | None:
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


class _AsyncSide:
    """What an App keeps for asyncio: its pool on each event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[asyncio.AbstractEventLoop, AsyncDatabase] = {}

    def database(self, app: "App") -> AsyncDatabase:
        loop = asyncio.get_running_loop()
        with self._lock:
            for other in [k for k in self._pools if k.is_closed()]:
                # A loop that ended without app.aclose(): its connections go with it.
                del self._pools[other]
            database = self._pools.get(loop)
            if database is None:
                database = self._pools[loop] = AsyncDatabase(app)
            return database

    def pop(self) -> AsyncDatabase | None:
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._pools.pop(loop, None)


def _side(app: "App") -> _AsyncSide:
    side = app.__dict__.get("_aio")
    if side is None:
        side = app.__dict__.setdefault("_aio", _AsyncSide())  # setdefault: one wins
    return side


def database(app: "App") -> AsyncDatabase:
    """The App's async pool on the running event loop (opened on first use)."""
    return _side(app).database(app)


async def aclose(app: "App") -> None:
    """Close the App's async pool on the running event loop (a FastAPI lifespan's end)."""
    database = _side(app).pop()
    if database is not None:
        await database.close()


# ------------------------------------------------------- the caller's conn

def _sqlalchemy_async(conn: Any) -> str | None:
    """'session' or 'connection' for SQLAlchemy's async objects, else None."""
    module = type(conn).__module__ or ""
    if not module.startswith("sqlalchemy.ext.asyncio"):
        return None
    if hasattr(conn, "sync_session"):
        return "session"
    if hasattr(conn, "sync_connection"):
        return "connection"
    return None


async def run_on(conn: Any, query: str, params: Mapping[str, Any]) -> Rows:
    """Run one statement on the caller's async connection, inside its transaction."""
    kind = _sqlalchemy_async(conn)
    if kind == "session":
        conn = await conn.connection()  # AsyncSession -> its AsyncConnection (same transaction)
        kind = "connection"
    if kind == "connection":
        driver = getattr(conn.dialect, "driver", None)
        if driver != "psycopg":
            raise errors.ConfigurationError(
                f"conn= is an SQLAlchemy async connection on the {driver!r} driver: pgqueue's "
                "statements need psycopg 3; create the engine with a postgresql+psycopg:// URL")
        result = await conn.exec_driver_sql(query, dict(params))
        return [dict(r) for r in result.mappings().all()] if result.returns_rows else []
    if isinstance(conn, psycopg.AsyncConnection):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall() if cur.description else []
    raise errors.ConfigurationError(
        f"conn= of an async enqueue must be an async connection (psycopg AsyncConnection, "
        f"SQLAlchemy AsyncConnection or AsyncSession), not {type(conn).__name__}: a blocking "
        "one would stall the event loop (use enqueue() with it)")


async def fetch_external(conn: Any, query: str, params: Mapping[str, Any], *, schema: str) -> Rows:
    """:func:`run_on` with pgqueue's error translation (SQLAlchemy's wrapper unwrapped)."""
    try:
        return await run_on(conn, query, params)
    except errors.PgQueueError:
        raise
    except Exception as exc:
        source = getattr(exc, "orig", None) or exc
        translated = db.translate(source, schema=schema)
        if translated is source:
            raise
        raise translated from exc


async def run(app: "App", operation: Operation[T], *, conn: Any = None) -> T:
    """``JobStore.run``, asynchronously: on the caller's ``conn`` or on the App's async pool."""
    if conn is not None:
        schema = app.settings.schema
        return await adrive(operation, lambda query, params: fetch_external(conn, query, params,
                                                                             schema=schema))
    return await adrive(operation, database(app).fetch)


# ---------------------------------------------------------------- enqueue

async def enqueue(options: "EnqueueOptions", args: Any, kwargs: Any) -> Job | None:
    """``EnqueueOptions.enqueue``, awaited (same checks, hooks and statement)."""
    app = options.task.app
    params = options._call_params(args, kwargs)
    with options._around_enqueue(params, 1) as call:
        job_id, created, replaced = await run(app, store.enqueue_op(app.queries, params), conn=options.conn)
        if call is not None:
            call.job_ids = [] if job_id is None else [job_id]
    if job_id is None:
        return None  # on_conflict='skip': the key is taken
    return Job(app, job_id, created=created, replaced=replaced)


async def enqueue_many(options: "EnqueueOptions", calls: Iterable[Any]) -> list[Job]:
    """``EnqueueOptions.enqueue_many``, awaited: one statement for every job."""
    app = options.task.app
    params = options._many_params(calls)
    with options._around_enqueue(params, params["count"]) as call:
        ids = await run(app, store.enqueue_many_op(app.queries, params), conn=options.conn)
        if call is not None:
            call.job_ids = ids
    return [Job(app, job_id) for job_id in ids]


# ------------------------------------------------------------------ jobs

async def info(job: Job) -> dict[str, Any]:
    return await run(job.app, store.info_op(job.app.queries, job.id))


async def status(job: Job) -> str:
    return await run(job.app, store.status_op(job.app.queries, job.id))


async def cancel(job: Job, reason: str) -> str:
    return await run(job.app, store.cancel_op(job.app.queries, job.id, reason))


class _LoopWake:
    """What the listener thread sets (``set()``) to wake one asyncio waiter on its loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:  # on the listener thread; raises once the loop is closed
        self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


async def result(job: Job, timeout: float | None = None) -> Any:
    """``job.result()``, awaited (see ``Job.aresult``)."""
    app = job.app
    queries = app.queries
    deadline = None if timeout is None else time.monotonic() + timeout

    async def remaining() -> float | None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise errors.ResultTimeout(
                f"job {job.id} did not finish within {timeout} s (it is {await status(job)}); "
                "call aresult() again to keep waiting")
        return left

    if not app.settings.listen:
        pause = _FIRST_PAUSE
        while True:
            finished, value = await run(app, store.outcome_op(queries, job.id))
            if finished:
                return value
            left = await remaining()
            await asyncio.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, _MAX_POLL_PAUSE)

    pool = database(app)
    waiters = app.result_waiters
    wake = _LoopWake(asyncio.get_running_loop())
    waiters.subscribe(job.id, wake, wait=False)
    try:
        generation = waiters.generation
        waiter = await adrive(store.wait_register_op(queries, job.id), pool.fetch)
        try:
            pause = _FIRST_PAUSE
            while True:
                wake.clear()
                if waiters.generation != generation:
                    # The listener (re)connected: after a crash restart our row is gone.
                    generation = waiters.generation
                    await adrive(store.wait_unregister_op(queries, waiter), pool.fetch)
                    waiter = await adrive(store.wait_register_op(queries, job.id), pool.fetch)
                finished, value = await run(app, store.outcome_op(queries, job.id))
                if finished:
                    return value
                left = await remaining()
                await wake.wait(pause if left is None else min(pause, left))
                pause = min(pause * 2, _MAX_PAUSE)
        finally:
            with contextlib.suppress(errors.PgQueueError):
                await adrive(store.wait_unregister_op(queries, waiter), pool.fetch)
    finally:
        waiters.unsubscribe(job.id, wake)
