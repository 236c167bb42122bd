"""Running, in your own tests, the jobs a test enqueued: in-process, synchronously, on the
real database, through the worker's own code.

::

    from pgqueue.testing import run_pending

    def test_sign_up_sends_the_welcome_mail(client, app):
        client.post("/sign-up", data={"email": "a@example.com"})
        ran = run_pending(app)               # claims and runs until nothing is runnable
        assert ran.succeeded == 1 and ran.failed == 0
        assert ran.jobs[0].result() == "sent"

:func:`run_pending` starts a real runner (``pgqueue.worker.Runner``, the one ``pgqueue work``
runs) on a thread of this process: it registers, claims with the worker's claim statement,
runs each task on the runner's slots (sync tasks on its threads, ``async def`` on its loop,
your ``around_job`` hooks around each: a Flask app context, Django's connection hygiene),
writes each outcome fenced by (runner, attempt) through the completer, and every transition
leaves its row in ``job_events``, exactly as in production. It returns once no job of the
served queues is runnable now (queued, due, and in a queue that is not paused) and none is
held by its runner; so jobs that the tasks enqueue run too. Then the runner stops cleanly and
the call returns what ran.

Jobs scheduled for later (a ``delay``, the backoff before a retry) are left where they are,
unless ``with_scheduled=True``, which makes them runnable now, again and again until none is
left: a failing task then runs all its attempts (use it with care: a task that keeps
re-enqueueing itself only ends with the timeout).

Tasks run on other threads than the caller's: what a task writes is visible to the test only
once committed, as with a real worker, so the test must commit what the job needs to see (a
test that wraps everything in one rolled-back transaction cannot have a worker see its rows).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import psycopg
from psycopg.rows import dict_row

from . import db, errors
from .jobs import Job

if TYPE_CHECKING:
    from .app import App
    from .hooks import WorkerEvent


class DrainTimeout(errors.PgQueueError, TimeoutError):
    """run_pending() ran out of time with work left (a task still running, or jobs that keep
    coming): what still ran was handed back to the queue."""

    __module__ = "pgqueue.testing"


@dataclass(frozen=True)
class Drained:
    """What one :func:`run_pending` did: counts of attempts' outcomes, and the jobs attempted."""

    runner_id: int
    claimed: int
    succeeded: int
    retried: int
    failed: int
    cancelled: int
    fenced_out: int
    seconds: float
    #: The jobs its runner claimed, in the order of their first claim.
    jobs: list[Job] = field(default_factory=list)


def run_pending(app: "App", *, queues: Iterable[str] | None = None, concurrency: int = 1,
                with_scheduled: bool = False, timeout: float = 30.0) -> Drained:
    """Claim and run the jobs of ``queues`` (default: every queue) until none is runnable,
    in this process, through the worker's code (see the module docstring).

    ``concurrency``: jobs run at once (1 by default: in priority, run_at, id order, one after
    the other). ``timeout``: seconds before giving up with :class:`DrainTimeout`.
    """
    from .worker.runner import Runner

    served = tuple(queues) if queues is not None else None
    settings = app.settings.replace(concurrency=concurrency)
    # Every queue unless told (whatever the App's own queues setting says).
    settings = settings.replace(queues=served) if served else dataclasses.replace(settings, queues=None)
    runner = Runner(app, install_signals=False, settings=settings)
    queries = app.queries
    progress = threading.Event()
    failure: list[BaseException] = []

    def listen(event: "WorkerEvent") -> None:
        if event.name in ("outcomes_written", "claim"):
            progress.set()

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # reported by run_pending itself
            failure.append(exc)
        finally:
            runner.started.set()  # a runner that could not start wakes the caller too
            progress.set()

    started = time.monotonic()
    deadline = started + timeout
    app.hooks.on_worker_event(listen)
    thread = threading.Thread(target=run, name="pgqueue-testing-runner", daemon=True)
    thread.start()
    drained = False
    try:
        runner.started.wait(timeout)
        if failure:
            raise failure[0]
        if runner.runner_id is None:
            raise DrainTimeout(f"run_pending: the runner did not start within {timeout} s")
        runner_id = runner.runner_id
        with db.connect(app.database.dsn, connect_timeout=app.settings.connect_timeout) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            cursor = conn.cursor(row_factory=dict_row)

            def one(query: str, params: dict) -> dict:
                return cursor.execute(query, params).fetchone() or {}

            probe = {"queues": list(served) if served else None}
            while True:
                progress.clear()
                if failure:
                    raise failure[0]
                # Both questions in one snapshot: a job moving from queued to running between
                # two snapshots would be in neither.
                with conn.transaction():
                    busy = one(queries.testing_running, {"runner_id": runner_id})["running"] \
                        or one(queries.testing_runnable, probe)["work"]
                if not busy:
                    if not (with_scheduled and one(queries.testing_run_scheduled,
                                                   {"queues": probe["queues"]})["moved"]):
                        drained = True
                        break
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DrainTimeout(
                        f"run_pending: jobs were still running or runnable after {timeout} s; "
                        "what still ran was handed back to the queue (a task that hangs, or "
                        "one that keeps enqueueing more work?)")
                progress.wait(min(left, 0.05))  # woken by claims and outcomes; 50 ms at most
            attempted = [row["job_id"] for row in
                         cursor.execute(queries.testing_attempted, {"runner_id": runner_id})]
    finally:
        runner.request_stop(hand_back_now=not drained)
        thread.join(timeout=max(app.settings.shutdown_timeout, 10.0))
        app.hooks.worker_listeners.remove(listen)
    stats = runner.stats
    return Drained(runner_id, stats.claimed, stats.succeeded, stats.retried, stats.failed,
                   stats.cancelled, stats.fenced_out, time.monotonic() - started,
                   [Job(app, job_id) for job_id in attempted])
