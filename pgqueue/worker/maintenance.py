"""The maintenance pass: reaping dead runners and promoting scheduled jobs, once per interval
for the whole cluster, run by whichever runner wins the election.

Election. The ``maintenance`` table has one row. A pass starts by updating it where the last
pass is older than (most of) ``maintenance_interval``, taking its row lock with SKIP LOCKED: at
most one runner wins each interval, the others get no row back and never wait. Only the two
oldest live runners try every interval (the heartbeat tells each runner its rank); the others
try only when a heartbeat says no pass ran for three intervals (both were killed, say). So
the cost does not grow with the number of runners.

A pass, in one transaction whose timeouts are local to it (safe behind a transaction-mode
pooler; a pass that stalls mid-way loses its transaction, and the row lock with it):

1. ``maintenance_elect``: wins the interval. If the previous pass is older than half the lease
   (every heartbeat may have stopped with it: a lock on a table, a failover, a paused VM), this
   pass starts a new unbroken run (``resumed_at``): no heartbeat counts as older than that, so
   a global stall never declares healthy runners dead. It also notes a crash restart or a
   failover (the unlogged ``server_epoch`` row is gone).
2. ``reaper_declare``: runners whose lease ran out (no heartbeat for longer than their own
   ``dead_after``) are declared dead ("no heartbeat"); so are runners whose process is gone:
   no session holds their liveness lock although they took it on this server incarnation,
   and their last heartbeat is older than one interval ("process gone"). The second rule is
   what reruns a SIGKILLed worker's jobs within a second; the first covers hosts that vanish
   and partitions (the sessions of a partitioned host live on in the server for a long time).
3. ``reaper_requeue``: every running job of a runner declared dead goes back to ``queued`` with
   a crash counted, or to ``failed`` once that runner's ``max_crashes`` is reached, with an event
   naming the runner and the reason; idle runners are woken in the same statement. Rows that
   someone else holds are skipped, never waited for: the sweep takes them later.
4. Every ``sweep_every`` seconds, ``reaper_sweep``: running jobs whose runner is not alive for
   any other reason (rows written by hand, a stop that could not hand back).

Then, in its own transaction (a failing reap must not stop scheduled jobs from running),
``job_promote``: queued jobs whose ``run_at`` has come move into the claim indexes, and runners
waiting on their queues are woken; jobs with a lock key take a free slot of their lock or wait
blocked for one (``promote_locked``). With the sweep, ``lock_sweep``: locks that have waiters
and a free slot give it (the backstop for a release lost with its connection). Then, each in
short transactions of its own, the due ticks of cron schedules fire (``firing.py``) and, every
few seconds, finished jobs past retention are deleted (``retention.py``).

Not handled here: a runner that heartbeats but whose tasks hang (the task ``timeout``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .. import sqlfiles
from .connections import ServiceConnection

if TYPE_CHECKING:
    from .firing import Firing
    from .retention import Retention

logger = logging.getLogger(__name__)

PROMOTE_BATCH = 10_000
# Jobs with a lock are gated one by one (each under its key's advisory lock).
PROMOTE_LOCKED_BATCH = 1_000
SWEEP_EVERY = 10.0
TOP_RANKS = 2
STALE_PASSES = 2.0


@dataclass(frozen=True)
class PassResult:
    elected: bool
    at: object = None  # the pass's time (database clock)
    dead_runners: tuple[int, ...] = ()
    reasons: tuple[str, ...] = ()
    requeued: int = 0
    failed: int = 0
    cancelled: int = 0
    swept: int = 0
    promoted: int = 0
    fired: int = 0  # ticks of cron schedules
    pruned: int = 0  # finished jobs past retention


@dataclass
class Schedule:
    """When this runner tries the next pass."""

    interval: float
    rank: int | None = None
    pass_age: float | None = None
    next_attempt: float = field(default=0.0)

    def hint(self, rank: int, pass_age: float | None) -> None:
        self.rank, self.pass_age = rank, pass_age

    def due(self, now: float) -> bool:
        if self.rank is None or self.rank < TOP_RANKS:
            return now >= self.next_attempt
        # Not one of the two that run the passes: only when passes stopped happening.
        return self.pass_age is not None and self.pass_age > STALE_PASSES * self.interval \
            and now >= self.next_attempt

    def attempted(self, now: float) -> None:
        self.next_attempt = now + self.interval
        if self.rank is not None and self.rank >= TOP_RANKS:
            self.pass_age = None  # wait for the next heartbeat's word before trying again


class Maintenance:
    """Runs passes on the claim loop's connection (they work on the jobs table)."""

    def __init__(self, *, queries: sqlfiles.Queries, interval: float, dead_after: float,
                 max_crashes: int, process_checks: bool, statement_timeout: float,
                 emit: Callable[..., None] = lambda name, **fields: None,
                 firing: "Firing | None" = None, retention: "Retention | None" = None) -> None:
        self._emit = emit
        self.firing = firing
        self.retention = retention
        self._queries = queries
        self.interval = interval
        self.dead_after = dead_after
        self.max_crashes = max_crashes
        self.process_checks = process_checks
        self.statement_timeout = statement_timeout
        self.schedule = Schedule(interval)
        self._lock_class = sqlfiles.runner_lock_class(queries.schema)

    def due(self, now: float | None = None) -> bool:
        return self.schedule.due(time.monotonic() if now is None else now)

    def run_once(self, conn: ServiceConnection, runner_id: int | None) -> PassResult:
        """One attempt: elect, reap, promote. Database errors propagate (the caller logs them
        and tries again next interval)."""
        self.schedule.attempted(time.monotonic())
        q = self._queries
        pg = conn.get()
        timeouts = {"timeout_ms": int(self.statement_timeout * 1000),
                    "lock_timeout_ms": int(max(self.statement_timeout / 4, 0.1) * 1000)}
        with pg.transaction():
            conn.run(q.raw("maintenance_begin"), timeouts)
            elected = conn.run_one(q.raw("maintenance_elect"), {
                "interval": self.interval, "gap": self.dead_after / 2, "runner_id": runner_id,
                "sweep_every": SWEEP_EVERY})
            if elected is None:
                return PassResult(False)
            _passes, sweep, server_changed, at = elected
            if server_changed:
                logger.warning("the database server restarted after a crash or failed over: every "
                               "runner gets a full lease to reconnect before any is declared dead")
            dead = conn.run(q.raw("reaper_declare"), {
                "lock_class": self._lock_class, "process_checks": self.process_checks,
                "fresh": self.interval, "max_crashes": self.max_crashes})
            counts: dict[str, int] = {}
            if dead:
                for status, jobs in conn.run(q.raw("reaper_requeue"), {
                        "runner_ids": [d[0] for d in dead], "reasons": [d[1] for d in dead],
                        "max_crashes": [d[2] for d in dead]}):
                    counts[status] = counts.get(status, 0) + jobs
            swept = 0
            if sweep:
                for status, jobs in conn.run(q.raw("reaper_sweep"), {"max_crashes": self.max_crashes}):
                    counts[status] = counts.get(status, 0) + jobs
                    swept += jobs
        with pg.transaction():
            conn.run(q.raw("maintenance_begin"), timeouts)
            promoted = conn.run_one(q.raw("job_promote"), {"batch": PROMOTE_BATCH})[0]
            promoted += conn.run_one(q.raw("job_promote_locked"), {"batch": PROMOTE_LOCKED_BATCH})[0]
            if sweep:
                conn.run(q.raw("lock_sweep"), {})
        fired = self.firing.run_once(conn, runner_id, timeouts=timeouts).fired if self.firing else 0
        pruned = self.retention.run_once(conn, at, timeouts=timeouts).jobs \
            if self.retention and self.retention.due() else 0
        result = PassResult(True, at, tuple(d[0] for d in dead), tuple(d[1] for d in dead),
                            counts.get("queued", 0), counts.get("failed", 0),
                            counts.get("cancelled", 0), swept, promoted, fired, pruned)
        _log(result)
        for runner_id, reason, _max, silent, _told in dead:
            self._emit("runner_dead", runner_id=runner_id, reason=reason, silent_for=silent,
                       process_gone=reason.startswith("process gone"))
        if result.requeued or result.failed or result.swept:
            self._emit("jobs_recovered", requeued=result.requeued, failed=result.failed)
        return result


def _log(result: PassResult) -> None:
    if result.dead_runners:
        for runner_id, reason in zip(result.dead_runners, result.reasons):
            logger.warning("declared runner %s dead: %s", runner_id, reason)
        logger.warning("re-queued %d job%s of dead runners, failed %d (crash budget spent)",
                       result.requeued, "" if result.requeued == 1 else "s", result.failed)
    elif result.swept:
        logger.warning("re-queued %d job%s of runners no longer alive", result.swept,
                       "" if result.swept == 1 else "s")
