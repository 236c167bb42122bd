"""The runner: one worker process's claim loop, executor, and lifecycle.

Threads of a runner, each with its own connection where it has one:

* main thread: the claim loop. It claims as many jobs as there are free slots, in one
  statement (``job_claim``), and sleeps on an event set by the listener (new work), by
  task threads (a slot freed), by the heartbeat (lease lost) and by signals; at the
  latest it wakes every ``poll_interval``;
* completer (``completer.py``): writes outcomes in batches, in parallel with claims;
* listener (``listener.py``), heartbeat (``heartbeat.py``), reaper (``reaper.py``);
* task threads (an elastic pool) and one asyncio loop thread (``executor.py``).

Invariants:

* A slot is held from claim until the attempt settles: it returns, raises, times out
  or is abandoned. A job settles once; what settles second is ignored.
* Every outcome is written fenced by (runner id, attempt): a write that matches no row
  is dropped and logged, never retried as if new.
* Claims stop when a stop is requested or the lease is lost. After losing its lease,
  the runner abandons the outcomes of attempts still running, lets the completer write
  the outcomes it already has (fenced), retires its old row (its running jobs go back to the queue as
  crashes) and registers again under a new id.
* After a clean stop nothing is left running: unfinished jobs are handed back to
  ``queued`` in the same statement that marks the runner stopped.

Failure modes: database errors never kill the loop. Outcomes wait in memory and are
written when the server is back (fencing decides whether they still apply); one line
is logged per outage. A sync task that outlives its timeout keeps its thread (Python
cannot stop threads) but gives its slot back; its eventual result is discarded.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errors, migrations
from ..context import JobContext, reset_current, set_current
from ..tasks import Task
from ..version import __version__
from . import outcomes
from .completer import Completer
from .connections import Backoff, OutageLog, ServiceConnection, is_connection_error
from .executor import AsyncLoop, ElasticThreadPool
from .heartbeat import Heartbeat
from .listener import Listener
from .reaper import Reaper, reap

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_HAND_BACK_FAILED = 1


@dataclass(eq=False)
class Running:
    job: outcomes.Claimed
    task: Task[..., Any] | None
    context: JobContext
    started: float
    deadline: float | None
    future: Any = None  # concurrent.futures.Future of an async task
    settled: bool = False
    abandoned: bool = False


@dataclass
class Stats:
    claims: int = 0  # claim statements run
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    fenced_out: int = 0
    timed_out: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Runner:
    """Runs jobs of ``app`` until stopped; ``run()`` returns the process exit code."""

    def __init__(self, app: "App", *, install_signals: bool = True) -> None:
        self.app = app
        self.settings = settings = app.settings
        self.queues = settings.queues
        self.concurrency = settings.concurrency
        self._install_signals = install_signals
        self._queries = app.queries
        dsn = app.database.dsn
        timeout = settings.connect_timeout
        self._outage = OutageLog()
        self._conn = ServiceConnection(dsn, "runner", timeout, generic_plans=True)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._active: dict[int, Running] = {}
        self._runner_id: int | None = None
        self._lost: tuple[int, str] | None = None
        self._notified = True  # claim once at start
        self._backlog = False
        self._next_poll = 0.0
        self._retry_at = 0.0
        self._backoff = Backoff()
        self._stop_requested = False
        self._hand_back_now = False
        self._drain_deadline: float | None = None
        self._stray_threads = 0
        self._retries_due: list[float] = []  # when this runner's retries become claimable
        self.stats = Stats()
        self.started = threading.Event()
        self._completer = Completer(
            connection=ServiceConnection(dsn, "completer", timeout, generic_plans=True),
            queries=self._queries, outage=self._outage, on_written=self._account,
        )
        self._pool = ElasticThreadPool()
        self._loop = AsyncLoop()
        self._listener = Listener(
            connection=ServiceConnection(dsn, "listener", timeout), schema=settings.schema,
            queues=self.queues, outage=self._outage, on_work=self.notify_work,
        ) if settings.listen else None
        self._heartbeat = Heartbeat(
            connection=ServiceConnection(dsn, "heartbeat", timeout), queries=self._queries,
            interval=settings.heartbeat_interval, dead_after=settings.runner_dead_after,
            outage=self._outage, on_lease_lost=self._lease_lost,
            on_cancel_requested=self._cancel_requested,
        )
        self._reaper = Reaper(
            connection=ServiceConnection(dsn, "reaper", timeout), queries=self._queries,
            interval=max(settings.heartbeat_interval / 2, 0.25), dead_after=settings.runner_dead_after,
            max_crashes=settings.max_crashes, outage=self._outage,
        )

    # ------------------------------------------------------------ public API

    @property
    def runner_id(self) -> int | None:
        return self._runner_id

    def notify_work(self) -> None:
        """New work may be claimable (a notification, or the listener reconnected)."""
        self._notified = True
        self._wake.set()

    def request_stop(self, *, hand_back_now: bool = False) -> None:
        with self._lock:
            if self._stop_requested:
                hand_back_now = True
            self._stop_requested = True
            self._hand_back_now = self._hand_back_now or hand_back_now
        self._wake.set()

    def run(self) -> int:
        """The claim loop; returns when stopped (exit code 0 after a clean stop)."""
        if self._install_signals:
            self._install_signal_handlers()
        self._start()
        try:
            while True:
                self._wake.clear()
                if self._stop_requested and self._drain_deadline is None:
                    self._begin_drain()
                if self._lost is not None:
                    self._recover_lease()
                self._expire_timeouts()
                if time.monotonic() >= self._retry_at:
                    self._claim()
                if self._stop_requested and self._drained():
                    break
                self._wake.wait(self._sleep_time())
        finally:
            code = self._shutdown()
        return code

    # --------------------------------------------------------------- startup

    def _start(self) -> None:
        with self.app.database.connection() as conn:
            migrations.check_revision(conn, self.settings.schema)
        self._register_with_retry()
        self._completer.start()
        self._heartbeat.start()
        self._reaper.start()
        if self._listener is not None:
            self._listener.start()
            # The first claim marks the runner waiting when the queue is empty; a NOTIFY sent
            # before LISTEN took effect would be lost, so listen first.
            self._listener.listening.wait(self.settings.connect_timeout)
        s = self.settings
        logger.info(
            "runner %s started: pgqueue %s, pid %s, host %s, database %s, schema %r, queues %s, "
            "concurrency %s, listen %s, poll every %s s, heartbeat every %s s, dead after %s s, "
            "shutdown timeout %s s",
            self._runner_id, __version__, os.getpid(), socket.gethostname(), self.app.database.display,
            s.schema,
            ",".join(self.queues) if self.queues else "all", self.concurrency,
            "on" if s.listen else "off (poll only)", s.poll_interval, s.heartbeat_interval,
            s.runner_dead_after, s.shutdown_timeout,
        )
        self.started.set()

    def _register(self) -> int:
        row = self._conn.get().execute(self._queries.runner_register, {
            "host": socket.gethostname(), "pid": os.getpid(),
            "queues": list(self.queues) if self.queues else None,
            "concurrency": self.concurrency, "version": __version__,
            "heartbeat_interval": self.settings.heartbeat_interval,
            "dead_after": self.settings.runner_dead_after,
        }).fetchone()
        runner_id = int(row[0])
        with self._lock:
            self._runner_id = runner_id
            self._notified = True
        self._heartbeat.follow(runner_id)
        return runner_id

    def _register_with_retry(self) -> None:
        backoff = Backoff()
        while True:
            try:
                self._register()
                self._outage.ok("runner")
                return
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._outage.failed("runner", exc)
                self._conn.discard()
                if self._stop_requested:
                    raise
                time.sleep(backoff.next())

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop_requested:
                logger.warning("received %s again: handing running jobs back now", name)
                self.request_stop(hand_back_now=True)
            else:
                logger.warning("received %s: no new jobs; letting %d running job(s) finish for up to "
                               "%s s (send it again to hand them back now)",
                               name, len(self._active), self.settings.shutdown_timeout)
                self.request_stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # ------------------------------------------------------------- the loop

    def _free_slots(self) -> int:
        held = sum(1 for r in self._active.values() if not r.settled)
        return max(self.concurrency - held, 0)

    def _claiming(self) -> bool:
        return self._runner_id is not None and not self._stop_requested and self._lost is None

    def _sleep_time(self) -> float:
        now = time.monotonic()
        wake_at = [self._next_poll, now + 1.0]
        with self._lock:
            if self._retries_due:
                wake_at.append(self._retries_due[0])
        if self._retry_at > now:
            wake_at.append(self._retry_at)
        if self._drain_deadline is not None:
            wake_at.append(self._drain_deadline)
        with self._lock:
            wake_at.extend(r.deadline for r in self._active.values() if r.deadline is not None)
        return max(min(wake_at) - now, 0.0)

    def _claim(self) -> None:
        """Claim into the free slots when work may be there: one statement."""
        now = time.monotonic()
        with self._lock:
            while self._retries_due and self._retries_due[0] <= now:
                heapq.heappop(self._retries_due)
                self._notified = True  # a retry written by this runner is due: no NOTIFY comes
            notified, self._notified = self._notified, False
            free = self._free_slots()
            runner_id = self._runner_id
        if not (self._claiming() and free > 0):
            return
        # After a full claim more work is likely: claim as slots free. After a short one the
        # queue was empty and this runner is marked waiting: a NOTIFY (or the poll) brings more.
        if not (notified or self._backlog or now >= self._next_poll):
            return
        params = {"runner_id": runner_id, "limit": free, "can_wait": self._listener is not None,
                  "queues": list(self.queues) if self.queues else None}
        try:
            rows = self._conn.get().execute(self._queries.job_claim, params).fetchall()
        except Exception as exc:
            self._notified = self._notified or notified
            self._conn.discard()
            if is_connection_error(exc):
                self._outage.failed("runner", exc)
            else:
                logger.exception("claiming jobs failed")
            self._retry_at = time.monotonic() + self._backoff.next()
            return
        self._outage.ok("runner")
        self._backoff.reset()
        self.stats.claims += 1
        self._next_poll = now + self.settings.poll_interval
        self._backlog = len(rows) == free
        for row in rows:
            self._start_job(row, runner_id)

    def _account(self, written_batch: list[outcomes.Outcome], written: set[int]) -> None:
        """From the completer: which outcomes were written, which were fenced out."""
        stats = self.stats
        now = time.monotonic()
        with self._lock:
            for outcome in written_batch:
                if outcome.job_id not in written:
                    stats.fenced_out += 1
                    logger.warning("outcome %r of job %s attempt %s not written: the attempt was "
                                   "reclaimed meanwhile (fenced)", outcome.status, outcome.job_id,
                                   outcome.attempt, extra={"job_id": outcome.job_id,
                                                           "job_attempt": outcome.attempt})
                elif outcome.status == "succeeded":
                    stats.succeeded += 1
                elif outcome.status == "queued":
                    stats.retried += 1
                    heapq.heappush(self._retries_due, now + outcome.delay)
                elif outcome.status == "failed":
                    stats.failed += 1
                else:
                    stats.cancelled += 1
        if self._retries_due:
            self._wake.set()

    # ----------------------------------------------------------- executing

    def _start_job(self, row: tuple[Any, ...], runner_id: int | None) -> None:
        job_id, task_name, args, kwargs, queue, attempt, failures, max_attempts, cancel = row
        assert runner_id is not None
        job = outcomes.Claimed(job_id, task_name, args, kwargs, queue, attempt, failures,
                               max_attempts, cancel, runner_id)
        task = self.app.tasks.get(task_name)
        context = JobContext(job_id, task_name, attempt, queue, runner_id, cancel)
        timeout = task.config.timeout if task is not None else None
        now = time.monotonic()
        running = Running(job, task, context, now, now + timeout if timeout else None)
        self.stats.claimed += 1
        with self._lock:
            self._active[job_id] = running
        if task is None:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            exc = errors.UnknownTask(f"task {task_name!r} is not registered in this worker's app "
                                     f"(known: {known}); deploy it, or fix the job's task name")
            self._settle(running, self._failure(running, exc))
            return
        if task.is_async:
            running.future = self._loop.submit(lambda: self._run_async(running))
        else:
            self._pool.submit(lambda: self._run_sync(running))

    def _run_sync(self, running: Running) -> None:
        job = running.job
        token = set_current(running.context)
        try:
            value = running.task.func(*job.args, **job.kwargs)  # type: ignore[union-attr]
        except BaseException as exc:
            outcome = self._failure(running, exc)
        else:
            outcome = outcomes.succeeded(job, value)
        finally:
            reset_current(token)
        self._settle(running, outcome)

    async def _run_async(self, running: Running) -> None:
        job = running.job
        token = set_current(running.context)
        try:
            value = await running.task.func(*job.args, **job.kwargs)  # type: ignore[union-attr]
        except asyncio.CancelledError as exc:
            if running.context.cancel_requested:
                outcome = outcomes.cancelled(job, "cancelled while running (async task cancelled)")
            else:
                outcome = self._failure(running, exc)  # cancelled by a timeout or shutdown: settled already
        except BaseException as exc:
            outcome = self._failure(running, exc)
        else:
            outcome = outcomes.succeeded(job, value)
        finally:
            reset_current(token)
        self._settle(running, outcome)

    def _failure(self, running: Running, exc: BaseException) -> outcomes.Outcome:
        task = running.task
        outcome = outcomes.failed(
            running.job, exc,
            no_retry=task.config.no_retry if task is not None else (),
            retry_backoff=task.retry_backoff() if task is not None else self.settings.retry_backoff,
            retry_backoff_max=self.settings.retry_backoff_max,
            cancel_requested=running.context.cancel_requested,
        )
        log = logger.warning if outcome.status == "queued" else logger.error
        log("job %s: %s", running.job.id, outcome.reason, extra=self._log_extra(running))
        return outcome

    @staticmethod
    def _log_extra(running: Running) -> dict[str, Any]:
        return {"job_id": running.job.id, "job_task": running.job.task, "job_attempt": running.job.attempt}

    def _settle(self, running: Running, outcome: outcomes.Outcome | None) -> bool:
        """Record how an attempt ended; only the first call for an attempt counts."""
        with self._lock:
            if running.settled:
                return False
            running.settled = True
            self._active.pop(running.job.id, None)
            abandoned = running.abandoned
        if outcome is not None and not abandoned:
            self._completer.put(outcome)
        self._wake.set()
        return True

    def _expire_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [r for r in self._active.values()
                       if r.deadline is not None and r.deadline <= now and not r.settled]
        for running in expired:
            timeout = running.task.config.timeout  # type: ignore[union-attr]
            exc = TimeoutError(f"task {running.job.task!r} timed out after {timeout:g} s")
            if self._settle(running, self._failure(running, exc)):
                self.stats.timed_out += 1
                if running.future is not None:
                    running.future.cancel()  # async: cancelled for real
                else:
                    self._stray_threads += 1
                    logger.warning("job %s timed out: its slot is given back, but its thread keeps "
                                   "running until the task returns (its result will be discarded)",
                                   running.job.id, extra=self._log_extra(running))

    def _cancel_requested(self, job_ids: list[int]) -> None:
        """From the heartbeat: job.cancel() was called for these running jobs."""
        with self._lock:
            targets = [self._active[j] for j in job_ids if j in self._active]
        for running in targets:
            if running.context.cancel_requested:
                continue
            running.context._cancel = True
            logger.info("cancellation requested for job %s", running.job.id,
                        extra=self._log_extra(running))
            if running.future is not None:
                running.future.cancel()

    # ---------------------------------------------------------------- lease

    def _lease_lost(self, runner_id: int, reason: str) -> None:
        """From the heartbeat thread: the runner may no longer write as ``runner_id``."""
        with self._lock:
            if self._runner_id != runner_id:
                return
            self._lost = (runner_id, reason)
            self._runner_id = None
            abandoned = [r for r in self._active.values() if r.job.runner_id == runner_id]
            for running in abandoned:
                running.abandoned = True
        for running in abandoned:
            if running.future is not None:
                running.future.cancel()
        logger.error("runner %s lost its lease (%s): stopped claiming; abandoning %d running attempt(s)",
                     runner_id, reason, len(abandoned))
        self._wake.set()

    def _recover_lease(self) -> None:
        """Flush what finished, retire the old runner row, register again."""
        assert self._lost is not None
        old_id, reason = self._lost
        if self._completer.backlog:
            self._retry_at = time.monotonic() + 0.05
            return  # the completer writes what finished first (fenced); come back next pass
        try:
            result = reap(self._conn.get(), self._queries, dead_after=self.settings.runner_dead_after,
                          max_crashes=self.settings.max_crashes, runner_id=old_id,
                          reason=f"lost its lease: {reason}")
            if self._stop_requested:
                self._lost = None
                return
            new_id = self._register()
        except Exception as exc:
            self._conn.discard()
            if not is_connection_error(exc):
                logger.exception("could not retire runner %s", old_id)
            self._outage.failed("runner", exc)
            self._retry_at = time.monotonic() + self._backoff.next()
            return
        self._outage.ok("runner")
        self._lost = None
        logger.warning("runner %s retired (%d of its jobs re-queued, %d failed); registered again as "
                       "runner %s", old_id, result.requeued, result.failed, new_id)

    # ------------------------------------------------------------- stopping

    def _begin_drain(self) -> None:
        self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout
        if self._listener is not None:
            self._listener.stop()

    def _drained(self) -> bool:
        with self._lock:
            busy = bool(self._active)
        pending = self._completer.backlog > 0
        if not busy and not pending:
            return True
        if (self._hand_back_now or time.monotonic() >= self._drain_deadline) and not pending:
            return True  # what still runs is handed back in _shutdown
        return False

    def _shutdown(self) -> int:
        code = EXIT_OK
        with self._lock:
            still_running = [r for r in self._active.values() if not r.settled]
            for running in still_running:
                running.abandoned = True
        for running in still_running:
            if running.future is not None:
                running.future.cancel()
        if not self._completer.flush(timeout=max(self.settings.runner_dead_after, 5.0)):
            logger.error("%d outcome(s) could not be written before stopping (database unavailable); "
                         "their jobs go back to the queue when this runner is declared dead",
                         self._completer.backlog)
        runner_id = self._runner_id or (self._lost[0] if self._lost else None)
        if runner_id is not None:
            code = self._stop_runner(runner_id, len(still_running))
        self._completer.stop(timeout=0)
        if self._listener is not None:
            self._listener.stop()
        self._heartbeat.stop()
        self._reaper.stop()
        self._pool.shutdown()
        self._loop.shutdown()
        self._conn.discard()
        s = self.stats
        logger.info("runner %s stopped: %d claimed in %d claims, %d succeeded, %d retried, %d failed, %d cancelled, "
                    "%d timed out, %d outcomes fenced out", runner_id, s.claimed, s.claims, s.succeeded,
                    s.retried, s.failed, s.cancelled, s.timed_out, s.fenced_out)
        return code

    def _stop_runner(self, runner_id: int, unfinished: int) -> int:
        reason = "handed back: worker stopping" if unfinished else "stopped"
        deadline = time.monotonic() + max(self.settings.runner_dead_after, 5.0)
        backoff = Backoff()
        while True:
            try:
                row = self._conn.get().execute(self._queries.runner_stop,
                                               {"runner_id": runner_id, "reason": reason}).fetchone()
                if row[0]:
                    logger.warning("handed %d unfinished job(s) back to the queue", row[0])
                return EXIT_OK
            except Exception as exc:
                self._conn.discard()
                if time.monotonic() >= deadline:
                    logger.error("could not mark runner %s stopped (%s); its %d unfinished job(s) go back "
                                 "to the queue when the reaper declares it dead", runner_id,
                                 str(exc).splitlines()[0] if str(exc) else type(exc).__name__, unfinished)
                    return EXIT_HAND_BACK_FAILED
                time.sleep(backoff.next())
