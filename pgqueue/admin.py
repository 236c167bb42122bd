"""Operator functions behind ``pgqueue status``, ``jobs``, ``job``, ``retry`` and ``prune``.

Each returns plain data (dicts and lists); the CLI only formats it. They read the
documented views (``queue_stats``, ``runner_health``, ``job_timeline``), so what the
CLI shows is exactly what SQL users see.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import errors
from .jobs import STATUSES

if TYPE_CHECKING:
    from .app import App

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|weeks?)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in '90', '30s', '15m', '2h', '7d', '1w'."""
    match = _DURATION.match(text or "")
    if not match:
        raise errors.ConfigurationError(
            f"{text!r} is not a duration: write a number of seconds, or a number with a unit "
            "(s, m, h, d, w), e.g. 30s, 15m, 2h, 7d or 1w"
        )
    unit = (match.group(2) or "s")[0]
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """A point in time: a duration ago ('2h') or an ISO date/time ('2026-11-28T10:00')."""
    try:
        return now - dt.timedelta(seconds=parse_duration(text))
    except errors.ConfigurationError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise errors.ConfigurationError(
            f"--since {text!r} is neither a duration (e.g. 2h, 7d) nor an ISO date/time "
            "(e.g. 2026-11-28T10:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)


def status_report(app: "App", *, recent_seconds: float = 3600.0) -> dict[str, Any]:
    queries = app.queries
    return {
        "queues": app.database.fetch(queries.admin_queue_stats),
        "runners": app.database.fetch(queries.admin_runners, {"recent_seconds": recent_seconds}),
    }


def list_jobs(app: "App", *, queue: str | None = None, status: str | None = None,
              task: str | None = None, since: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise errors.ConfigurationError(f"--status {status!r} is not a job status; use one of {', '.join(STATUSES)}")
    if limit < 1:
        raise errors.ConfigurationError(f"--limit must be at least 1, not {limit}")
    since_at = None
    if since is not None:
        now = app.database.fetch(app.queries.admin_now)[0]["now"]
        since_at = parse_since(since, now)
    return app.database.fetch(app.queries.admin_jobs, {
        "queue": queue, "status": status, "task": task, "since": since_at, "limit": limit,
    })


def job_detail(app: "App", job_id: int) -> dict[str, Any]:
    info = app.job(job_id).info()
    info["timeline"] = app.database.fetch(app.queries.admin_job_timeline, {"id": job_id})
    return info


def retry_job(app: "App", job_id: int, *, reason: str = "retried by user") -> None:
    rows = _retry(app, ids=[job_id], task=None, queue=None, batch=1, reason=reason)
    if rows:
        return
    info = app.job(job_id).info()  # raises JobNotFound
    if info["status"] != "failed":
        raise errors.JobStateError(f"job {job_id} has status {info['status']}: only failed jobs can be retried")
    raise errors.JobStateError(
        f"job {job_id} has key {info['key']!r}, which an unfinished job holds now: it stays failed"
    )


def retry_failed(app: "App", *, task: str | None = None, queue: str | None = None,
                 reason: str = "retried by user", batch: int = 1000,
                 progress: Callable[[int], None] | None = None) -> int:
    """Retry every failed job (matching task and queue), in batches; returns how many."""
    total = 0
    while True:
        rows = _retry(app, ids=None, task=task, queue=queue, batch=batch, reason=reason)
        total += len(rows)
        if progress and rows:
            progress(total)
        if len(rows) < batch:
            return total


def _retry(app: "App", *, ids: list[int] | None, task: str | None, queue: str | None,
           batch: int, reason: str) -> list[dict[str, Any]]:
    return app.database.fetch(app.queries.job_retry, {
        "ids": ids, "task": task, "queue": queue, "batch": batch, "reason": reason,
    })


@dataclass(frozen=True)
class PruneResult:
    jobs: int
    runners: int
    waiters: int
    seconds: float


def prune(app: "App", *, older_than: float, batch: int = 1000,
          progress: Callable[[int], None] | None = None) -> PruneResult:
    """Delete jobs that finished more than ``older_than`` seconds ago, with their events, in
    batches of short transactions; then runners and waiters gone for as long."""
    if older_than < 0:
        raise errors.ConfigurationError("--older-than must not be negative")
    started = time.monotonic()
    queries = app.queries
    now = app.database.fetch(queries.admin_now)[0]["now"]
    before = now - dt.timedelta(seconds=older_than)
    after, total = 0, 0
    while True:
        row = app.database.fetch(queries.job_prune_batch, {"after": after, "before": before, "batch": batch})[0]
        if not row["deleted"]:
            break
        total += row["deleted"]
        after = row["last_id"]
        if progress:
            progress(total)
    others = app.database.fetch(queries.runner_prune, {"before": before})[0]
    return PruneResult(total, others["runners"], others["waiters"], time.monotonic() - started)
