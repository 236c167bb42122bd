"""Tasks the worker tests run in real `pgqueue work` subprocesses.

The App reads PGQUEUE_DSN and PGQUEUE_SCHEMA from the environment the tests give
the worker. Tasks that record their executions write to "<schema>".executions, a
table the tests create, so duplicate executions are visible in SQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psycopg

import pgqueue

app = pgqueue.App()


def _record(note: str = "") -> None:
    job = pgqueue.current_job()
    assert job is not None
    schema = app.settings.schema
    with psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{schema}".executions (job_id, attempt, runner_id, pid, note) '
            "VALUES (%s, %s, %s, %s, %s)",
            (job.id, job.attempt, job.runner_id, os.getpid(), note),
        )


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="echo")
def echo(value: object) -> object:
    return value


@app.task(name="sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="async_sleep")
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="recorded_sleep")
def recorded_sleep(seconds: float) -> str:
    """Records its start, sleeps, records its end: executions show who ran what, and how often."""
    _record("start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _record("end")
    return f"slept {seconds}"


@app.task(name="fail", max_attempts=3, retry_backoff=0.2)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="flaky", max_attempts=5, retry_backoff=0.1)
def flaky(failures: int) -> int:
    """Fails its first `failures` attempts."""
    job = pgqueue.current_job()
    if job.attempt <= failures:
        raise RuntimeError(f"attempt {job.attempt} fails")
    return job.attempt


@app.task(name="retry_later", max_attempts=3)
def retry_later(delay: float) -> str:
    if pgqueue.current_job().attempt == 1:
        raise pgqueue.Retry(delay=delay)
    return "second time lucky"


@app.task(name="not_retryable", no_retry=(KeyError,), max_attempts=5)
def not_retryable() -> None:
    raise KeyError("missing")


@app.task(name="give_up", max_attempts=5)
def give_up() -> None:
    raise pgqueue.NoRetry("this input can never work")


@app.task(name="slow_sync", timeout=0.5, max_attempts=1)
def slow_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="slow_async", timeout=0.5, max_attempts=1)
async def slow_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="bad_result")
def bad_result() -> object:
    return {1, 2, 3}


@app.task(name="nul_result")
def nul_result() -> str:
    return "a\x00b"


@app.task(name="surrogate_result")
def surrogate_result() -> str:
    """Returns what os.listdir returns for a file name that is not valid UTF-8."""
    return "caf\udce9.txt"


@app.task(name="cancellable", max_attempts=1)
def cancellable(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pgqueue.current_job().cancel_requested:
            return "stopped early"
        time.sleep(0.02)
    return "finished"


@app.task(name="async_cancellable", max_attempts=1)
async def async_cancellable(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@app.task(name="logs")
def logs(message: str) -> None:
    import logging

    logging.getLogger("workerapp").warning("inside the task: %s", message)


@app.task(name="kill_self", max_attempts=5)
def kill_self() -> None:
    """A poison pill: it kills the worker process running it."""
    _record("killing")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="keyed_work", max_attempts=1)
def keyed_work(key: str, seconds: float = 0.0) -> str:
    """Records its start and end: the tests check from them that jobs of one lock key never
    overlap and keep their order."""
    _record(f"start {key}")
    if seconds:
        time.sleep(seconds)
    _record(f"end {key}")
    return key


@app.task(name="locked_work", max_attempts=3, lock=lambda key, seconds=0.0, first_attempt=0.0: f"lock:{key}")
def locked_work(key: str, seconds: float = 0.0, first_attempt: float = 0.0) -> str:
    """A task with a lock (a function of its arguments): at most one job per key runs at once.
    ``first_attempt``: how long its first attempt sleeps (a holder to SIGKILL)."""
    _record(f"start {key}")
    pause = first_attempt if pgqueue.current_job().attempt == 1 and first_attempt else seconds
    deadline = time.monotonic() + pause
    while time.monotonic() < deadline:
        time.sleep(0.01)
    _record(f"end {key}")
    return key


@app.task(name="fail_once", max_attempts=3, retry_backoff=0.1)
def fail_once(label: str, hold: float = 0.0) -> str:
    """Fails its first attempt (after holding for ``hold`` seconds), succeeds after."""
    _record(f"attempt {pgqueue.current_job().attempt}")
    if pgqueue.current_job().attempt == 1:
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("first attempt fails")
    return label


# ------------------------------------------------------------------ the chaos runs' tasks

def _ledger(note: str) -> None:
    """One row of the chaos ledger (tests/chaos_checker.py): who ran which attempt. Retried
    until written: a fault (a restart, a cut connection, a failover) must not fail the task, and
    the primary key makes a write whose reply was lost harmless to repeat. Its own application
    name keeps the fault injector's pg_terminate_backend off it."""
    job = pgqueue.current_job()
    deadline = time.monotonic() + 90
    while True:
        try:
            with psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True, connect_timeout=3,
                                 application_name="chaos-ledger") as conn:
                conn.execute(
                    f'INSERT INTO "{app.settings.schema}".ledger (job_id, attempt, runner_id, pid, note) '
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (job.id, job.attempt, job.runner_id, os.getpid(), note), prepare=False)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@app.task(name="chaos_work", max_attempts=3, retry_backoff=0.1)
def chaos_work(index: int, seconds: float, fail_first: bool = False) -> dict:
    """Records its start, works for ``seconds``, fails its first attempt when asked, records its
    end; the result names the attempt and runner, so the checker can tell whose outcome won."""
    job = pgqueue.current_job()
    _ledger("start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    if fail_first and job.attempt == 1:
        _ledger("fail")
        raise RuntimeError("the first attempt fails, as asked")
    _ledger("end")
    return {"index": index, "attempt": job.attempt, "runner": job.runner_id}


@app.task(name="chaos_fail", max_attempts=2, retry_backoff=0.1)
def chaos_fail(index: int) -> None:
    """Always fails: it must end failed after two failures, whatever the faults."""
    _ledger("start")
    raise RuntimeError(f"chaos job {index} always fails")
