"""Retention: a step of the maintenance pass that deletes finished jobs (with their events) once
they are older than their state's retention setting, and schedule events as old as the
failed jobs' retention, so a busy system's tables stop growing without anyone writing a cron.

Cheap by construction. Each batch is one short transaction of ``job_prune_batch`` (at most
``BATCH`` jobs of one state, oldest first through ``jobs_finished_idx``, rows someone holds
skipped); a run spends at most ``BUDGET`` seconds (the claim loop of the runner that runs the
pass waits meanwhile) and, with rows left, the next runs ``BEHIND_EVERY`` seconds later: at
most a tenth of one runner's time while retention catches up. With nothing left to delete,
it looks again only every ``EVERY`` seconds. A job whose period-scoped key is still in
its period is kept (it keeps its key taken). ``pgqueue prune`` runs the same statement by hand.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .. import sqlfiles
from ..settings import Settings
from .connections import ServiceConnection

logger = logging.getLogger(__name__)

BATCH = 500
BUDGET = 0.1
BEHIND_EVERY = 1.0
EVERY = 10.0


@dataclass(frozen=True)
class PruneResult:
    jobs: int = 0
    schedule_events: int = 0
    batches: int = 0
    more: bool = False  # the budget ran out with rows left to delete


class Retention:
    """Deletes what is past retention, in short batches, within a time budget per pass."""

    def __init__(self, *, queries: sqlfiles.Queries, retain: Mapping[str, float | None],
                 schedule_events: float | None, batch: int = BATCH, budget: float = BUDGET,
                 every: float = EVERY) -> None:
        self._queries = queries
        self.retain = {status: seconds for status, seconds in retain.items() if seconds is not None}
        self.schedule_events = schedule_events
        self.batch = batch
        self.budget = budget
        self.every = every
        self._next = 0.0

    @classmethod
    def from_settings(cls, queries: sqlfiles.Queries, settings: Settings) -> "Retention":
        return cls(queries=queries, retain={"succeeded": settings.retain_succeeded,
                                            "cancelled": settings.retain_cancelled,
                                            "failed": settings.retain_failed},
                   schedule_events=settings.retain_failed)

    def due(self, now: float | None = None) -> bool:
        return bool(self.retain or self.schedule_events) and \
            (time.monotonic() if now is None else now) >= self._next

    def run_once(self, conn: ServiceConnection, at: dt.datetime, *,
                 timeouts: Mapping[str, Any] | None = None) -> PruneResult:
        """Delete what finished before ``at`` (the pass's database time) minus its retention."""
        deadline = time.monotonic() + self.budget
        jobs = events = batches = 0
        more = False
        work = [("job_prune_batch", {"status": status, "before": at - dt.timedelta(seconds=seconds)})
                for status, seconds in self.retain.items()]
        if self.schedule_events is not None:
            work.append(("schedule_event_prune_batch",
                         {"before": at - dt.timedelta(seconds=self.schedule_events)}))
        pg = conn.get()
        for name, params in work:
            while True:
                if time.monotonic() >= deadline:
                    more = True
                    break
                with pg.transaction():
                    if timeouts:
                        conn.run(self._queries.raw("maintenance_begin"), timeouts)
                    rows = conn.run(self._queries.raw(name), {**params, "batch": self.batch})
                deleted = int(rows[0][0])
                batches += 1
                if name == "job_prune_batch":
                    jobs += deleted
                else:
                    events += deleted
                if deleted < self.batch:
                    break
            if more:
                break
        self._next = time.monotonic() + (BEHIND_EVERY if more else self.every)
        result = PruneResult(jobs, events, batches, more)
        if jobs or events:
            logger.info("retention: deleted %d finished job(s) and %d schedule event(s) in %d batch(es)%s",
                        jobs, events, batches, "; more next pass" if more else "")
        return result
