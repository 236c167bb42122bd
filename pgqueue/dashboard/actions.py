"""Operator actions from the dashboard: retry, cancel, delete, one job or a selection (the
controls of queues and schedules are :mod:`.controls`', which share the guards and the way
through a confirmation).

Off unless the dashboard was made with ``actions=True`` (``pgqueue dashboard
--allow-actions``). Each action:

* is a POST from one of the dashboard's own pages (see ``web.same_origin``), allowed by the
  ``authorize(environ, action)`` hook when one is given;
* names at most :data:`BULK_LIMIT` jobs;
* is confirmed first: the first POST shows what would change (how many of the chosen jobs
  are in a state the action applies to), and only the confirming POST acts;
* is one statement (``sql/queries/dashboard.sql``: ``dashboard_retry``, ``dashboard_cancel``,
  ``dashboard_delete``) that writes a ``job_events`` row per job whose reason names the
  dashboard, the user and the address it came from;
* redirects back to the page it came from (filters kept), which shows what was done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .web import HTTPError, Request

if TYPE_CHECKING:
    from .reader import Session

BULK_LIMIT = 1000


@dataclass(frozen=True)
class Action:
    name: str
    query: str
    verb: str  # for the reason: "retried by ..."
    title: str
    applies_to: tuple[str, ...]
    effect: str


ACTIONS = {
    "retry": Action("retry", "dashboard_retry", "retried", "Retry",
                    ("failed", "cancelled"),
                    "go back to the queue with a fresh failure budget (a job whose key an "
                    "unfinished job holds stays as it is)"),
    "cancel": Action("cancel", "dashboard_cancel", "cancelled", "Cancel",
                     ("queued", "running"),
                     "are cancelled (queued ones at once; running ones are asked to stop)"),
    "delete": Action("delete", "dashboard_delete", "deleted", "Delete",
                     ("succeeded", "failed", "cancelled"),
                     "are deleted with their history (a 'deleted' event records who did it)"),
}


def chosen_ids(request: Request) -> list[int]:
    raw = request.form.get("ids", [])
    ids: list[int] = []
    for value in raw:
        for part in value.replace(",", " ").split():
            if not part.isdigit():
                raise HTTPError(400, f"bad job id {part!r}")
            ids.append(int(part))
    unique = sorted(set(ids))
    if not unique:
        raise HTTPError(400, "no job chosen: tick the jobs to act on")
    if len(unique) > BULK_LIMIT:
        raise HTTPError(400, f"{len(unique):,} jobs chosen: one action takes at most "
                             f"{BULK_LIMIT:,} jobs")
    return unique


def printable(text: str, limit: int) -> str:
    """``text`` with every character that is not printable (NUL, newlines, escapes) replaced,
    cut to ``limit`` characters: what the history may hold of something a request said."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


def actor(request: Request) -> str:
    """Who acts: the user (``REMOTE_USER``) and the address the request came from."""
    who = request.user or "anonymous"
    where = f" from {request.remote_addr}" if request.remote_addr else ""
    return printable(f"{who}{where}", 250)


def reason(action: Action, request: Request) -> str:
    return printable(f"dashboard: {action.verb} by {actor(request)}", 300)


@dataclass(frozen=True)
class Notice:
    """What the page an action redirected to says about it (``?done=...``)."""

    text: str
    link: str | None = None  # a path under the mount point
    link_text: str | None = None


def notice(done: str | None) -> Notice | None:
    """The notice of ``done=retried:2:3`` (verb, changed, chosen); None for anything else."""
    match = re.fullmatch(r"([a-z]+):(\d+):(\d+)", done or "")
    if not match or match.group(1) not in {a.verb for a in ACTIONS.values()}:
        return None
    changed, chosen = int(match.group(2)), int(match.group(3))
    return Notice(f"{changed:,} of {chosen:,} chosen job{'' if chosen == 1 else 's'} {match.group(1)}.")


def preview(session: "Session", action: Action, ids: list[int]) -> dict[str, Any]:
    """What the confirmation page shows: the chosen jobs by status, and how many the action
    applies to."""
    panel = session.read("dashboard_count_ids", {"ids": ids})
    if not panel.ok:
        raise HTTPError(503, f"could not count the chosen jobs: {panel.problem}")
    by_status = {r["status"]: r["jobs"] for r in panel.rows}
    applies = sum(n for s, n in by_status.items() if s in action.applies_to)
    missing = len(ids) - sum(by_status.values())
    return {"by_status": by_status, "applies": applies, "missing": missing}


def perform(session: "Session", action: Action, ids: list[int], why: str) -> int:
    rows = session.write(action.query, {"ids": ids, "reason": why})
    return len(rows)
