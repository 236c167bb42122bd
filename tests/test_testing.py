"""pgqueue.testing.run_pending: the jobs a test enqueued, run in-process through the worker's
code, fenced and with history."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import pgqueue
from helpers import events
from pgqueue.testing import DrainTimeout, run_pending


def test_run_pending_runs_jobs_and_the_jobs_they_enqueue(app, admin) -> None:
    ran_on: list[str] = []

    @app.task(name="child")
    def child(n: int) -> int:
        ran_on.append(threading.current_thread().name)
        return n * 10

    @app.task(name="parent")
    def parent(n: int) -> int:
        child.enqueue(n)
        return n

    @app.task(name="async_one")
    async def async_one() -> str:
        await asyncio.sleep(0)
        return "async"

    first, second = parent.enqueue(1), parent.enqueue(2)
    third = async_one.options(priority=10).enqueue()
    ran = run_pending(app)
    assert (ran.claimed, ran.succeeded, ran.failed, ran.retried) == (5, 5, 0, 0), ran
    assert ran.jobs[:3] == [third, first, second], "priority first, then enqueue order"
    assert [j.result(timeout=1) for j in ran.jobs] == ["async", 1, 2, 10, 20]
    assert all(name != threading.current_thread().name for name in ran_on), \
        "tasks run on the runner's threads, as in a worker"
    schema = app.settings.schema
    history = events(admin, schema, first.id)
    assert [(e[0], e[1], e[3]) for e in history] == [
        (None, "queued", None), ("queued", "running", ran.runner_id),
        ("running", "succeeded", ran.runner_id)], history
    state = admin.execute(f'SELECT state FROM "{schema}".runners WHERE id = %s', (ran.runner_id,)).fetchone()
    assert state == ("stopped",), "the drain's runner stops cleanly"
    again = run_pending(app)
    assert (again.claimed, again.jobs) == (0, []), "nothing left: nothing to do"


def test_failures_retries_and_scheduled_jobs(app) -> None:
    @app.task(name="boom", max_attempts=3, retry_backoff=60)
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name="later")
    def later() -> str:
        return "later"

    failing = boom.enqueue()
    delayed = later.options(delay=3600).enqueue()
    ran = run_pending(app)
    assert (ran.claimed, ran.retried, ran.failed) == (1, 1, 0), ran
    assert failing.status() == "queued" and delayed.status() == "queued", \
        "a retry's backoff and a delay are waited for, not skipped"
    ran = run_pending(app, with_scheduled=True)
    assert (ran.claimed, ran.retried, ran.failed, ran.succeeded) == (3, 1, 1, 1), ran
    with pytest.raises(pgqueue.JobFailed, match="ValueError: boom"):
        failing.result(timeout=1)
    assert delayed.result(timeout=1) == "later"
    assert failing.info()["attempts"] == 3


def test_queues_and_concurrency(app) -> None:
    running = threading.Semaphore(0)
    both = threading.Barrier(2, timeout=10)

    @app.task(name="pair")
    def pair() -> str:
        both.wait()  # two at once, or the barrier breaks
        return "ok"

    @app.task(name="other", queue="other")
    def other() -> None:
        running.release()

    jobs = [pair.enqueue(), pair.enqueue()]
    kept = other.enqueue()
    ran = run_pending(app, queues=["default"], concurrency=2)
    assert ran.succeeded == 2 and sorted(ran.jobs, key=lambda j: j.id) == jobs
    assert kept.status() == "queued", "a queue not served is left alone"
    assert run_pending(app, queues=["other"]).succeeded == 1


def test_a_hanging_task_times_out_and_is_handed_back(app) -> None:
    release = threading.Event()

    @app.task(name="hang", max_attempts=5)
    def hang() -> None:
        release.wait(20)

    job = hang.enqueue()
    started = time.monotonic()
    try:
        with pytest.raises(DrainTimeout, match="still running or runnable after 0.5 s"):
            run_pending(app, timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 15
    info = job.info()
    assert info["status"] == "queued", "what still ran went back to the queue"


def test_an_unmigrated_schema_is_reported(make_app) -> None:
    app = make_app()
    app.task(name="t")(lambda: None)
    with pytest.raises(pgqueue.SchemaNotMigrated):
        run_pending(app)
