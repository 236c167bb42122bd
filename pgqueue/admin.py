"""Operator functions behind ``pgqueue status``, ``jobs``, ``job``, ``retry`` and ``prune``.

Each returns plain data (dicts and lists); the CLI only formats it. They read the
documented views (``queue_stats``, ``runner_health``, ``job_timeline``), so what the
CLI shows is exactly what SQL users see.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import errors
from .jobs import STATUSES
from .settings import parse_duration

if TYPE_CHECKING:
    from .app import App


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


# A transaction holding the xmin horizon longer than this is worth a warning.
HORIZON_WARNING = 60.0
DEAD_ROWS_WARNING = 100_000


def status_report(app: "App", *, recent_seconds: float = 3600.0) -> dict[str, Any]:
    queries = app.queries
    health = app.database.fetch(queries.admin_health)[0]
    return {
        "queues": app.database.fetch(queries.admin_queue_stats),
        "runners": app.database.fetch(queries.admin_runners, {"recent_seconds": recent_seconds}),
        "health": health,
        "warnings": health_warnings(health),
    }


def health_warnings(health: dict[str, Any]) -> list[str]:
    """What an operator should know about the queue's health, in plain sentences."""
    warnings = []
    held = health.get("horizon_held_for")
    if held is not None and held.total_seconds() > HORIZON_WARNING:
        who = ""
        if health.get("oldest_transaction_pid"):
            query = " ".join(str(health.get("oldest_transaction_query") or "").split())[:80]
            who = (f" (oldest: pid {health['oldest_transaction_pid']}, "
                   f"{health.get('oldest_transaction_state')}, {query!r})")
        warnings.append(
            f"a transaction has held the xmin horizon for {held.total_seconds() / 60:.1f} min{who}: "
            "dead job rows cannot be cleaned up until it ends, and claims slow down; end it "
            "(or move long reports to a replica)")
    if health.get("slots_holding_horizon"):
        warnings.append(f"{health['slots_holding_horizon']} replication slot(s) hold the xmin horizon: "
                        "an inactive slot keeps dead job rows forever; drop it if it is unused")
    if health.get("autovacuum") is False:
        warnings.append("autovacuum is off on this server: the queue tables' dead rows are never "
                        "cleaned up by themselves; turn it on, or VACUUM the pgqueue tables regularly")
    dead = health.get("jobs_dead_rows") or 0
    if dead > DEAD_ROWS_WARNING and dead > (health.get("jobs_live_rows") or 0):
        warnings.append(f"the jobs table holds {dead:,} dead rows (more than live ones): vacuum is not "
                        "keeping up")
    if health.get("running_on_dead_runners"):
        warnings.append(f"{health['running_on_dead_runners']} job(s) are running on runners that look "
                        "dead: the maintenance pass re-queues them (is any worker alive?)")
    return warnings


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
        "queue": queue, "status": status, "task": _known_task(app, task), "since": since_at,
        "limit": limit,
    })


def job_detail(app: "App", job_id: int) -> dict[str, Any]:
    info = app.job(job_id).info()
    info["timeline"] = app.database.fetch(app.queries.admin_job_timeline, {"id": job_id})
    return info


def retry_job(app: "App", job_id: int, *, reason: str = "retried by user") -> None:
    rows = _retry(app, ids=[job_id], task=None, queue=None, batch=1, reason=reason, after=0,
                  until=job_id)
    if rows and rows[0]["retried"]:
        return
    info = app.job(job_id).info()  # raises JobNotFound
    if info["status"] != "failed":
        raise errors.JobStateError(f"job {job_id} has status {info['status']}: only failed jobs can be retried")
    raise errors.JobStateError(
        f"job {job_id} has key {info['key']!r}, which an unfinished job holds now: it stays failed"
    )


@dataclass(frozen=True)
class RetryResult:
    retried: int
    kept: list[dict[str, Any]]  # failed jobs left failed: {"id", "key"}, their key is held


def retry_failed(app: "App", *, task: str | None = None, queue: str | None = None,
                 reason: str = "retried by user", batch: int = 1000,
                 progress: Callable[[int], None] | None = None) -> RetryResult:
    """Retry every failed job (matching task and queue) that exists now, in batches of short
    transactions, walking ids upwards from a bound fixed at the start (a job that fails again
    at once is not met twice). A job whose key an unfinished job holds (or another failed job
    of the same key, retried first) stays failed and is reported."""
    task = _known_task(app, task)
    until = app.database.fetch(app.queries.job_max_id)[0]["id"]
    after, total, kept = 0, 0, []
    while after < until:
        rows = _retry(app, ids=None, task=task, queue=queue, batch=batch, reason=reason,
                      after=after, until=until)
        if not rows:
            break
        total += sum(1 for r in rows if r["retried"])
        kept += [{"id": r["id"], "key": r["key"]} for r in rows if not r["retried"]]
        after = rows[-1]["id"]
        if progress:
            progress(total)
    return RetryResult(total, kept)


def _retry(app: "App", *, ids: list[int] | None, task: str | None, queue: str | None,
           batch: int, reason: str, after: int, until: int) -> list[dict[str, Any]]:
    params = {"ids": ids, "task": task, "queue": queue, "batch": batch, "reason": reason,
              "after": after, "until": until}
    try:
        return app.database.fetch(app.queries.job_retry, params)
    except Exception as exc:
        # An enqueue of one of the keys raced the batch: retry its jobs one at a time, so
        # that only the job whose key was taken stays failed.
        if getattr(exc, "sqlstate", None) != "23505" or (ids is not None and len(ids) == 1):
            if getattr(exc, "sqlstate", None) == "23505":
                return [{"id": ids[0], "key": None, "retried": False}]  # type: ignore[index]
            raise
    candidates = app.database.fetch(app.queries.admin_jobs, {
        "queue": queue, "status": "failed", "task": task, "since": None, "limit": batch})
    rows: list[dict[str, Any]] = []
    for job in sorted((c for c in candidates if after < c["id"] <= until), key=lambda c: c["id"]):
        rows += _retry(app, ids=[job["id"]], task=None, queue=None, batch=1, reason=reason,
                       after=job["id"] - 1, until=job["id"])
    return rows


def _known_task(app: "App", task: str | None) -> str | None:
    """A task filter, checked: "no task named 'add'; did you mean 'tasks.add'?"."""
    if task is None or task in app.tasks:
        return task
    rows = app.database.fetch(app.queries.admin_task_names, {"limit": 1000})
    names = {r["task"] for r in rows} | set(app.tasks)
    if task in names:
        return task
    import difflib

    suffix = [n for n in names if n.rsplit(".", 1)[-1] == task]
    close = suffix or difflib.get_close_matches(task, list(names), n=1)
    hint = (f"; did you mean {close[0]!r}? (task names are module.function)" if close
            else "; task names are module.function, e.g. 'tasks.add'")
    raise errors.ConfigurationError(f"no task named {task!r}{hint}")


@dataclass(frozen=True)
class PruneResult:
    jobs: int
    runners: int
    waiters: int
    seconds: float


def prune(app: "App", *, older_than: float, batch: int = 1000,
          progress: Callable[[int], None] | None = None) -> PruneResult:
    """Delete jobs that finished more than ``older_than`` seconds ago, with their events, in
    batches of short transactions, oldest first; then runners, waiters and throughput rows
    gone for as long."""
    if older_than < 0:
        raise errors.ConfigurationError("--older-than must not be negative")
    started = time.monotonic()
    queries = app.queries
    now = app.database.fetch(queries.admin_now)[0]["now"]
    before = now - dt.timedelta(seconds=older_than)
    total = 0
    for status in ("succeeded", "failed", "cancelled"):
        while True:
            row = app.database.fetch(queries.job_prune_batch,
                                     {"status": status, "before": before, "batch": batch})[0]
            total += row["deleted"]
            if progress and row["deleted"]:
                progress(total)
            if row["deleted"] < batch:
                break
    others = app.database.fetch(queries.runner_prune, {"before": before})[0]
    return PruneResult(total, others["runners"], others["waiters"], time.monotonic() - started)
