"""The runner: one worker process's claim loop and lifecycle.

Threads of a runner, each with its own connection where it has one:

* main thread: the claim loop. It claims as many jobs as there are free slots, in one
  statement (``job_claim``), and sleeps on an event set by the listener (new work), by
  slots (an attempt ended), by the heartbeat (lease lost) and by the signal thread; at
  the latest it wakes every ``poll_interval``;
* completer (``completer.py``): writes outcomes in batches, in parallel with claims;
* listener (``listener.py``), heartbeat (``heartbeat.py``), reaper (``reaper.py``);
* task threads and one asyncio thread (``slots.py``, ``executor.py``);
* a signal thread: signal handlers only write a byte to a pipe (they run on the main
  thread between bytecodes and must not take locks it may hold); this thread reads it.

Invariants:

* Every outcome is written fenced by (runner id, attempt): a write that matches no row
  is dropped and logged, never retried as if new.
* Claims stop when a stop is requested or the lease is lost. After losing its lease,
  the runner abandons the outcomes of attempts still running, lets the completer write
  the outcomes it already has (fenced), retires its old row (its running jobs go back
  to the queue as crashes) and registers again under a new id.
* The database and the runner agree on what the runner runs: the heartbeat returns the
  attempts the database assigns to this runner, and one the runner does not know for
  two beats in a row (a claim whose reply was lost) is handed back.
* After a clean stop nothing is left running: unfinished jobs are handed back to
  ``queued`` in the same statement that marks the runner stopped.

Failure modes: database errors never kill the loop. Outcomes wait in memory and are
written when the server is back (fencing decides whether they still apply); one line
is logged per outage. A runner started while the database is down waits for it.
"""

from __future__ import annotations

import heapq
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import errors, migrations
from ..version import __version__
from . import outcomes
from .completer import Completer
from .connections import Backoff, OutageLog, ServiceConnection, is_connection_error
from .heartbeat import Heartbeat
from .listener import Listener
from .reaper import Reaper, reap
from .slots import Slots

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_HAND_BACK_FAILED = 1
# Claims pause while more outcomes than this many times the concurrency wait to be written.
_BACKLOG_LIMIT = 10
# A claim that passed over jobs other claims held tries again after this, doubling.
_RETRY_SKIPPED_FIRST = 0.005


@dataclass
class Stats:
    claims: int = 0  # claim statements run
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    fenced_out: int = 0
    released: int = 0  # attempts the database gave this runner that it did not know
    handed_back: int = 0  # unfinished jobs handed back at stop


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
        self._outage = OutageLog()

        def connection(role: str, *, generic_plans: bool = False) -> ServiceConnection:
            return ServiceConnection(dsn, role, settings.connect_timeout, generic_plans=generic_plans,
                                     io_timeout=settings.runner_dead_after / 2)

        self._conn = connection("runner", generic_plans=True)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._runner_id: int | None = None
        self._lost: tuple[int, str] | None = None
        self._suspended: str | None = None  # lease expired locally, not yet known lost
        self._claim_in_flight = False
        self._notified = True  # claim once at start
        self._backlog = False
        self._next_poll = 0.0
        self._retry_at = 0.0
        self._skipped_delay = _RETRY_SKIPPED_FIRST
        self._backoff = Backoff()
        self._stop_requested = False
        self._hand_back_now = False
        self._drain_deadline: float | None = None
        self._retries_due: list[float] = []  # when this runner's retries become claimable
        # Attempts the database says this runner runs and it does not know:
        # key -> (beats seen, claims run when first seen).
        self._unknown: dict[tuple[int, int], tuple[int, int]] = {}
        self.stats = Stats()
        self.started = threading.Event()
        self._completer = Completer(connection=connection("completer", generic_plans=True),
                                    queries=self._queries, outage=self._outage, on_written=self._account)
        self.slots = Slots(app, concurrency=self.concurrency, on_outcome=self._completer.put,
                           on_change=self._wake.set)
        self._listener = Listener(
            connection=connection("listener"), schema=settings.schema, queues=self.queues,
            outage=self._outage, on_work=self.notify_work,
        ) if settings.listen else None
        self._heartbeat = Heartbeat(
            connection=connection("heartbeat"), queries=self._queries,
            interval=settings.heartbeat_interval, dead_after=settings.runner_dead_after,
            outage=self._outage, on_lease_lost=self._lease_lost,
            on_cancel_requested=self.slots.request_cancel, on_running=self._reconcile,
            on_lease_expired=self._lease_expired, on_lease_renewed=self._lease_renewed,
        )
        self._reaper = Reaper(
            connection=connection("reaper"), queries=self._queries,
            # At most 1 s: scheduled jobs are promoted 5 s ahead of their time.
            interval=min(max(settings.heartbeat_interval / 2, 0.25), 1.0),
            max_crashes=settings.max_crashes, outage=self._outage,
        )

    # ------------------------------------------------------------ public API

    @property
    def runner_id(self) -> int | None:
        return self._runner_id

    def notify_work(self) -> None:
        """New work may be claimable (a notification, or the listener reconnected)."""
        with self._lock:
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
        code = EXIT_OK
        try:
            if not self._start():
                return EXIT_OK  # stopped while waiting for the database
            while True:
                self._wake.clear()
                if self._stop_requested and self._drain_deadline is None:
                    self._begin_drain()
                if self._lost is not None:
                    self._recover_lease()
                self.slots.expire()
                if time.monotonic() >= self._retry_at:
                    self._claim()
                if self._stop_requested and self._drained():
                    break
                self._wake.wait(self._sleep_time())
        finally:
            if self._runner_id is not None or self._lost is not None:
                code = self._shutdown()
        return code

    # --------------------------------------------------------------- startup

    def _start(self) -> bool:
        """Check the schema, register, start the services; False if stopped meanwhile."""
        backoff = Backoff(maximum=10.0)
        while True:
            try:
                with self.app.database.connection() as conn:
                    migrations.check_revision(conn, self.settings.schema)
                self._register()
                break
            except errors.SchemaNotMigrated:
                raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._outage.failed("runner", exc)
                self._conn.discard()
                if self._stop_requested:
                    return False
                self._wake.wait(backoff.next())
        self._outage.ok("runner")
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
            s.schema, ",".join(self.queues) if self.queues else "all", self.concurrency,
            "on" if s.listen else "off (poll only)", s.poll_interval, s.heartbeat_interval,
            s.runner_dead_after, s.shutdown_timeout,
        )
        self.started.set()
        return True

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
            self._unknown.clear()
        self._heartbeat.follow(runner_id)
        return runner_id

    def _install_signal_handlers(self) -> None:
        # Handlers run on the main thread between bytecodes, possibly while it holds one of
        # our locks: they only write to a pipe; a thread does the rest.
        read_fd, write_fd = os.pipe()

        def handle(signum: int, _frame: Any) -> None:
            try:
                os.write(write_fd, bytes([signum]))
            except OSError:
                pass

        def relay() -> None:
            while True:
                data = os.read(read_fd, 16)
                for signum in data:
                    name = signal.Signals(signum).name
                    if self._stop_requested:
                        logger.warning("received %s again: handing running jobs back now", name)
                        self.request_stop(hand_back_now=True)
                    else:
                        logger.warning("received %s: no new jobs; letting %d running job(s) finish "
                                       "for up to %s s (send it again to hand them back now)", name,
                                       self.slots.busy(), self.settings.shutdown_timeout)
                        self.request_stop()

        threading.Thread(target=relay, name="pgqueue-signals", daemon=True).start()
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # ------------------------------------------------------------- the loop

    def _claiming(self) -> bool:
        return (self._runner_id is not None and not self._stop_requested and self._lost is None
                and self._suspended is None)

    def _sleep_time(self) -> float:
        """Until the next thing to do; only moments the loop will act on count."""
        now = time.monotonic()
        wake_at = [now + 1.0]
        if self._retry_at > now:
            wake_at.append(self._retry_at)
        if self._drain_deadline is not None and self._drain_deadline > now:
            wake_at.append(self._drain_deadline)
        deadline = self.slots.next_deadline()
        if deadline is not None:
            wake_at.append(deadline)
        if self._claiming() and self.slots.free() > 0:
            wake_at.append(self._next_poll)
            with self._lock:
                if self._retries_due:
                    wake_at.append(self._retries_due[0])
        return min(max(min(wake_at) - now, 0.001), 1.0)

    def _claim(self) -> None:
        """Claim into the free slots when work may be there: one statement."""
        now = time.monotonic()
        with self._lock:
            while self._retries_due and self._retries_due[0] <= now:
                heapq.heappop(self._retries_due)
                self._notified = True  # a retry written by this runner is due: no NOTIFY comes
            notified, self._notified = self._notified, False
            runner_id = self._runner_id
        free = self.slots.free()
        # Backpressure: while outcomes pile up unwritten (the database refuses them, say),
        # claiming more only piles up more. Under load a backlog of a few batches is normal.
        if not (self._claiming() and free > 0) \
                or self._completer.backlog > _BACKLOG_LIMIT * self.concurrency:
            with self._lock:
                self._notified = self._notified or notified
            return
        # After a full claim more work is likely: claim as slots free. After a short one the
        # queue was empty and this runner is marked waiting: a NOTIFY (or the poll) brings more.
        if not (notified or self._backlog or now >= self._next_poll):
            return
        params = {"runner_id": runner_id, "limit": free, "can_wait": self._listener is not None,
                  "queues": list(self.queues) if self.queues else None}
        self._claim_in_flight = True
        try:
            rows = self._conn.get().execute(self._queries.job_claim, params).fetchall()
        except Exception as exc:
            self._claim_in_flight = False
            with self._lock:
                self._notified = self._notified or notified
            self._conn.discard()
            if is_connection_error(exc):
                self._outage.failed("runner", exc)
            else:
                logger.exception("claiming jobs failed")
            self._retry_at = time.monotonic() + self._backoff.next()
            return
        self._claim_in_flight = False
        self._outage.ok("runner")
        self._backoff.reset()
        self.stats.claims += 1
        self._next_poll = now + self.settings.poll_interval
        alive, more, became_waiting = rows[0][0], rows[0][1], rows[0][2]
        if not alive:
            self._lease_lost(runner_id, "declared dead (seen by a claim)")
            return
        jobs = [row[3:] for row in rows if row[3] is not None]
        if jobs and self._heartbeat.expired():
            # The process stalled during the claim (paused, say): others may have taken over.
            # Start nothing; the lease check sorts out who owns these jobs.
            logger.warning("claimed %d job(s) but the lease expired meanwhile: not starting them",
                           len(jobs))
            return
        for job_id, task, args, kwargs, queue, attempt, failures, max_attempts, cancel in jobs:
            self.stats.claimed += 1
            self.slots.start(outcomes.Claimed(job_id, task, args, kwargs, queue, attempt, failures,
                                              max_attempts, cancel, runner_id),
                             current_runner=lambda: self._runner_id)
        self._backlog = len(jobs) == free
        if more and len(jobs) < free:
            # Other claims held runnable jobs at that instant: look again very soon.
            self._retry_at = time.monotonic() + self._skipped_delay
            self._skipped_delay = min(self._skipped_delay * 2, self.settings.poll_interval)
            with self._lock:
                self._notified = True
        else:
            self._skipped_delay = _RETRY_SKIPPED_FIRST
            if became_waiting:
                # A job committed between this claim's snapshot and its flag write sent no
                # NOTIFY (nobody was waiting): one more look, now that the flag is set.
                with self._lock:
                    self._notified = True

    def _account(self, batch: list[outcomes.Outcome], written: set[int]) -> None:
        """From the completer: which outcomes were written, which were fenced out."""
        stats = self.stats
        now = time.monotonic()
        with self._lock:
            for outcome in batch:
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
        self._wake.set()

    # --------------------------------------------------------- reconciling

    def _reconcile(self, runner_id: int, running: list[tuple[int, int]]) -> None:
        """From the heartbeat: the attempts the database says this runner runs. One it does
        not know, seen in two beats, with a claim completed since it was first seen (so it
        is no claim whose reply is still on its way), is handed back: a claim whose reply
        was lost with the connection."""
        if self._claim_in_flight:
            return
        known = self.slots.keys() | self._completer.pending_keys()
        claims = self.stats.claims
        with self._lock:
            if runner_id != self._runner_id:
                return
            previous = self._unknown
            self._unknown = {key: (previous.get(key, (0, claims))[0] + 1, previous.get(key, (0, claims))[1])
                             for key in running if key not in known}
            stale = [key for key, (beats, first_claims) in self._unknown.items()
                     if beats >= 2 and (claims > first_claims or beats >= 4)]
        if not stale:
            return
        try:
            rows = self._heartbeat.connection.get().execute(self._queries.job_release, {
                "runner_id": runner_id, "ids": [k[0] for k in stale], "attempts": [k[1] for k in stale],
            }).fetchall()
        except Exception as exc:
            self._heartbeat.connection.discard()
            logger.warning("could not hand back %d attempt(s) this runner no longer holds: %s",
                           len(stale), exc)
            return
        self.stats.released += len(rows)
        if rows:
            logger.warning("handed back job(s) %s: the database assigned them to runner %s, which "
                           "was not running them (a claim's reply was lost)",
                           ", ".join(str(r[0]) for r in rows), runner_id)

    # ---------------------------------------------------------------- lease

    def _lease_expired(self, runner_id: int, reason: str) -> None:
        """From the heartbeat: no successful beat for dead_after. Stop claiming; whether the
        attempts still running here remain ours, the next successful beat will tell."""
        with self._lock:
            if self._runner_id != runner_id:
                return
            self._suspended = reason
        logger.warning("runner %s: %s; its lease has expired: not claiming until the database "
                       "confirms it is still alive", runner_id, reason)

    def _lease_renewed(self, runner_id: int, silent: float) -> None:
        """From the heartbeat: after an expiry, the row was still ours: nobody took our jobs."""
        with self._lock:
            if self._runner_id != runner_id:
                return
            self._suspended = None
            self._notified = True
        logger.warning("runner %s reached the database again after %.1f s: still alive, resuming",
                       runner_id, silent)
        self._wake.set()

    def _lease_lost(self, runner_id: int | None, reason: str) -> None:
        """The runner may no longer write as ``runner_id`` (from the heartbeat or a claim)."""
        with self._lock:
            if runner_id is None or self._runner_id != runner_id:
                return
            self._lost = (runner_id, reason)
            self._runner_id = None
            self._suspended = None
        self._heartbeat.forget()
        abandoned = self.slots.abandon(runner_id)
        logger.error("runner %s lost its lease (%s): stopped claiming; abandoning %d running attempt(s)",
                     runner_id, reason, abandoned)
        self._wake.set()

    def _recover_lease(self) -> None:
        """Let the completer write what finished, retire the old runner row, register again."""
        assert self._lost is not None
        old_id, reason = self._lost
        if self._completer.backlog:
            self._retry_at = time.monotonic() + 0.05
            return  # the completer writes what finished first (fenced); come back next pass
        try:
            result = reap(self._conn.get(), self._queries, max_crashes=self.settings.max_crashes,
                          runner_id=old_id, reason=f"lost its lease ({reason})")
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
        logger.warning("runner %s retired (%d job(s) it still held handed back); registered again as "
                       "runner %s", old_id, result.requeued, new_id)

    # ------------------------------------------------------------- stopping

    def _begin_drain(self) -> None:
        self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout
        if self._listener is not None:
            self._listener.stop()

    def _drained(self) -> bool:
        if self.slots.busy() == 0 and self._completer.backlog == 0:
            return True
        # Out of time (or told twice): what still runs is handed back, and what waits to be
        # written gets a bounded last chance, in _shutdown.
        return self._hand_back_now or time.monotonic() >= (self._drain_deadline or 0)

    def _shutdown(self) -> int:
        unfinished = self.slots.abandon()
        flush_for = max(self.settings.runner_dead_after, 5.0)
        if not self._completer.flush(timeout=flush_for):
            logger.error("%d outcome(s) not written yet: the database is unavailable",
                         self._completer.backlog)
        runner_id = self._runner_id or (self._lost[0] if self._lost else None)
        code = EXIT_OK
        self._heartbeat.stop()  # a beat after the stop below would find the row stopped
        if runner_id is not None:
            code = self._stop_runner(runner_id, unfinished)
        if self._listener is not None:
            self._listener.stop()
        self._reaper.stop()
        self._completer.stop(timeout=0)
        self.slots.shutdown()
        self._conn.discard()
        s = self.stats
        logger.info("runner %s stopped: %d claimed in %d claims, %d succeeded, %d retried, %d failed, "
                    "%d cancelled, %d timed out, %d outcomes fenced out, %d handed back at stop, "
                    "%d unknown attempts handed back", runner_id, s.claimed, s.claims, s.succeeded,
                    s.retried, s.failed, s.cancelled, self.slots.timed_out, s.fenced_out,
                    s.handed_back, s.released)
        return code

    def _stop_runner(self, runner_id: int, unfinished: int) -> int:
        """Hand back what still runs and mark the runner stopped, once every finished
        outcome is written (else finished jobs would be handed back and run again)."""
        reason = "handed back: worker stopping" if unfinished else "stopped"
        deadline = time.monotonic() + max(self.settings.runner_dead_after, 5.0)
        backoff = Backoff()
        while True:
            if self._completer.backlog and not self._completer.flush(timeout=1.0) \
                    and time.monotonic() < deadline:
                continue
            try:
                row = self._conn.get().execute(self._queries.runner_stop,
                                               {"runner_id": runner_id, "reason": reason}).fetchone()
                self.stats.handed_back = row[0]
                if row[0]:
                    logger.warning("handed %d unfinished job(s) back to the queue", row[0])
                return EXIT_OK
            except Exception as exc:
                self._conn.discard()
                if time.monotonic() >= deadline:
                    logger.error("could not mark runner %s stopped (%s); its unfinished job(s) go back "
                                 "to the queue when the reaper declares it dead", runner_id,
                                 str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    return EXIT_HAND_BACK_FAILED
                time.sleep(backoff.next())
