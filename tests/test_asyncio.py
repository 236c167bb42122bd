"""asyncio: aenqueue, aresult and friends on the App's async pool, and on the caller's async
connections (psycopg AsyncConnection, SQLAlchemy AsyncConnection/AsyncSession).

Each test runs its coroutine with plain ``asyncio.run`` (no plugin): every test gets a loop
of its own, as a service would.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Callable

import psycopg
import pytest

import pgqueue
from helpers import wait_for


def _with_appname(dsn: str, name: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


class ConnectionSampler:
    """Counts, from a thread of its own, the server sessions whose application_name is
    ``name``, and keeps the largest count seen."""

    def __init__(self, dsn: str, name: str) -> None:
        self._dsn, self._name = dsn, name
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                (count,) = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                        (self._name,)).fetchone()
                self.peak = max(self.peak, count)
                self._stop.wait(0.01)

    def __enter__(self) -> "ConnectionSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class LoopLag:
    """A loop-lag probe: a coroutine that asks for 1 ms sleeps and records how late it wakes."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - before - 0.001)

    async def __aenter__(self) -> "LoopLag":
        self._task = asyncio.create_task(self._probe())
        await asyncio.sleep(0.01)
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


@pytest.fixture
def add(app: pgqueue.App) -> pgqueue.Task:
    return app.task(name="add")(lambda a, b=0: a + b)


def test_aenqueue_stores_the_same_row_as_enqueue(app, add, admin) -> None:
    async def main() -> None:
        first = await add.aenqueue(1, b=2)
        second = await add.options(priority=5, queue="q", meta={"m": 1}).aenqueue(3)
        keyed = await add.options(key="k").aenqueue(4)
        again = await add.options(key="k").aenqueue(5)
        assert keyed.created and not again.created and again.id == keyed.id
        assert await first.astatus() == "queued"
        info = await second.ainfo()
        assert (info["queue"], info["priority"], info["args"], info["meta"]) == ("q", 5, [3], {"m": 1})
        many = await app.aenqueue_many(add, [(i,) for i in range(3)], queue="bulk")
        assert [j.id for j in many] == sorted(j.id for j in many)
        await app.aclose()
        return first

    first = run(main)
    schema = app.settings.schema
    row = admin.execute(f'SELECT task, args, kwargs, status FROM "{schema}".jobs WHERE id = %s',
                        (first.id,)).fetchone()
    assert row == ("add", [1], {"b": 2}, "queued")
    (events,) = admin.execute(f'SELECT count(*) FROM "{schema}".job_events').fetchone()
    assert events == 6, "every enqueued job has its 'enqueued' event, as with enqueue()"


def test_aenqueue_checks_arguments_as_enqueue_does(app, add, admin) -> None:
    async def main() -> None:
        with pytest.raises(pgqueue.ArgumentNotSerializable):
            await add.aenqueue(object())
        with pytest.raises(pgqueue.InvalidArguments):
            await add.aenqueue(1, 2, 3)
        with pytest.raises(pgqueue.ConfigurationError, match="did you mean 'delay'"):
            await add.options(dealy=1).aenqueue(1)
        with pytest.raises(pgqueue.InvalidArguments, match="item 1"):
            await app.aenqueue_many(add, [(1,), 2])
        with pytest.raises(pgqueue.ConfigurationError, match="blocking one would stall"):
            with psycopg.connect(app.database.dsn) as blocking:
                await add.options(conn=blocking).aenqueue(1)
        await app.aclose()

    run(main)
    (count,) = admin.execute(f'SELECT count(*) FROM "{app.settings.schema}".jobs').fetchone()
    assert count == 0


def test_blocking_enqueue_refuses_an_async_connection(app, add, database_dsn) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_dsn) as conn:
            with pytest.raises(pgqueue.ConfigurationError, match="aenqueue"):
                add.options(conn=conn).enqueue(1)

    run(main)


def test_around_enqueue_hooks_wrap_aenqueue(app, add) -> None:
    seen: list[tuple[str, int, list[int]]] = []

    class Hook:
        def __init__(self, call: pgqueue.EnqueueCall) -> None:
            self.call = call

        def __enter__(self) -> None:
            self.call.meta["trace"] = "abc"

        def __exit__(self, *exc: object) -> None:
            seen.append((self.call.task, self.call.count, list(self.call.job_ids)))

    app.hooks.around_enqueue(Hook)

    async def main() -> None:
        job = await add.aenqueue(1)
        many = await app.aenqueue_many(add, [(1,), (2,)])
        assert (await job.ainfo())["meta"] == {"trace": "abc"}
        await app.aclose()
        return job, many

    job, many = run(main)
    assert seen == [("add", 1, [job.id]), ("add", 2, [j.id for j in many])]


def test_aenqueue_on_a_psycopg_async_connection_follows_its_transaction(app, add, admin,
                                                                         database_dsn) -> None:
    schema = app.settings.schema

    async def main() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(database_dsn) as conn:
            kept = await add.options(conn=conn).aenqueue(1)
            # Not committed: nobody else sees it.
            assert admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone() == (0,)
            await conn.commit()
            dropped = await add.options(conn=conn).aenqueue(2)
            many = await app.aenqueue_many(add, [(3,), (4,)], conn=conn)
            assert len(many) == 2
            await conn.rollback()
        return kept.id, dropped.id

    kept, dropped = run(main)
    rows = admin.execute(f'SELECT id FROM "{schema}".jobs').fetchall()
    assert rows == [(kept,)], f"only the committed job stays (rolled back: {dropped})"


def test_aenqueue_on_sqlalchemy_async_connection_and_session(app, add, admin, database_dsn) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

    schema = app.settings.schema
    engine = create_async_engine(database_dsn.replace("postgresql://", "postgresql+psycopg://"))

    async def main() -> dict[str, int]:
        ids = {}
        async with engine.connect() as conn:
            async with conn.begin():
                ids["conn_committed"] = (await add.options(conn=conn).aenqueue(1)).id
            transaction = await conn.begin()
            ids["conn_rolled_back"] = (await add.options(conn=conn).aenqueue(2)).id
            await transaction.rollback()
        sessions = async_sessionmaker(engine, class_=AsyncSession)
        async with sessions() as session:
            await session.execute(text(f'CREATE TABLE "{schema}".orders (id int)'))
            await session.execute(text(f'INSERT INTO "{schema}".orders VALUES (1)'))
            ids["session_committed"] = (await add.options(conn=session).aenqueue(3)).id
            await session.commit()
        async with sessions() as session:
            await session.execute(text(f'INSERT INTO "{schema}".orders VALUES (2)'))
            ids["session_rolled_back"] = (await add.options(conn=session).aenqueue(4)).id
            await session.rollback()
        async with sessions() as session:
            # Closed without commit: the session's transaction ends, and the job with it.
            ids["session_closed"] = (await add.options(conn=session).aenqueue(5)).id
        await engine.dispose()
        return ids

    ids = run(main)
    kept = {row[0] for row in admin.execute(f'SELECT id FROM "{schema}".jobs').fetchall()}
    assert kept == {ids["conn_committed"], ids["session_committed"]}, ids
    assert admin.execute(f'SELECT id FROM "{schema}".orders').fetchall() == [(1,)]


def test_astatus_acancel_and_aresult_without_a_worker(app, add, admin) -> None:
    schema = app.settings.schema

    async def main() -> None:
        job = await add.aenqueue(1)
        with pytest.raises(pgqueue.ResultTimeout, match=f"job {job.id} did not finish within 0.2 s "
                                                        r"\(it is queued\)"):
            await job.aresult(timeout=0.2)
        waiting = asyncio.create_task(job.aresult(timeout=30))
        await asyncio.to_thread(wait_for, lambda: admin.execute(
            f'SELECT count(*) FROM "{schema}".result_waiters').fetchone()[0] == 1,
            message="the waiter to register")
        assert await job.acancel() == "cancelled"
        with pytest.raises(pgqueue.JobCancelled):
            await waiting
        assert await job.acancel() == "cancelled", "cancelling twice is harmless"
        done = await add.aenqueue(2)
        admin.execute(f"""UPDATE "{schema}".jobs SET status = 'succeeded', result = '7' WHERE id = %s""",
                      (done.id,))
        assert await done.aresult(timeout=5) == 7
        with pytest.raises(pgqueue.JobStateError):
            await done.acancel()
        with pytest.raises(pgqueue.JobNotFound):
            await app.job(10**9).astatus()
        await app.aclose()

    run(main)
    assert admin.execute(f'SELECT count(*) FROM "{schema}".result_waiters').fetchone() == (0,), \
        "a waiter that stopped waiting must leave no row behind"


def test_aresult_polls_when_listen_is_off(make_app, admin) -> None:
    app = make_app(listen=False)
    app.migrate()
    add = app.task(name="add")(lambda a: a)

    async def main() -> None:
        job = await add.aenqueue(1)
        waiting = asyncio.create_task(job.aresult(timeout=30))
        await asyncio.sleep(0.1)
        admin.execute(f"""UPDATE "{app.settings.schema}".jobs SET status = 'failed',
                          error = '{{"type": "ValueError", "message": "boom"}}' WHERE id = %s""", (job.id,))
        with pytest.raises(pgqueue.JobFailed, match="boom"):
            await waiting
        await app.aclose()

    run(main)
    assert app._waiters is None, "with listen off nothing listens"


def test_thousand_concurrent_aenqueue_bounded_connections_and_no_loop_stall(make_app, database_dsn,
                                                                            admin) -> None:
    name = f"pgqueue-aio-{uuid.uuid4().hex[:8]}"
    app = make_app(dsn=_with_appname(database_dsn, name), pool_size=5)
    app.migrate()
    add = app.task(name="add")(lambda a: a)
    figures: dict[str, float] = {}

    async def main() -> None:
        await add.aenqueue(0)  # opens the pool
        async with LoopLag() as lag:
            for i in range(100):
                await add.aenqueue(i)
        figures["sequential_lag"] = lag.worst
        async with LoopLag() as lag:
            started = time.monotonic()
            jobs = await asyncio.gather(*(add.aenqueue(i) for i in range(1000)))
            figures["concurrent_seconds"] = time.monotonic() - started
        figures["concurrent_lag"] = lag.worst
        assert len({j.id for j in jobs}) == 1000
        # The control: one blocking enqueue() per iteration stalls the loop for its round trip.
        async with LoopLag() as lag:
            for i in range(20):
                add.enqueue(i)
                await asyncio.sleep(0)
        figures["blocking_lag"] = lag.worst
        await app.aclose()

    with ConnectionSampler(database_dsn, name) as sampler:
        run(main)
    figures["peak_connections"] = sampler.peak
    print(f"\nasyncio enqueue figures: {figures}")
    (count,) = admin.execute(f'SELECT count(*) FROM "{app.settings.schema}".jobs').fetchone()
    assert count == 1121
    assert sampler.peak <= 5 + 2, f"the async pool holds at most pool_size (5) connections: {figures}"
    assert figures["concurrent_seconds"] < 30, figures
    # An awaited enqueue never holds the loop for a round trip: the probe wakes on time
    # (a 2-core machine shared with the server: generous bounds).
    assert figures["sequential_lag"] < 0.05, figures
    assert figures["concurrent_lag"] < 0.5, figures


@pytest.mark.slow
def test_two_hundred_aresult_waiters_share_one_listen_connection(make_app, database_dsn, admin,
                                                                  start_worker) -> None:
    from conftest import register_worker_tasks

    name = f"pgqueue-aio-{uuid.uuid4().hex[:8]}"
    app = make_app(dsn=_with_appname(database_dsn, name), pool_size=4)
    app.migrate()
    register_worker_tasks(app, admin)
    add = app.tasks["add"]
    figures: dict[str, float] = {}

    async def main() -> list[int]:
        jobs = await app.aenqueue_many(add, [(i, i) for i in range(200)], delay=2)
        started = time.monotonic()
        waits = [asyncio.create_task(job.aresult(timeout=60)) for job in jobs]
        schema = app.settings.schema
        await asyncio.to_thread(wait_for, lambda: admin.execute(
            f'SELECT count(*) FROM "{schema}".result_waiters').fetchone()[0] == 200,
            timeout=30, message="the 200 waiters to register")
        start_worker()
        results = await asyncio.gather(*waits)
        figures["seconds"] = time.monotonic() - started
        await app.aclose()
        return results

    with ConnectionSampler(database_dsn, name) as sampler:
        results = run(main)
    figures["peak_connections"] = sampler.peak
    print(f"\nasyncio result figures: {figures}")
    assert results == [2 * i for i in range(200)]
    assert sampler.peak <= 4 + 1, \
        f"200 waiters hold at most pool_size (4) pool connections plus one LISTEN: {figures}"
    assert figures["seconds"] < 60, figures
