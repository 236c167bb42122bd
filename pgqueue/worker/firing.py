"""Firing the due ticks of cron schedules: a step of the maintenance pass.

Leaderless and exactly once per tick. Whichever runner runs the pass reads the schedules whose
cursor (``next_run_at``) has come, by the database's clock (``schedule_due``: one index probe
when none has), plans each with ``pgqueue.cron.plan`` (which ticks fire, which are missed and
why, where the cursor goes) and fires them all in one statement (``schedule_fire``) that, for
each schedule, moves the cursor by compare-and-swap on the value it read and, only where that
succeeded, enqueues the jobs (through ``enqueue_job``) and records every tick in
``schedule_events``. So:

* two runners that plan the same tick cannot both fire it: the second's swap finds the cursor
  moved (after waiting for the first's row lock) and does nothing;
* a runner killed mid-fire, or a database that restarts, loses the whole statement, cursor
  included: the next pass fires the tick;
* no host clock is read: the plan is made with the database's now.

Failure modes: a statement error that is not about the connection (a stored value this code
cannot use: an expression or time zone it does not know, a queue name enqueue_job refuses)
is narrowed down to its schedule by firing the batch's schedules one by one; that schedule is
paused, with the error as the reason (``pgqueue schedules`` shows it), so passes stop trying
and the others keep firing. Connection errors propagate to the runner, which reconnects and
tries at the next pass; the cursor did not move, so nothing is lost.

Not handled here: ticks while no runner runs at all (there is nobody to fire them; the
catch-up policy decides at the next pass).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .. import cron as crons, errors, sqlfiles
from .connections import ServiceConnection, is_connection_error, is_transient

logger = logging.getLogger(__name__)

#: Due schedules read (and fired in one statement) at a time.
DUE_BATCH = 500
#: A pass goes on reading due schedules for at most this long (1,000 schedules due at one
#: tick fire in one pass).
BUDGET = 1.0


@dataclass(frozen=True)
class FireResult:
    schedules: int = 0  # schedules whose cursor this pass moved
    fired: int = 0
    skipped: int = 0  # overlap
    missed: int = 0
    orphaned: int = 0
    paused: int = 0  # paused because they could not be fired

    def __add__(self, other: "FireResult") -> "FireResult":
        return FireResult(*(a + b for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple[int, ...]:
        return (self.schedules, self.fired, self.skipped, self.missed, self.orphaned, self.paused)


@dataclass
class _Planned:
    id: str
    expected: dt.datetime
    orphan: bool
    plan: crons.Plan


class Firing:
    """Fires due ticks on the pass's connection; ``run_once`` is one pass's worth."""

    def __init__(self, *, queries: sqlfiles.Queries, batch: int = DUE_BATCH, budget: float = BUDGET) -> None:
        self._queries = queries
        self.batch = batch
        self.budget = budget

    def run_once(self, conn: ServiceConnection, runner_id: int | None, *,
                 timeouts: Mapping[str, Any] | None = None, now: dt.datetime | None = None) -> FireResult:
        """Fire what is due (``now``: the database's clock, unless a test pins it)."""
        deadline = time.monotonic() + self.budget
        total = FireResult()
        while True:
            rows = conn.run(self._queries.raw("schedule_due"), {"now": now, "limit": self.batch})
            if not rows:
                return total
            planned, broken = _plan(rows)
            result = FireResult()
            for schedule_id, reason in broken:
                result += self._pause(conn, schedule_id, reason)
            if planned:
                result += self._fire(conn, planned, runner_id, timeouts)
            total += result
            if len(rows) < self.batch or time.monotonic() >= deadline or not (result.schedules or result.paused):
                return total

    def _fire(self, conn: ServiceConnection, planned: list[_Planned], runner_id: int | None,
              timeouts: Mapping[str, Any] | None) -> FireResult:
        pg = conn.get()
        try:
            with pg.transaction():
                if timeouts:
                    conn.run(self._queries.raw("maintenance_begin"), timeouts)
                rows = conn.run(self._queries.raw("schedule_fire"), _params(planned, runner_id))
        except Exception as exc:
            if is_connection_error(exc) or is_transient(exc):
                raise
            if len(planned) > 1:
                # Which schedule is it? Each on its own: the others fire.
                result = FireResult()
                for one in planned:
                    result += self._fire(conn, [one], runner_id, timeouts)
                return result
            return self._pause(conn, planned[0].id, f"firing failed: {exc}")
        return _report(planned, rows)

    def _pause(self, conn: ServiceConnection, schedule_id: str, reason: str) -> FireResult:
        reason = " ".join(reason.split())[:500]
        logger.error("schedule %r cannot be fired, pausing it: %s (fix it, then `pgqueue schedules "
                     "resume %s`)", schedule_id, reason, schedule_id)
        conn.run(self._queries.raw("schedule_pause"), {"id": schedule_id, "reason": reason, "by": "pgqueue"})
        return FireResult(paused=1)


def _plan(rows: Sequence[Sequence[Any]]) -> tuple[list[_Planned], list[tuple[str, str]]]:
    planned, broken = [], []
    for schedule_id, expression, timezone, cursor, catch_up, within, resumed_at, declared, now in rows:
        if not declared:
            planned.append(_Planned(schedule_id, cursor, True, crons.Plan(next_run_at=cursor)))
            continue
        try:
            schedule = crons.cron(expression, timezone)
            plan = crons.plan(schedule, cursor, now, catch_up=catch_up, catch_up_within=within,
                              resumed_at=resumed_at)
        except errors.ConfigurationError as exc:
            broken.append((schedule_id, f"its ticks cannot be computed: {exc}"))
            continue
        planned.append(_Planned(schedule_id, cursor, False, plan))
    return planned, broken


def _params(planned: list[_Planned], runner_id: int | None) -> dict[str, Any]:
    fire = [(p.id, tick, late, reason) for p in planned for tick, late, reason in p.plan.fire]
    missed = [(p.id, tick, reason) for p in planned for tick, reason in p.plan.missed]
    return {
        "ids": [p.id for p in planned], "expected": [p.expected for p in planned],
        "next_run_at": [p.plan.next_run_at for p in planned],
        "last_tick": [max((t for t, _, _ in p.plan.fire), default=None) for p in planned],
        "orphan": [p.orphan for p in planned],
        "fire_ids": [f[0] for f in fire], "fire_ticks": [f[1] for f in fire],
        "fire_late": [f[2] for f in fire], "fire_reasons": [f[3] for f in fire],
        "missed_ids": [m[0] for m in missed], "missed_ticks": [m[1] for m in missed],
        "missed_reasons": [m[2] for m in missed],
        "runner_id": runner_id,
    }


def _report(planned: list[_Planned], rows: Sequence[Sequence[Any]]) -> FireResult:
    plans = {p.id: p for p in planned}
    result = FireResult()
    for schedule_id, fired, skipped, missed, orphaned in rows:
        result += FireResult(1, fired, skipped, missed, orphaned)
        if orphaned:
            logger.warning("schedule %r: its tick came and no live runner declares it any more: it "
                           "stops firing (orphaned) until a runner declares it again", schedule_id)
            continue
        plan = plans[schedule_id].plan
        if missed:
            logger.warning("schedule %r: %d tick(s) missed, from %s (%s)", schedule_id, missed,
                           crons.iso(plan.missed[0][0]), plan.missed[0][1])
        if skipped:
            logger.info("schedule %r: %d tick(s) skipped: its previous job is still queued or running "
                        "(overlap skip)", schedule_id, skipped)
        for tick, late, reason in plan.fire:
            if late:
                logger.info("schedule %r: fired the tick at %s, %s", schedule_id, crons.iso(tick), reason)
            else:
                logger.debug("schedule %r: fired the tick at %s", schedule_id, crons.iso(tick))
    return result
