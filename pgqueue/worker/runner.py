"""The runner: one worker process's claim loop and lifecycle.

Threads of a runner, and the connections they hold:

* main thread, the claim loop, on the claim connection: claims as many jobs as there are
  free slots, in one statement (``claimer.py``); runs the maintenance pass when it is its
  turn (``maintenance.py``); hands back attempts the database gives it that it does not know.
  It sleeps on an event set by the control thread (new work, lease changes), by the slots
  (an attempt ended) and by the signal thread; at the latest it wakes every
  ``poll_interval``, and then first asks, read-only, whether there is work;
* completer (``completer.py``), on its own connection: writes outcomes in batches, in
  parallel with claims;
* control (``control.py``), on the control connection: heartbeats (only the runners table)
  and LISTEN. Each of the three connections holds the runner's liveness lock;
* task threads and one asyncio thread (``slots.py``, ``executor.py``);
* a signal thread: signal handlers only write a byte to a pipe (they run on the main
  thread between bytecodes and must not take locks it may hold); this thread reads it.

Invariants:

* Every outcome is written fenced by (runner id, attempt): a write that matches no row is
  dropped and logged, never retried as if new.
* Claims stop when a stop is requested or the lease is not valid (``lease.py``). After
  losing its lease the runner abandons the outcomes of attempts still running, writes the
  outcomes it already has (fenced), retires its old row (what still runs under it goes back
  to the queue, not as a crash) and registers again under a new id.
* The database and the runner agree on what the runner runs: the control thread compares
  the attempts the database assigns to the runner with those it knows, and one it does not
  know for two beats in a row (a claim whose reply was lost) is handed back.
* After a clean stop nothing is left running: unfinished jobs are handed back to ``queued``
  in the transaction that marks the runner stopped, while the heartbeat still runs.

Failure modes: database errors never kill the loop. Outcomes wait in memory and are written
when the server is back (fencing decides whether they still apply); one line is logged per
outage. A runner started while the database is down waits for it, saying so at growing
intervals; a database that can never work (bad password, unknown database or role) stops
it at once with one line that says what to fix.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import db, errors, migrations, schedules, sqlfiles
from ..version import __version__
from . import claimer, completer, lease as leases
from .connections import Backoff, OutageLog, ServiceConnection, is_connection_error, is_transient
from .control import Control
from .firing import Firing
from .maintenance import Maintenance
from .retention import Retention
from .slots import Slots

if TYPE_CHECKING:
    from ..app import App
    from ..settings import Settings

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_HAND_BACK_FAILED = 1
# Stopped to be started afresh (too many stuck threads): `pgqueue work` restarts it in place;
# a supervisor starts a new process at once.
EXIT_RESTART = 3
# Claims pause while more outcomes than this many times the concurrency wait to be written.
_BACKLOG_LIMIT = 10
# A claim that passed over jobs other claims held tries again after this, doubling.
_RETRY_SKIPPED_FIRST = 0.005
# A limited queue whose limits held jobs back is tried again after this, doubling up to the max.
_LIMITED_RETRY_FIRST = 0.02
_LIMITED_RETRY_MAX = 0.25
# After work, a runner lingers before it waits for a NOTIFY: its row says it is not waiting,
# so enqueues send none (a notifying commit holds a server-wide lock: under a stream of small
# enqueue transactions a NOTIFY each halves their rate), and it looks for work itself, at
# these intervals after the last job it found (short ones: a job that comes meanwhile waits
# for the next look). Then it waits, and the next enqueue wakes it.
_LINGER_STEPS = (0.001,) + (0.002,) * 7
# Once its row says it waits, a few more looks: an enqueue that checked the flag just before it
# was set sent no NOTIFY, and its job becomes visible only when its commit completes (after
# the WAL flush, a few ms on a busy disk), which the look right after the flag can miss.
_SETTLE_STEPS = (0.002, 0.004, 0.008, 0.016)


@dataclass
class Stats:
    claims: int = 0  # round trips that claimed
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    fenced_out: int = 0
    released: int = 0  # attempts the database gave this runner that it did not know
    handed_back: int = 0  # unfinished jobs handed back at stop
    passes: int = 0  # maintenance passes this runner won


class Runner:
    """Runs jobs of ``app`` until stopped; ``run()`` returns the process exit code."""

    def __init__(self, app: "App", *, install_signals: bool = True,
                 settings: "Settings | None" = None) -> None:
        self.app = app
        # ``settings``: the App's, with changes for this runner alone (pgqueue.testing's
        # queues and concurrency); the App's own when not given.
        self.settings = settings = settings or app.settings
        self.queues = settings.queues
        self.concurrency = settings.concurrency
        self._install_signals = install_signals
        self._queries = app.queries
        self._lock_class = sqlfiles.runner_lock_class(settings.schema)
        dsn = app.database.dsn
        self._outage = OutageLog()
        self.lease = leases.Lease(settings.runner_dead_after)
        self.lease.on_change(self._lease_changed)
        io_timeout = settings.runner_dead_after / 2
        def hot(role: str) -> ServiceConnection:
            # lock_timeout: a row lock held elsewhere (an operator's open transaction on the
            # runner row, say) fails a statement after a moment, to be retried, instead of
            # stalling the runner until the statement timeout.
            return ServiceConnection(dsn, role, settings.connect_timeout, generic_plans=True,
                                     io_timeout=io_timeout, lock_timeout=min(2.0, io_timeout),
                                     prepared=settings.prepared_statements,
                                     on_connect=self._hold_liveness)

        self._conn = hot("runner")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._claim_in_flight = False
        self._claim_in_doubt = True  # look once at start
        self._notified = True  # claim once at start
        self._backlog = False
        self._next_poll = 0.0
        self._retry_at = 0.0
        self._linger_step: int | None = None  # index into _LINGER_STEPS while lingering
        self._settle_step: int | None = None  # index into _SETTLE_STEPS after it began to wait
        self._announced = False  # a NOTIFY came (not one of the loop's own "look again")
        self._waiting_as: int | None = None  # the runner id whose row says waiting, as last claimed
        self._skipped_delay = _RETRY_SKIPPED_FIRST
        # Queue controls as the last claim saw them, and when to try each limited queue again.
        self._paused: frozenset[str] = frozenset()
        self._limited: frozenset[str] = frozenset()
        self._limited_next: dict[str, float] = {}
        self._limited_delay: dict[str, float] = {}
        self._backoff = Backoff()
        self._stop_requested = False
        self._restart = False
        self._hand_back_now = False
        self._drain_deadline: float | None = None
        self._ending: int | None = None  # the runner id a clean stop is ending
        self._to_release: list[tuple[int, list[tuple[int, int]]]] = []
        self.stats = Stats()
        self.started = threading.Event()
        self.outbox = completer.Outbox()
        self._completer = completer.Completer(
            connection=hot("completer"), queries=self._queries, outbox=self.outbox,
            outage=self._outage, writer=lambda: self.lease.runner_id, on_written=self._account)
        self.slots = Slots(app, concurrency=self.concurrency, on_outcome=self.outbox.put,
                           on_change=self._wake.set)
        self.maintenance = Maintenance(
            queries=self._queries, interval=settings.maintenance_interval,
            dead_after=settings.runner_dead_after, max_crashes=settings.max_crashes,
            process_checks=settings.instant_recovery, statement_timeout=io_timeout,
            emit=app.hooks.emit, firing=Firing(queries=self._queries),
            retention=Retention.from_settings(self._queries, settings))
        # The App's schedules are declared at each registration (at start, they may redefine).
        self._sync_at: float | None = None
        self._synced = False
        self._sync_backoff = Backoff()
        self.control = Control(
            connection=ServiceConnection(dsn, "control", settings.connect_timeout,
                                         io_timeout=io_timeout,
                                         lock_timeout=max(settings.heartbeat_interval / 4, 0.1),
                                         prepared=settings.prepared_statements),
            queries=self._queries, lease=self.lease, interval=settings.heartbeat_interval,
            listen=settings.listen, queues=self.queues, outage=self._outage,
            use_liveness=lambda: settings.instant_recovery,
            on_work=self.notify_work, on_reconnect=self._server_answers,
            on_cancel_requested=self.slots.request_cancel,
            known_attempts=self._known_attempts, may_hold_unknown=self._may_hold_unknown,
            claims_done=lambda: self.stats.claims,
            on_maintenance_hint=self._maintenance_hint, release=self._release_later,
            emit=app.hooks.emit,
        )

    # ------------------------------------------------------------ public API

    @property
    def runner_id(self) -> int | None:
        return self.lease.runner_id

    def notify_work(self) -> None:
        """New work may be claimable (a notification, or the control connection reconnected)."""
        with self._lock:
            self._notified = True
            self._announced = True
        self._wake.set()

    def _look_again(self) -> None:
        """Claim at the loop's next turn, now: the flag alone would wait for the loop's next
        deadline (its wait counts only deadlines), a second away when it polls. (A look meant
        for later sets ``_retry_at`` instead.)"""
        with self._lock:
            self._notified = True
        self._wake.set()

    def _server_answers(self) -> None:
        """The control connection (re)connected: claim at once, whatever the backoff after
        failed claims (the claim connection, reconnected, holds the liveness lock again)."""
        self._backoff.reset()
        self._retry_at = 0.0
        self.notify_work()

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
                if self.lease.lost_incarnation is not None:
                    self._recover_lease()
                if self._sync_at is not None and time.monotonic() >= self._sync_at:
                    self._sync_schedules()
                self.slots.expire()
                self._check_stuck()
                now = time.monotonic()
                if now >= self._retry_at:
                    self._claim(now)
                    self._release_unknown()
                    if self._claiming() and self.maintenance.due():
                        self._maintain()
                if self._stop_requested and self._drained():
                    break
                self._wake.wait(self._sleep_time())
        finally:
            if self.lease.runner_id is not None or self.lease.lost_incarnation is not None:
                code = self._shutdown()
        return EXIT_RESTART if self._restart and code == EXIT_OK else code

    def _check_stuck(self) -> None:
        """Threads of sync tasks past their timeout still run (Python cannot stop them): past
        the bound, finish the running jobs and restart the process, so a library call that
        hangs cannot take every thread forever."""
        stuck = self.slots.stuck
        if stuck > self.settings.max_stuck_threads and not self._stop_requested:
            logger.error("%d task threads are still running past their timeout (max_stuck_threads "
                         "is %d): finishing the running jobs, then restarting this worker process",
                         stuck, self.settings.max_stuck_threads)
            self._restart = True
            self.request_stop()

    # --------------------------------------------------------------- startup

    def _start(self) -> bool:
        """Check the schema, register, start the control thread; False if stopped meanwhile."""
        waiting = _StartupWait()
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
                fatal = db.unfixable_by_waiting(exc)
                if fatal is not None:
                    raise errors.DatabaseUnavailable(fatal) from exc
                self._conn.discard()
                waiting.failed(exc, self.app.database.display)
                if self._stop_requested:
                    return False
                self._wake.wait(waiting.delay())
        # The worker's own connections do its work; the App's pool is for task code.
        self.app.database.close()
        self._completer.start()
        self.control.start()
        if self.settings.listen:
            # The first claim marks the runner waiting when the queue is empty; a NOTIFY sent
            # before LISTEN took effect would be lost, so listen first.
            self.control.listening.wait(self.settings.connect_timeout)
        s = self.settings
        logger.info(
            "runner %s started: pgqueue %s, pid %s, host %s, database %s, schema %r, queues %s, "
            "concurrency %s, listen %s, poll every %s s, heartbeat every %s s, dead after %s s, "
            "shutdown timeout %s s, instant recovery %s, synchronous claims %s",
            self.lease.runner_id, __version__, os.getpid(), socket.gethostname(),
            self.app.database.display, s.schema, ",".join(self.queues) if self.queues else "all",
            self.concurrency, "on" if s.listen else "off (poll only)", s.poll_interval,
            s.heartbeat_interval, s.runner_dead_after, s.shutdown_timeout,
            "on" if self._liveness() else
            ("off (a connection pooler is in between: the lease decides)" if s.instant_recovery
             else "off"),
            "on" if s.synchronous_claims else "off",
        )
        self.started.set()
        return True

    def _liveness(self) -> bool:
        return bool(self.settings.instant_recovery and self._conn.direct)

    def _register(self) -> int:
        self._conn.get()  # connect first: whether it is direct decides the liveness lock
        row = self._conn.run_one(self._queries.raw("runner_register"), {
            "host": socket.gethostname(), "pid": os.getpid(),
            "queues": list(self.queues) if self.queues else None,
            "concurrency": self.concurrency, "version": __version__,
            "heartbeat_interval": self.settings.heartbeat_interval,
            "dead_after": self.settings.runner_dead_after,
            "liveness": self._liveness(), "max_crashes": self.settings.max_crashes,
            "lock_class": self._lock_class,
        })
        assert row is not None
        runner_id, locked = int(row[0]), bool(row[1])
        previous = self._conn.locked_runner
        self._conn.locked_runner = runner_id if locked else None
        if previous is not None and previous != runner_id:
            self._conn.run(self._queries.raw("runner_unlock"),
                           {"lock_class": self._lock_class, "runner_id": previous})
        self._look_again()
        self.lease.registered(runner_id)
        self.control.beat_soon()
        if self.app.schedules.declared:
            self._sync_at = 0.0
        return runner_id

    def _sync_schedules(self) -> None:
        """Declare the App's schedules as this runner (``schedules.sync``); on a database error,
        again a moment later (claims go on meanwhile)."""
        runner_id = self.lease.runner_id
        if runner_id is None:
            return
        timeouts = {"timeout_ms": int(self.settings.runner_dead_after * 500),
                    "lock_timeout_ms": int(self.settings.runner_dead_after * 250)}
        try:
            result = schedules.sync(self.app, self._conn, runner_id, redefine=not self._synced,
                                    timeouts=timeouts)
        except Exception as exc:
            self._conn.discard()
            logger.warning("could not declare this runner's %d schedule(s): %s; trying again",
                           len(self.app.schedules.declared), db._one_line(exc))
            self._sync_at = time.monotonic() + self._sync_backoff.next()
            return
        self._sync_at, self._synced = None, True
        logger.info("runner %s declares %d schedule(s): %d new, %d redefined, %d declared again",
                    runner_id, len(self.app.schedules.declared), len(result.created),
                    len(result.redefined), len(result.declared_again))

    def _hold_liveness(self, conn: ServiceConnection, _pg: Any) -> None:
        """A new claim or completer connection (after an error): it holds the liveness lock too."""
        runner_id = self.lease.runner_id
        if runner_id is not None and conn.direct and self.settings.instant_recovery:
            row = conn.run_one(self._queries.raw("runner_lock"),
                               {"lock_class": self._lock_class, "runner_id": runner_id})
            if row and row[0]:
                conn.locked_runner = runner_id

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
        return not self._stop_requested and self.lease.may_claim()

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
        if self._claiming():
            if self.slots.free() > 0:
                wake_at.append(self._next_poll)
                wake_at.extend(self._limited_next.get(q, now) for q in self._limited
                               if self.queues is None or q in self.queues)
            if self.maintenance.schedule.rank is None or self.maintenance.schedule.rank < 2:
                wake_at.append(self.maintenance.schedule.next_attempt)
        return min(max(min(wake_at) - now, 0.001), 1.0)

    def _claim(self, now: float) -> None:
        """Claim into the free slots when work may be there: one statement (plus one per
        limited queue this runner serves)."""
        with self._lock:
            notified, self._notified = self._notified, False
            announced, self._announced = self._announced, False
        runner_id = self.lease.runner_id
        free = self.slots.free()
        # Backpressure: while outcomes pile up unwritten (the database refuses them, say),
        # claiming more only piles up more. Under load a backlog of a few batches is normal.
        if runner_id is None or not self._claiming() or free <= 0 \
                or self.outbox.backlog > _BACKLOG_LIMIT * self.concurrency:
            with self._lock:
                self._notified = self._notified or notified
            return
        if self._limited:
            free = self._claim_limited(now, runner_id, free, notified)
            if free <= 0 or not self._claiming():
                return
        if announced and self._linger_step is None:
            self._linger_step = 0  # woken by an enqueue: this claim says "not waiting" at once
            self._settle_step = None
        request = self._plain_request(runner_id, free)
        # After a full claim more work is likely: claim as slots free. After a short one the
        # queue was empty: the runner lingers (looks again every few ms), then is marked
        # waiting, and a NOTIFY (or the poll) brings more.
        if not (notified or self._backlog):
            if now < self._next_poll:
                return
            self._next_poll = now + self._poll_delay()
            # A linger just ended: claim outright, whatever a probe would say, so that the
            # runner's row says it waits (and enqueues wake it again).
            marks_waiting = request.can_wait and self._waiting_as != runner_id
            if not marks_waiting and (request.mode != "many" or request.queues is not None):
                # The poll: a read-only look first (a claim locks the runner row: a write).
                try:
                    row = self._conn.run_one(self._queries.raw("job_probe"), {
                        "mode": request.mode, "queues": request.queues or
                        ([request.queue] if request.queue else None)})
                except Exception as exc:
                    self._failed_round_trip(exc)
                    return
                if not (row and row[0]):
                    return
        result = self._claim_round_trip(request)
        if result is None:
            return
        claimed = self._take(result)
        if claimed is None:
            return
        if claimed:
            self._linger_step = 0  # work came: linger afresh after it
            self._settle_step = None
        # What the claim wrote in the runner's row (its `waiting` CTE).
        self._waiting_as = runner_id if (request.can_wait and claimed < request.limit
                                         and not result.more) else None
        self._next_poll = now + self._poll_delay()
        self._backlog = claimed == request.limit
        if result.more and claimed < request.limit:
            # Other claims held runnable jobs at that instant: look again very soon.
            self._retry_at = time.monotonic() + self._skipped_delay
            self._skipped_delay = min(self._skipped_delay * 2, self.settings.poll_interval)
            with self._lock:
                self._notified = True
        else:
            self._skipped_delay = _RETRY_SKIPPED_FIRST
            if result.became_waiting:
                # A job committed between this claim's snapshot and its flag write sent no
                # NOTIFY (nobody was waiting): one more look now that the flag is set, and the
                # settling looks after it.
                self._settle_step = 0
                self._look_again()

    def _poll_delay(self) -> float:
        """Until the next look for work when nothing announces it: the next step of the linger
        (which ends with the claim that marks the runner waiting), else the poll interval."""
        step = self._linger_step
        if step is None:
            settle = self._settle_step
            if settle is None or settle >= len(_SETTLE_STEPS):
                self._settle_step = None
                return self.settings.poll_interval
            self._settle_step = settle + 1
            return _SETTLE_STEPS[settle]
        if step >= len(_LINGER_STEPS):
            self._linger_step = None  # that was the last look: this claim may mark it waiting
            return 0.0
        self._linger_step = step + 1
        return _LINGER_STEPS[step]

    def _plain_request(self, runner_id: int, free: int) -> claimer.Claim:
        """The claim of everything this runner serves but the paused and limited queues. (When
        it serves nothing else it still asks for its queues, which the database refuses: that
        look is how it learns they were resumed.)"""
        held = self._paused | self._limited
        synchronous = self.settings.synchronous_claims
        can_wait = self.settings.listen and self._linger_step is None
        if self.queues is None:
            return claimer.Claim.serving(runner_id, free, None, sorted(held) or None,
                                         can_wait=can_wait, synchronous=synchronous)
        plain = tuple(q for q in self.queues if q not in held)
        return claimer.Claim.serving(runner_id, free, plain or self.queues, None,
                                     can_wait=can_wait, synchronous=synchronous)

    def _claim_limited(self, now: float, runner_id: int, free: int, notified: bool) -> int:
        """Claim from each limited queue this runner serves, at most what its limits allow;
        returns the slots still free. A queue whose limit held jobs back is tried again
        soon (its running jobs end, its rate window moves), an empty one at the poll."""
        for queue in sorted(self._limited):
            if free <= 0:
                break
            if self.queues is not None and queue not in self.queues:
                continue
            if not notified and now < self._limited_next.get(queue, 0.0):
                continue
            request = claimer.Claim.limited(runner_id, free, queue,
                                            synchronous=self.settings.synchronous_claims)
            result = self._claim_round_trip(request)
            if result is None:
                return 0
            claimed = self._take(result)
            if claimed is None:
                return 0
            free -= claimed
            if claimed == request.limit:
                delay = 0.0  # every free slot filled: more as slots free
                self._limited_delay.pop(queue, None)
            elif result.more:
                delay = self._limited_delay.get(queue, _LIMITED_RETRY_FIRST)
                self._limited_delay[queue] = min(delay * 2, _LIMITED_RETRY_MAX)
            else:
                delay = self.settings.poll_interval  # empty: an enqueue's NOTIFY or the poll
                self._limited_delay.pop(queue, None)
            self._limited_next[queue] = time.monotonic() + delay
        return free

    def _claim_round_trip(self, request: claimer.Claim) -> claimer.Claimed | None:
        self._claim_in_flight = True
        started = time.monotonic()
        try:
            result = claimer.claim(self._conn, self._queries, request, self.settings.max_args_bytes)
        except Exception as exc:
            self._claim_in_flight = False
            with self._lock:
                self._notified = True
                self._claim_in_doubt = True  # it may have committed, its reply lost
            self._failed_round_trip(exc)
            return None
        self._claim_in_flight = False
        self._outage.ok("runner")
        self._backoff.reset()
        self.stats.claims += 1
        self.app.hooks.emit("claim", jobs=len(result.jobs) + len(result.failures), limit=request.limit,
                            seconds=time.monotonic() - started)
        if result.paused is not None and result.limited is not None:
            self._saw_controls(result.paused, result.limited)
        return result

    def _saw_controls(self, paused: frozenset[str], limited: frozenset[str]) -> None:
        if paused != self._paused or limited != self._limited:
            for queue in sorted(paused - self._paused):
                logger.info("queue %r is paused: not claiming its jobs", queue)
            for queue in sorted(self._paused - paused):
                logger.info("queue %r was resumed", queue)
            self._paused, self._limited = paused, limited
            self._look_again()  # claim again with the new picture

    def _take(self, result: claimer.Claimed) -> int | None:
        """Start what a claim returned; how many attempts it claimed (None: the runner was
        declared dead, or its lease ran out during the claim)."""
        if not result.alive:
            self.lease.lost(self.lease.runner_id, "declared dead (seen by a claim)")
            return None
        self.outbox.note_locked(result.locked_ids)
        for failure in result.failures:
            logger.error("job %s: %s", failure.job_id, failure.reason, extra={"job_id": failure.job_id})
            self.outbox.put(failure)
        jobs = result.jobs
        if jobs and not self.lease.may_claim():
            # The process stalled during the claim (paused, say): others may have taken over.
            # Start nothing; the lease check sorts out who owns these jobs.
            logger.warning("claimed %d job(s) but the lease expired meanwhile: not starting them",
                           len(jobs))
            return None
        for job in jobs:
            self.stats.claimed += 1
            self.slots.start(job, current_runner=lambda: self.lease.runner_id)
        return len(jobs) + len(result.failures)

    def _failed_round_trip(self, exc: BaseException) -> None:
        self._conn.discard()
        if is_connection_error(exc):
            self._outage.failed("runner", exc)
        elif not is_transient(exc):
            logger.error("claiming and writing outcomes failed: %s", db._one_line(exc),
                         exc_info=exc)
        self._retry_at = time.monotonic() + self._backoff.next()

    def _account(self, result: completer.Written) -> None:
        """From the completer: which outcomes were written, which were fenced out."""
        stats = self.stats
        for outcome in result.fenced_out:
            stats.fenced_out += 1
            logger.warning("outcome %r of job %s attempt %s not written: the attempt was "
                           "reclaimed meanwhile (fenced)", outcome.status, outcome.job_id,
                           outcome.attempt, extra={"job_id": outcome.job_id,
                                                   "job_attempt": outcome.attempt})
        for outcome in result.written:
            if outcome.status == "succeeded":
                stats.succeeded += 1
            elif outcome.status == "queued":
                stats.retried += 1
            elif outcome.status == "failed":
                stats.failed += 1
            else:
                stats.cancelled += 1
        if self.app.hooks.worker_listeners and (result.written or result.fenced_out):
            # After the commit: a listener may tell others the outcome is there to be read.
            self.app.hooks.emit(
                "outcomes_written",
                written=[(o.job_id, o.attempt, o.status) for o in result.written],
                fenced_out=[(o.job_id, o.attempt) for o in result.fenced_out])
        self._wake.set()

    # ----------------------------------------------------------- maintenance

    def _maintenance_hint(self, rank: int, pass_age: float | None) -> None:
        """From the heartbeat: this runner's rank among live runners, the last pass's age."""
        self.maintenance.schedule.hint(rank, pass_age)
        if self.maintenance.due():
            self._wake.set()

    def _maintain(self) -> None:
        try:
            result = self.maintenance.run_once(self._conn, self.lease.runner_id)
        except Exception as exc:
            # Maintenance never dies on a database error: log, reconnect, try next interval.
            self._conn.discard()
            if is_connection_error(exc):
                self._outage.failed("runner", exc)
            elif not is_transient(exc):
                logger.error("maintenance pass failed: %s", db._one_line(exc), exc_info=exc)
            return
        if result.elected:
            self.stats.passes += 1

    # --------------------------------------------------------- reconciling

    def _may_hold_unknown(self) -> bool:
        """Whether the database may assign this runner attempts it does not know (or runs
        something whose cancellation may be asked for): it runs anything, or a claim's reply
        may have been lost since the last look."""
        with self._lock:
            doubt, self._claim_in_doubt = self._claim_in_doubt, False
        return doubt or self.slots.busy() > 0 or self._claim_in_flight

    def _known_attempts(self) -> set[tuple[int, int]] | None:
        """What this runner runs or has outcomes for; None while a claim is in flight."""
        if self._claim_in_flight:
            return None
        known = self.slots.keys() | self.outbox.keys()
        return None if self._claim_in_flight else known

    def _release_later(self, runner_id: int, keys: list[tuple[int, int]]) -> None:
        with self._lock:
            self._to_release.append((runner_id, keys))
        self._wake.set()

    def _release_unknown(self) -> None:
        """Hand back attempts the database assigns to this runner and it never ran."""
        with self._lock:
            batches, self._to_release = self._to_release, []
        for runner_id, keys in batches:
            known = self.slots.keys() | self.outbox.keys()
            keys = [k for k in keys if k not in known]
            if not keys or runner_id != self.lease.runner_id:
                continue
            try:
                rows = self._conn.run(self._queries.raw("job_release"), {
                    "runner_id": runner_id, "ids": [k[0] for k in keys],
                    "attempts": [k[1] for k in keys]})
            except Exception as exc:
                self._conn.discard()
                logger.warning("could not hand back %d attempt(s) this runner does not hold: %s",
                               len(keys), db._one_line(exc))
                continue
            self.stats.released += len(rows)
            if rows:
                logger.warning("handed back job(s) %s: the database assigned them to runner %s, "
                               "which was not running them (a claim's reply was lost)",
                               ", ".join(str(r[0]) for r in rows), runner_id)

    # ---------------------------------------------------------------- lease

    def _lease_changed(self, change: leases.Change) -> None:
        """Log and act on lease transitions (called on the thread that caused them)."""
        if change.state == leases.EXPIRED:
            logger.warning("runner %s: %s; its lease has expired: not claiming until the database "
                           "confirms it is still alive", change.runner_id, change.reason)
        elif change.state == leases.VALID and change.reason == "renewed":
            with self._lock:
                self._notified = True
            logger.warning("runner %s reached the database again after %.1f s: still alive, resuming",
                           change.runner_id, change.silent)
        elif change.state == leases.LOST and self._ending == change.runner_id:
            # Our own stop: its NOTIFY makes the heartbeat look at the row we just ended.
            logger.debug("runner %s: row ended by this stop (%s)", change.runner_id, change.reason)
        elif change.state == leases.LOST:
            abandoned = self.slots.abandon(change.runner_id)
            logger.error("runner %s lost its lease (%s): stopped claiming; abandoning %d running "
                         "attempt(s)", change.runner_id, change.reason, abandoned)
        self._wake.set()

    def _recover_lease(self) -> None:
        """Write what finished, retire the old runner row, register again."""
        lost = self.lease.lost_incarnation
        assert lost is not None
        old_id, reason = lost
        if self.outbox.backlog:
            # The completer writes the outcomes already finished first (fenced); come back.
            self._retry_at = time.monotonic() + 0.05
            return
        try:
            handed = self._end_runner(old_id, "dead", f"lost its lease ({reason})",
                                      f"handed back: runner {old_id} lost its lease ({reason})")
            if self._stop_requested:
                return
            new_id = self._register()
        except Exception as exc:
            self._conn.discard()
            if not is_connection_error(exc):
                logger.error("could not retire runner %s: %s", old_id, db._one_line(exc), exc_info=exc)
            self._outage.failed("runner", exc)
            self._retry_at = time.monotonic() + self._backoff.next()
            return
        self._outage.ok("runner")
        logger.warning("runner %s retired (%d job(s) it still held handed back); registered again as "
                       "runner %s", old_id, handed, new_id)

    def _end_runner(self, runner_id: int, state: str, reason: str, hand_back_reason: str) -> int:
        """Mark the runner stopped or dead and hand back what still runs under it, in one
        transaction (the runner row is locked first, then job rows, as the reaper does)."""
        conn = self._conn.get()
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)",
                         (str(int(self.settings.runner_dead_after * 250)),))
            self._conn.run(self._queries.raw("runner_end"),
                           {"runner_id": runner_id, "state": state, "reason": reason})
            rows = self._conn.run(self._queries.raw("runner_hand_back"),
                                  {"runner_id": runner_id, "reason": hand_back_reason})
        return len(rows)

    # ------------------------------------------------------------- stopping

    def _begin_drain(self) -> None:
        self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout

    def _drained(self) -> bool:
        if self._drain_deadline is None:
            # The stop was asked for during this pass of the loop: the drain starts now.
            self._begin_drain()
        if self.slots.busy() == 0 and self.outbox.backlog == 0:
            return True
        # Out of time (or told twice): what still runs is handed back, and what waits to be
        # written gets a bounded last chance, in _shutdown.
        return self._hand_back_now or time.monotonic() >= (self._drain_deadline or 0)

    def _shutdown(self) -> int:
        unfinished = self.slots.abandon()
        flush_for = max(self.settings.runner_dead_after, 5.0)
        deadline = time.monotonic() + flush_for
        if not self._completer.flush(timeout=flush_for):
            logger.error("%d outcome(s) not written yet: the database is unavailable",
                         self.outbox.backlog)
        lost = self.lease.lost_incarnation
        runner_id = self.lease.runner_id or (lost[0] if lost else None)
        code = EXIT_OK
        if runner_id is not None:
            # The heartbeat keeps running until the stop is written: a slow stop must not be
            # taken for a death (and its jobs counted as crashes).
            code = self._stop_runner(runner_id, unfinished, deadline)
        self.control.stop()
        self._completer.stop(timeout=0)
        self.slots.shutdown()
        self._conn.discard()
        s = self.stats
        logger.info("runner %s stopped: %d claimed in %d claims, %d succeeded, %d retried, %d failed, "
                    "%d cancelled, %d timed out, %d outcomes fenced out, %d handed back at stop, "
                    "%d unknown attempts handed back, %d maintenance passes", runner_id, s.claimed,
                    s.claims, s.succeeded, s.retried, s.failed, s.cancelled, self.slots.timed_out,
                    s.fenced_out, s.handed_back, s.released, s.passes)
        return code

    def _stop_runner(self, runner_id: int, unfinished: int, deadline: float) -> int:
        """Hand back what still runs and mark the runner stopped, once every finished
        outcome is written (else finished jobs would be handed back and run again)."""
        reason = "handed back: worker stopping" if unfinished else "stopped"
        backoff = Backoff()
        while True:
            if self.outbox.backlog and not self._completer.flush(timeout=1.0) \
                    and time.monotonic() < deadline:
                continue
            try:
                self._ending = runner_id
                self.stats.handed_back = self._end_runner(runner_id, "stopped", reason,
                                                          "handed back: worker stopping")
                if self.stats.handed_back:
                    logger.warning("handed %d unfinished job(s) back to the queue",
                                   self.stats.handed_back)
                return EXIT_OK
            except Exception as exc:
                self._conn.discard()
                if time.monotonic() >= deadline:
                    logger.error("could not mark runner %s stopped (%s); its unfinished job(s) go back "
                                 "to the queue when the reaper declares it dead", runner_id,
                                 db._one_line(exc) if str(exc) else type(exc).__name__)
                    return EXIT_HAND_BACK_FAILED
                time.sleep(backoff.next())


class _StartupWait:
    """While the database cannot be reached at start: one line at growing intervals, so the
    operator sees the worker is waiting (and for what), not hung."""

    def __init__(self) -> None:
        self._backoff = Backoff(first=0.5, maximum=10.0)
        self._since = time.monotonic()
        self._next_line = 0.0
        self._gap = 5.0

    def failed(self, exc: BaseException, where: str) -> None:
        now = time.monotonic()
        if now >= self._next_line:
            logger.warning("waiting for the database at %s (%s); still trying after %.0f s",
                           where, db._one_line(exc), now - self._since)
            self._next_line = now + self._gap
            self._gap = min(self._gap * 2, 300.0)

    def delay(self) -> float:
        return self._backoff.next()
