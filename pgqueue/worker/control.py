"""The control connection: heartbeats, LISTEN for new work, and the runner's liveness lock.

One thread, one connection, which touches only the ``runners`` table on its hot path (the
heartbeat), so anything that holds a lock on ``jobs`` (VACUUM FULL, REINDEX, an ALTER queued
behind a long reader, ``LOCK TABLE``) cannot stop heartbeats, and a global stall of the jobs
table never makes live runners look dead.

Each beat:

1. ``runner_heartbeat``: ``heartbeat_at = now()`` where the row is still ``running`` (the
   database's clock). No row back: the runner was declared dead; the lease is lost. The reply
   also gives the runner's rank among live runners and the age of the last maintenance pass,
   which the claim loop uses to decide whether it runs the next pass.
2. ``runner_attempts``, in its own short transaction with a lock timeout (it reads ``jobs``,
   so it may wait behind a lock there, but never longer than a fraction of a beat): the
   attempts the database assigns to this runner. One the runner does not know, seen in two
   beats with a claim completed in between, was claimed by a statement whose reply was lost:
   the claim loop hands it back. Those with a cancellation request are passed to the slots.

Between beats the thread waits in LISTEN on "<schema>.jobs" (when listening is on): a
notification naming a served queue wakes the claim loop at once. A notification on
"<schema>.runners" (a runner died or stopped) makes it beat at once, to learn its new rank. When the connection drops,
it reconnects with backoff, takes the liveness lock again (before anything else), beats at
once, and wakes the claim loop, because work may have arrived while nobody listened.

The liveness lock (a session-level shared advisory lock keyed by the runner id) is held by
this connection and by the claim loop's: PostgreSQL releases it the moment the process's
sessions end, which is how the reaper tells a dead process from a slow one. Not used behind
a pooler (see ``connections.py``).

The loop never dies: an error in a beat is logged and the next beat comes on time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import psycopg
from psycopg import sql as pgsql

from .. import sqlfiles
from .connections import Backoff, OutageLog, Service, ServiceConnection, is_connection_error, is_transient
from .lease import Lease

logger = logging.getLogger(__name__)

Key = tuple[int, int]
# An idle runner reads what the database says it runs every this many beats (else at each).
IDLE_LOOK_EVERY = 15


class Control(Service):
    name = "control"

    def __init__(self, *, connection: ServiceConnection, queries: sqlfiles.Queries, lease: Lease,
                 interval: float, listen: bool, queues: tuple[str, ...] | None, outage: OutageLog,
                 use_liveness: Callable[[], bool],
                 on_work: Callable[[], None],
                 on_reconnect: Callable[[], None] | None = None,
                 on_cancel_requested: Callable[[list[int]], None],
                 known_attempts: Callable[[], set[Key] | None],
                 may_hold_unknown: Callable[[], bool] = lambda: True,
                 claims_done: Callable[[], int],
                 on_maintenance_hint: Callable[[int, float | None], None],
                 release: Callable[[int, list[Key]], None],
                 emit: Callable[..., None] = lambda name, **fields: None) -> None:
        super().__init__(connection)
        connection.on_connect = self._connected
        self._queries = queries
        self._lease = lease
        self.interval = interval
        self.listen = listen
        self.channel = sqlfiles.channel(queries.schema, "jobs")
        self.runners_channel = sqlfiles.channel(queries.schema, "runners")
        self._queues = frozenset(queues) if queues else None
        self._outage = outage
        self._use_liveness = use_liveness
        self._on_work = on_work
        self._on_reconnect = on_reconnect or on_work
        self._on_cancel_requested = on_cancel_requested
        self._known_attempts = known_attempts
        self._may_hold_unknown = may_hold_unknown
        self._claims_done = claims_done
        self._on_maintenance_hint = on_maintenance_hint
        self._release = release
        self._emit = emit
        self._lock_class = sqlfiles.runner_lock_class(queries.schema)
        self.listening = threading.Event()
        self._beat_now = threading.Event()
        # Attempts the database says this runner runs and it does not know:
        # key -> (beats seen, claims completed when first seen).
        self._unknown: dict[Key, tuple[int, int]] = {}
        self._unknown_for: int | None = None
        self._beats_since_look = IDLE_LOOK_EVERY

    # ------------------------------------------------------------ connection

    def _connected(self, service: ServiceConnection, conn: psycopg.Connection) -> None:
        """On every new connection: the liveness lock first, then LISTEN."""
        self.hold_liveness(self._lease.runner_id)
        if self.listen:
            conn.execute(pgsql.SQL("LISTEN {}; LISTEN {}").format(
                pgsql.Identifier(self.channel), pgsql.Identifier(self.runners_channel)))

    def hold_liveness(self, runner_id: int | None) -> None:
        """Make this connection's session hold ``runner_id``'s liveness lock (only)."""
        conn = self._conn
        if conn.locked_runner == runner_id or not (conn.direct and self._use_liveness()):
            return
        if conn.locked_runner is not None:
            conn.run(self._queries.raw("runner_unlock"),
                     {"lock_class": self._lock_class, "runner_id": conn.locked_runner})
            conn.locked_runner = None
        if runner_id is not None:
            row = conn.run_one(self._queries.raw("runner_lock"),
                               {"lock_class": self._lock_class, "runner_id": runner_id})
            if row and row[0]:
                conn.locked_runner = runner_id

    def beat_soon(self) -> None:
        """Beat now (a new incarnation registered: take its lock and beat for it)."""
        self._beat_now.set()

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        # At most a beat between reconnect attempts: a server back from a restart shorter than
        # the lease hears from this runner before the lease runs out.
        backoff = Backoff(first=min(0.25, self.interval), maximum=max(self.interval, 0.25))
        failures = 0
        while not self._stop.is_set():
            try:
                conn = self._conn.get()
                if self.listen:
                    self.listening.set()
                self._outage.ok("control")
                # Work may have arrived while nobody listened; and the server answers again,
                # so the claim loop reconnects now (not at the end of its backoff): its session
                # holds the liveness lock too, and while this one is the only holder, a cut
                # of it would make a live process look gone.
                self._on_reconnect()
                next_beat = 0.0  # beat at once on a new connection
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now >= next_beat or self._beat_now.is_set():
                        self._beat_now.clear()
                        started = now
                        if self.run_once():
                            backoff.reset()
                            failures = 0
                        next_beat = started + self.interval
                        continue
                    wait = min(next_beat - now, 0.5)
                    if self.listen:
                        # One notification at a time, each handled in full: leaving the generator
                        # early would drop the notifications it had already read.
                        for note in conn.notifies(timeout=wait, stop_after=1):
                            if note.channel == self.runners_channel:
                                # A runner died or stopped: the ranks changed; beat to learn ours.
                                self._beat_now.set()
                            elif self._queues is None or note.payload in self._queues:
                                logger.debug("notification: work in queue %r", note.payload)
                                self._on_work()
                    else:
                        self._beat_now.wait(wait)
                    if conn.closed or conn.broken:
                        raise psycopg.OperationalError("the control connection was closed")
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                if is_connection_error(exc):
                    self._outage.failed("control", exc)
                else:
                    logger.exception("the control loop failed; reconnecting")
                self._conn.discard()
                self._lease.check()
                # The first reconnect comes at once: this connection holds the liveness lock,
                # and a cut connection (pg_terminate_backend) must not look like a dead process.
                failures += 1
                if failures > 1:
                    self._stop.wait(backoff.next())

    def run_once(self) -> bool:
        """One heartbeat, then the look at what the database says this runner runs. False
        when the beat did not get through or found the runner dead. Connection errors
        propagate (the loop reconnects)."""
        self._lease.check()
        runner_id = self._lease.runner_id
        if runner_id is None:
            return True
        self.hold_liveness(runner_id)
        sent = self._lease.beat_sent()
        try:
            row = self._conn.run_one(self._queries.raw("runner_heartbeat"), {"runner_id": runner_id})
        except Exception as exc:
            self._emit("heartbeat", ok=False)
            if is_connection_error(exc):
                raise
            self._conn.discard()
            if not is_transient(exc):
                logger.exception("heartbeat of runner %s failed", runner_id)
            return False
        if row is None:
            self._emit("heartbeat", ok=False)
            self._lease.beat_found_dead(runner_id)
            return False
        self._lease.beat_ok(runner_id, sent)
        self._emit("heartbeat", ok=True)
        self._on_maintenance_hint(int(row[1]), row[2])
        try:
            self._reconcile(runner_id)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            # A lock on jobs (the lock timeout fired), say: the beat went through, which is
            # what matters; the next beat looks again.
            self._conn.discard()
            logger.debug("could not read runner %s's attempts: %s", runner_id, exc)
        return True

    # ----------------------------------------------------------- reconciling

    def _reconcile(self, runner_id: int) -> None:
        self._beats_since_look += 1
        if not self._unknown and not self._may_hold_unknown() and self._beats_since_look < IDLE_LOOK_EVERY:
            # Nothing runs here and no claim was left in doubt: only a row changed by hand could
            # assign this runner an attempt it does not know; an idle runner looks now and then.
            return
        self._beats_since_look = 0
        conn = self._conn.get()
        if self._conn.direct and self._conn.lock_timeout:
            # The session's lock_timeout bounds the wait behind a lock on jobs.
            rows = self._conn.run(self._queries.raw("runner_attempts"), {"runner_id": runner_id})
        else:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)",
                             (str(max(int(self.interval * 250), 100)),))
                rows = self._conn.run(self._queries.raw("runner_attempts"), {"runner_id": runner_id})
        cancel = [r[0] for r in rows if r[2]]
        if cancel:
            self._on_cancel_requested(cancel)
        known = self._known_attempts()
        if known is None:
            return  # a claim is in flight: what it claims is not known yet
        claims = self._claims_done()
        if self._unknown_for != runner_id:
            self._unknown, self._unknown_for = {}, runner_id
        previous = self._unknown
        self._unknown = {}
        for job_id, attempt, _ in rows:
            key = (job_id, attempt)
            if key in known:
                continue
            beats, first_claims = previous.get(key, (0, claims))
            self._unknown[key] = (beats + 1, first_claims)
        stale = [key for key, (beats, first_claims) in self._unknown.items()
                 if beats >= 2 and (claims > first_claims or beats >= 4)]
        if stale:
            # The claim loop hands them back on its own connection (a write to jobs).
            self._release(runner_id, stale)
            for key in stale:
                self._unknown.pop(key, None)
