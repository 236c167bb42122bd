"""The queues and schedules pages: what each reads and hands to its template (the same
contract as :mod:`pgqueue.dashboard.views`: a page function takes a ``Page`` and returns its
template's context, or raises ``HTTPError``).

* ``/queues``: every queue with jobs or under control (the overview's counts, shared with it
  through the cache) with its controls (paused by whom and why, limits), and the latest
  control changes of every queue (``queue_events``).
* ``/queues/<name>``: one queue: its counts and controls, its throughput over the last hour,
  and its whole recent history of pauses, resumes and limit changes.
* ``/schedules``: the schedules, a page of them by id (``schedule_status``).
* ``/schedules/<id>``: one schedule: its definition, cursor, last run and its job, the next
  ticks, and its latest events (fired, missed, skipped for overlap, triggered, ...).

The controls themselves (buttons and what they post to) are :mod:`.controls`'.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .. import cron as crons, errors
from . import views
from .web import HTTPError

if TYPE_CHECKING:
    from .views import Page

#: Control changes the queues page lists, over every queue.
QUEUE_EVENTS = 50
#: Control changes one queue's page lists.
QUEUE_HISTORY = 200
SCHEDULES_PAGE = 200
SCHEDULE_EVENTS = 200
UPCOMING_TICKS = 5


# ---------------------------------------------------------------------- queues

def queues(page: "Page") -> dict[str, Any]:
    counts = views.queue_counts(page)
    events = page.read("dashboard_queue_events", {"queue": None, "limit": QUEUE_EVENTS})
    return {"queues": counts, "events": events, "cap": views.COUNT_CAP, "events_limit": QUEUE_EVENTS}


def find_queue(page: "Page", name: str, *, history: int = QUEUE_HISTORY) -> dict[str, Any]:
    """A queue's row of the counts (None when it holds no job and has no row of controls) and
    its latest ``history`` control changes; 404 when it has neither."""
    counts = views.queue_counts(page)
    row = next((q for q in counts.rows if q["queue"] == name), None)
    events = page.read("dashboard_queue_events", {"queue": name, "limit": history})
    if counts.ok and events.ok and row is None and not events.rows:
        raise HTTPError(404, f"there is no queue {name!r}: no job is in it and it was never paused or limited")
    return {"queue": row, "counts": counts, "events": events}


def queue(page: "Page", queue: str) -> dict[str, Any]:
    found = find_queue(page, queue)
    throughput = page.read("dashboard_throughput", {"minutes": 60, "queue": queue})
    return {**found, "name": queue, "throughput": throughput, "chart": views.chart(throughput.rows),
            "cap": views.COUNT_CAP, "history_limit": QUEUE_HISTORY}


# ------------------------------------------------------------------- schedules

def schedules(page: "Page") -> dict[str, Any]:
    after = page.request.arg("after")
    listing = page.read("dashboard_schedules", {"after": after, "limit": SCHEDULES_PAGE + 1})
    rows = listing.rows[:SCHEDULES_PAGE]
    more = len(listing.rows) > SCHEDULES_PAGE
    return {"listing": listing, "rows": rows, "after": after,
            "next_after": rows[-1]["id"] if more and rows else None, "page_size": SCHEDULES_PAGE}


def find_schedule(page: "Page", schedule_id: str) -> dict[str, Any] | None:
    """The schedule's row (None when it could not be read); 404 when there is none."""
    found = page.read("dashboard_schedule", {"id": schedule_id})
    if found.ok and found.first is None:
        raise HTTPError(404, f"there is no schedule {schedule_id!r}")
    return found.first


def schedule(page: "Page", schedule: str) -> dict[str, Any]:
    row = find_schedule(page, schedule)
    runs_only = page.request.arg("events") == "runs"
    events = page.read("dashboard_schedule_events", {"id": schedule, "runs": runs_only,
                                                      "limit": SCHEDULE_EVENTS})
    context: dict[str, Any] = {"schedule": row, "schedule_id": schedule, "events": events,
                               "runs_only": runs_only, "events_limit": SCHEDULE_EVENTS,
                               "upcoming": [], "upcoming_problem": None}
    if row is not None:
        try:
            context["upcoming"] = upcoming(row)
        except errors.ConfigurationError as exc:
            context["upcoming_problem"] = str(exc)
    return context


def upcoming(row: dict[str, Any], count: int = UPCOMING_TICKS) -> list[dt.datetime]:
    """The schedule's next ``count`` ticks: from its cursor while it fires; from now while it is
    paused or orphaned (a resume, or a runner declaring it again, starts after now)."""
    schedule = crons.cron(row["cron"], row["timezone"])
    live = not row["paused"] and not row["orphaned"]
    start = row["next_run_at"] if live else max(row["next_run_at"], row["now"])
    first = schedule.first_at_or_after(start) if live else schedule.next_after(start)
    return [first, *schedule.upcoming(first, count - 1)]
