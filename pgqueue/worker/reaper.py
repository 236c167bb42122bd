"""The reaper: declares silent runners dead and gives their running jobs to the living.

Every runner runs it on a tick (half the heartbeat interval, at most 1 s). Each pass is
one transaction that first takes ``pg_try_advisory_xact_lock`` on the schema's reaper key;
the runner that gets it runs ``reaper_run`` in the same transaction, the others do
nothing this tick. So:

* two reapers can never act at once (the lock), and a reaper that dies mid-way
  leaves nothing half done (one transaction: all or nothing, lock released with it);
* no cron and no extra process: recovery needs only one live runner, and happens
  within the dead runner's ``dead_after`` (recorded in its row) plus one tick of its last
  heartbeat; a lock holder that stalls mid-transaction loses its session to
  ``idle_in_transaction_session_timeout``, and with it the lock;
* the lock is transaction-level, so it cannot leak behind a pooler.

The lock holder also promotes jobs scheduled for later whose time is near into the
claim index (``job_promote``), in batches, so claims never walk a large schedule.

What the reaper does, in one statement: runners whose heartbeat is older than their
own ``dead_after`` become ``dead``; every ``running`` job of a runner that is not
alive goes back to ``queued`` with ``crashes + 1`` (or to ``failed`` once
``max_crashes`` is reached), each with an event naming the dead runner; waiting
runners are notified. The same statement, given a runner id, retires that runner: a
runner that learnt it was declared dead uses it on itself, and what it still held
goes back without counting a crash (the runner is alive; its job did not kill it).

Not handled: a runner that heartbeats but whose tasks hang forever (that is the
task ``timeout``'s job).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from .. import sqlfiles
from .connections import OutageLog, Service, ServiceConnection, is_connection_error

logger = logging.getLogger(__name__)


PROMOTE_BATCH = 10_000


@dataclass(frozen=True)
class ReapResult:
    held_lock: bool
    dead_runners: tuple[int, ...] = ()
    requeued: int = 0
    failed: int = 0
    promoted: int = 0


def reap(conn: psycopg.Connection, queries: sqlfiles.Queries, *, max_crashes: int,
         runner_id: int | None = None, reason: str | None = None) -> ReapResult:
    """One reaper pass in one transaction, then a promotion of scheduled jobs in another
    (so neither can hold up the other). With ``runner_id``: retire that runner only."""
    class_id, object_id = sqlfiles.advisory_key(queries.schema, "reaper")
    with conn.transaction():
        if runner_id is None:
            held = conn.execute(queries.reaper_lock, {"class_id": class_id, "object_id": object_id}).fetchone()[0]
            if not held:
                return ReapResult(held_lock=False)
        row = conn.execute(queries.reaper_run, {
            "runner_id": runner_id, "reason": reason, "max_crashes": max_crashes,
        }).fetchone()
    promoted = 0
    if runner_id is None:
        promoted = conn.execute(queries.job_promote, {"batch": PROMOTE_BATCH}).fetchone()[0]
    dead, requeued, failed = tuple(row[0]), row[1], row[2]
    return ReapResult(True, dead, requeued, failed, promoted)


class Reaper(Service):
    name = "reaper"

    def __init__(self, *, connection: ServiceConnection, queries: sqlfiles.Queries, interval: float,
                 max_crashes: int, outage: OutageLog) -> None:
        super().__init__(connection)
        self._queries = queries
        self.interval = interval
        self.max_crashes = max_crashes
        self._outage = outage

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def run_once(self) -> ReapResult | None:
        try:
            result = reap(self._conn.get(), self._queries, max_crashes=self.max_crashes)
        except Exception as exc:
            # Maintenance never dies on a database error: log, reconnect, try next tick.
            if not is_connection_error(exc):
                logger.exception("reaper pass failed")
            self._outage.failed("reaper", exc)
            self._conn.discard()
            return None
        self._outage.ok("reaper")
        if result.dead_runners:
            logger.warning("declared runner%s %s dead; re-queued %d job%s, failed %d (crash budget spent)",
                           "s" if len(result.dead_runners) > 1 else "",
                           ", ".join(map(str, result.dead_runners)), result.requeued,
                           "" if result.requeued == 1 else "s", result.failed)
        elif result.requeued or result.failed:
            logger.warning("re-queued %d job%s of runners no longer alive, failed %d",
                           result.requeued, "" if result.requeued == 1 else "s", result.failed)
        return result
