"""The dashboard's pages: what each one reads and hands to its template.

Each page function takes a :class:`Page` (the request, its reading session, the clock) and
returns the template's context, or raises :class:`~pgqueue.dashboard.web.HTTPError`. Reads go
through ``page.read(name, params)``: a panel that times out or fails comes back empty with its
``problem`` set, and the template says so in place of the panel; the page itself still renders.

Every read is bounded; the limits are the constants below. The queues and schedules pages are
:mod:`pgqueue.dashboard.control_pages`'; every page is added with
:meth:`pgqueue.dashboard.Dashboard.add_page`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import timeline as timeline_layout
from .reader import Panel, Session
from .web import HTTPError, Request

if TYPE_CHECKING:
    from .wsgi import Dashboard

PAGE_SIZE = 50
#: Rows a filtered job list looks at per page when no index serves the filter.
SCAN_WINDOW = 10_000
#: Counts of queued, scheduled and running jobs stop here (shown as "100,000+").
COUNT_CAP = 100_000
#: (queue, priority) pairs the overview's loose index scan visits at most.
MAX_HEADS = 500
#: List values above this size (args + kwargs, bytes) are not sent to the list page.
LIST_ARGS_BYTES = 4096
DETAIL_VALUE_BYTES = 256 * 1024
JOB_EVENTS = 1000
RUNNERS_LIMIT = 200
RUNNER_JOBS = 200
RUNNER_EVENTS = 200
RUNNER_WINDOW = dt.timedelta(minutes=15)
TIMELINE_DEFAULT = dt.timedelta(minutes=15)
TIMELINE_MAX = dt.timedelta(hours=24)
#: Events the timeline reads at most: enough for its bars (a start, an end, some retries each).
TIMELINE_EVENTS = 4_000
TIMELINE_BARS = 1_000
TIMELINE_LANES = 100
RECENT_CHOICES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
WINDOW_CHOICES = ("1m", "5m", "15m", "1h", "6h", "24h")
JOB_STATUSES = ("queued", "scheduled", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
INT_MAX = 2_147_483_647

_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class Page:
    dashboard: "Dashboard"
    request: Request
    session: Session
    now: dt.datetime
    problems: list[str] = field(default_factory=list)

    def read(self, name: str, params: dict[str, Any] | None = None) -> Panel:
        panel = self.session.read(name, params)
        if panel.error and panel.error not in self.problems:
            self.problems.append(panel.error)
        return panel

    def cached(self, name: str, params: dict[str, Any]) -> Panel:
        """A read shared by every request for the cache's lifetime (the overview's aggregates)."""
        key = (name, tuple(sorted(params.items())))
        panel = self.dashboard.cache.get(key, lambda: self.session.read(name, params),
                                         keep=lambda p: p.ok)
        if panel.error and panel.error not in self.problems:
            self.problems.append(panel.error)
        return panel

    def url(self, path: str, **params: Any) -> str:
        return self.request.url(path, **params)


# ------------------------------------------------------------------- overview

def queue_counts(page: Page) -> Panel:
    return page.cached("dashboard_queues", {"cap": COUNT_CAP, "max_heads": MAX_HEADS})


def overview(page: Page) -> dict[str, Any]:
    queues = queue_counts(page)
    runners = page.cached("dashboard_runner_summary", {"recent_seconds": 3600, "cap": COUNT_CAP})
    throughput = page.cached("dashboard_throughput", {"minutes": 60, "queue": None})
    orphans = page.cached("dashboard_orphans", {"cap": COUNT_CAP}) \
        if runners.ok and runners.first and runners.first["orphaned_jobs"] else Panel()
    totals = {k: sum(q[k] for q in queues.rows) for k in
              ("ready", "scheduled", "running", "succeeded_1h", "failed_1h", "retried_1h",
               "crashed_1h", "succeeded_24h", "failed_24h")}
    return {
        "queues": queues, "totals": totals, "runners": runners, "orphans": orphans,
        "throughput": throughput, "chart": chart(throughput.rows), "cap": COUNT_CAP,
    }


@dataclass
class ChartBar:
    x: float
    y: float
    height: float
    kind: str
    title: str


def chart(rows: list[dict[str, Any]], *, width: float = 600.0, height: float = 120.0) -> dict[str, Any]:
    """A stacked column per minute: succeeded, retried, failed, crashed (SVG user units)."""
    kinds = ("succeeded", "retried", "failed", "crashed")
    peak = max((sum(r[k] for k in kinds) for r in rows), default=0)
    bars: list[ChartBar] = []
    step = width / max(len(rows), 1)
    scale = (height - 14) / peak if peak else 0.0
    for index, row in enumerate(rows):
        y = height - 12
        minute = row["minute"].astimezone(dt.timezone.utc).strftime("%H:%M")
        for kind in kinds:
            value = row[kind]
            if not value:
                continue
            h = max(value * scale, 1.0)
            y -= h
            bars.append(ChartBar(index * step + 0.5, y, h, kind, f"{minute} UTC: {value:,} {kind}"))
    labels = []
    if rows:
        for index, anchor in ((0, "start"), (len(rows) // 2, "middle"), (len(rows) - 1, "end")):
            x = {"start": index * step, "middle": index * step + step / 2, "end": (index + 1) * step}[anchor]
            labels.append((x, anchor, rows[index]["minute"].astimezone(dt.timezone.utc).strftime("%H:%M")))
    total = {k: sum(r[k] for r in rows) for k in kinds}
    return {"bars": bars, "width": width, "height": height, "step": max(step - 1, 1.0),
            "peak": peak, "labels": labels, "total": total}


# ----------------------------------------------------------------------- jobs

@dataclass
class JobFilter:
    status: str | None = None
    queue: str | None = None
    task: str | None = None
    args_text: str | None = None
    args: str | None = None  # JSON text for args @> ...
    kwargs: str | None = None  # JSON text for kwargs @> ...
    cursor: str | None = None
    error: str | None = None

    @property
    def narrowing(self) -> bool:
        """Filters no index serves: the list looks at a bounded window of rows."""
        return bool(self.task or self.args or self.kwargs
                    or (self.queue and self.status != "queued"))

    def params(self) -> dict[str, Any]:
        return {"status": self.status, "queue": self.queue, "task": self.task,
                "args": self.args_text}


def parse_filter(request: Request, *, args_allowed: bool, form: bool = False) -> JobFilter:
    """The job filter of the query string (or, with ``form``, of a POSTed form)."""
    def value(name: str) -> str | None:
        if not form:
            return request.arg(name)
        text = (request.form_value(name) or "").strip()
        return text or None

    f = JobFilter(status=value("status"), queue=value("queue"), task=value("task"),
                  args_text=value("args"), cursor=None if form else value("cursor"))
    if f.status is not None and f.status not in JOB_STATUSES:
        f.error = f"unknown status {f.status!r}: use one of {', '.join(JOB_STATUSES)}"
        f.status = None
    if f.args_text is not None:
        if not args_allowed:
            f.error = "filtering by arguments is off: this dashboard redacts arguments"
            f.args_text = None
        else:
            try:
                value = json.loads(f.args_text)
            except ValueError as exc:
                f.error = f"the arguments filter is not JSON ({exc}): e.g. [42] or {{\"user\": 7}}"
                f.args_text = None
            else:
                if isinstance(value, dict):
                    f.kwargs = json.dumps(value)
                elif isinstance(value, list):
                    f.args = json.dumps(value)
                else:
                    f.args = json.dumps([value])
    return f


def _cursor_parts(cursor: str, count: int) -> list[str]:
    parts = cursor.split("~")
    if len(parts) != count:
        raise HTTPError(400, f"bad cursor {cursor!r}")
    return parts


def _time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, f"bad time {text!r}: use ISO 8601, e.g. 2026-12-01T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _int(text: str, what: str = "number") -> int:
    try:
        return int(text)
    except ValueError:
        raise HTTPError(400, f"bad {what} {text!r}") from None


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def list_jobs(page: Page, f: JobFilter, *, size: int = PAGE_SIZE) -> dict[str, Any]:
    """A page of ``size`` jobs in the order of the index that serves the status asked for."""
    base = {"queue": f.queue, "task": f.task, "args": f.args, "kwargs": f.kwargs,
            "max_args": LIST_ARGS_BYTES, "limit": size + 1,
            "scan": max(SCAN_WINDOW, size + 1) if f.narrowing else size + 1}
    status, cursor = f.status, f.cursor
    if status in FINISHED:
        name, mode = "dashboard_jobs_finished", "finished"
        at, job_id = (None, None)
        if cursor:
            at_text, id_text = _cursor_parts(cursor, 2)
            at, job_id = _time(at_text), _int(id_text)
        params = {**base, "status": status, "before_at": at, "before_id": job_id}
    elif status == "queued":
        name, mode = "dashboard_jobs_ready", "ready"
        if cursor:
            p_text, at_text, id_text = _cursor_parts(cursor, 3)
            priority = _int(p_text, "priority")
            params = {**base, "after_priority": priority, "after_at": _time(at_text),
                      "after_id": _int(id_text),
                      "below_priority": priority - 1 if priority > -INT_MAX - 1 else None}
        else:
            params = {**base, "after_priority": None, "after_at": None, "after_id": None,
                      "below_priority": INT_MAX}
    elif status == "scheduled":
        name, mode = "dashboard_jobs_scheduled", "scheduled"
        at, job_id = (None, None)
        if cursor:
            at_text, id_text = _cursor_parts(cursor, 2)
            at, job_id = _time(at_text), _int(id_text)
        params = {**base, "after_at": at, "after_id": job_id}
    elif status == "running":
        name, mode = "dashboard_jobs_running", "running"
        params = {**base, "before_id": _int(cursor) if cursor else None, "cap": COUNT_CAP}
    else:
        name, mode = "dashboard_jobs_recent", "recent"
        params = {**base, "before_id": _int(cursor) if cursor else None}
    panel = page.read(name, params)
    rows = [r for r in panel.rows if r["what"] == "job"]
    window = next((r for r in panel.rows if r["what"] == "window"), None)
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = _key(mode, rows[-1]) if more and rows else None
    searched_to = None
    if not more and window and window["scanned"] and window["scanned"] >= params["scan"]:
        # The window ran out before the page filled: more matches may lie further on.
        searched_to = _window_key(mode, window)
    dashboard = page.dashboard
    for row in rows:
        row["args"], row["kwargs"] = dashboard.redacted(row["task"], row["args"], row["kwargs"])
    return {"panel": panel, "rows": rows, "next_cursor": next_cursor, "searched_to": searched_to,
            "scanned": window["scanned"] if window else 0, "mode": mode,
            "window": params["scan"]}


def _key(mode: str, row: dict[str, Any]) -> str:
    if mode == "finished":
        return f"{_stamp(row['finished_at'])}~{row['id']}"
    if mode == "ready":
        return f"{row['priority']}~{_stamp(row['run_at'])}~{row['id']}"
    if mode == "scheduled":
        return f"{_stamp(row['run_at'])}~{row['id']}"
    return str(row["id"])


def _window_key(mode: str, window: dict[str, Any]) -> str | None:
    if window["last_id"] is None:
        return None
    if mode == "finished":
        return f"{_stamp(window['last_at'])}~{window['last_id']}"
    if mode == "ready":
        return f"{window['last_priority']}~{_stamp(window['last_at'])}~{window['last_id']}"
    if mode == "scheduled":
        return f"{_stamp(window['last_at'])}~{window['last_id']}"
    return str(window["last_id"])


def jobs(page: Page) -> dict[str, Any]:
    dashboard = page.dashboard
    request = page.request
    job_id = request.arg("id")
    if job_id is not None:
        if not job_id.isdigit():
            raise HTTPError(400, f"bad job id {job_id!r}")
        raise Redirect(page.url(f"/jobs/{int(job_id)}"))
    f = parse_filter(request, args_allowed=dashboard.redact is None)
    listing = list_jobs(page, f)
    queues = queue_counts(page)
    return {"filter": f, "listing": listing, "queue_names": [q["queue"] for q in queues.rows],
            "statuses": JOB_STATUSES, "page_size": PAGE_SIZE,
            "args_allowed": dashboard.redact is None}


def matching_ids(page: Page, f: JobFilter, limit: int) -> dict[str, Any]:
    """The first ``limit`` jobs the filter lists (for an action on every matching job)."""
    listing = list_jobs(page, f, size=limit)
    if not listing["panel"].ok:
        raise HTTPError(503, f"could not list the matching jobs: {listing['panel'].problem}")
    return {"ids": [r["id"] for r in listing["rows"]], "more": listing["next_cursor"] is not None,
            "window_ended": listing["searched_to"] is not None, "scanned": listing["scanned"]}


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


# ------------------------------------------------------------------ job detail

def job(page: Page, job_id: int) -> dict[str, Any]:
    dashboard = page.dashboard
    found = page.read("dashboard_job", {"id": job_id, "max_bytes": DETAIL_VALUE_BYTES})
    row = found.first
    if found.ok and row is None:
        deleted = page.read("dashboard_deleted", {"id": job_id}).first
        if deleted is not None:
            return {"job": None, "job_id": job_id, "deleted": deleted, "panel": found}
        raise HTTPError(404, f"there is no job {job_id}")
    events = page.read("dashboard_job_events", {"id": job_id, "limit": JOB_EVENTS})
    context: dict[str, Any] = {"job": row, "job_id": job_id, "panel": found, "events": events,
                               "deleted": None}
    if row is None:
        return context
    row["args"], row["kwargs"] = dashboard.redacted(row["task"], row["args"], row["kwargs"])
    total = events.rows[0]["total"] if events.rows else 0
    hidden = max(total - len(events.rows), 0)
    attempts = timeline_layout.attempts_of(events.rows)
    for attempt in attempts:
        attempt["job_id"] = job_id
        attempt["task"], attempt["queue"] = row["task"], row["queue"]
        attempt["running"] = (row["status"] == "running" and row["attempts"] == attempt["attempt"]
                              and row["runner_id"] == attempt["runner_id"])
    start = row["enqueued_at"]
    end = row["finished_at"] or page.now
    if end <= start:
        end = start + dt.timedelta(seconds=1)
    span = end - start
    mini = timeline_layout.layout(start - span * 0.02, end + span * 0.02, page.now, [], attempts) \
        if attempts else None
    runners = {e["runner_id"]: e for e in events.rows if e["runner_id"] is not None}
    logs = []
    for attempt in attempts:
        event = runners.get(attempt["runner_id"])
        if not event or event["runner_pid"] is None:
            continue
        since = attempt["started_at"] - dt.timedelta(seconds=1)
        until = (attempt["ended_at"] or page.now) + dt.timedelta(seconds=1)
        fmt = "%Y-%m-%d %H:%M:%S"
        logs.append({
            "attempt": attempt["attempt"], "host": event["runner_host"], "pid": event["runner_pid"],
            "runner_id": attempt["runner_id"],
            "journalctl": (f"journalctl _PID={event['runner_pid']} --utc "
                           f"--since '{since.astimezone(dt.timezone.utc).strftime(fmt)}' "
                           f"--until '{until.astimezone(dt.timezone.utc).strftime(fmt)}'"),
            "grep": f"grep -F '[job {job_id} ' worker.log",
        })
    context.update(attempts=attempts, mini=mini, hidden_events=hidden, logs=logs)
    return context


# --------------------------------------------------------------------- runners

def runners(page: Page) -> dict[str, Any]:
    recent_key = page.request.arg("recent", "1h")
    if recent_key not in RECENT_CHOICES:
        raise HTTPError(400, f"recent must be one of {', '.join(RECENT_CHOICES)}")
    listing = page.read("dashboard_runners", {"recent_seconds": RECENT_CHOICES[recent_key],
                                              "limit": RUNNERS_LIMIT})
    for row in listing.rows:
        row["health"] = runner_health(row)
    return {"runners": listing, "recent": recent_key, "recent_choices": RECENT_CHOICES,
            "limit": RUNNERS_LIMIT}


def runner_health(row: dict[str, Any]) -> str:
    """ok | late (heartbeat older than two intervals) | lost (past its lease) | stopped | dead."""
    if row["state"] != "running":
        return row["state"]
    age = row["heartbeat_seconds"] or 0.0
    if age >= row["dead_after"]:
        return "lost"
    if age > 2 * row["heartbeat_interval"]:
        return "late"
    return "ok"


def runner(page: Page, runner_id: int) -> dict[str, Any]:
    found = page.read("dashboard_runner", {"id": runner_id})
    row = found.first
    if found.ok and row is None:
        raise HTTPError(404, f"there is no runner {runner_id} (pruned, or never existed)")
    context: dict[str, Any] = {"runner": row, "runner_id": runner_id, "panel": found}
    if row is None:
        return context
    row["health"] = runner_health(row)
    end = row["stopped_at"] or row["now"]
    since = max(row["started_at"], end - RUNNER_WINDOW)
    until = end + dt.timedelta(minutes=1)
    context["jobs"] = page.read("dashboard_runner_jobs", {"id": runner_id, "limit": RUNNER_JOBS})
    context["events"] = page.read("dashboard_runner_events", {
        "id": runner_id, "since": since, "until": until, "limit": RUNNER_EVENTS})
    context["window"] = (since, until)
    context["timeline_until"] = _stamp(row["stopped_at"] + dt.timedelta(minutes=1)) \
        if row["stopped_at"] else None
    context["reaper_events"] = [e for e in context["events"].rows if e["kind"] == "crashed"]
    return context


# -------------------------------------------------------------------- timeline

def parse_window(text: str) -> dt.timedelta:
    match = _WINDOW.match(text.strip())
    if not match:
        raise HTTPError(400, f"bad window {text!r}: a number and a unit, e.g. 90s, 15m, 2h")
    value = dt.timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    if value <= dt.timedelta(0):
        raise HTTPError(400, "the window must be longer than zero")
    return min(value, TIMELINE_MAX)


def timeline(page: Page) -> dict[str, Any]:
    request = page.request
    window_text = request.arg("window", "15m")
    window = parse_window(window_text)
    clock = page.read("dashboard_ping").first
    db_now = clock["now"] if clock else page.now
    until_text = request.arg("until")
    until = _time(until_text) if until_text else db_now
    since_text = request.arg("since")
    if since_text:
        since = _time(since_text)
        if since >= until:
            raise HTTPError(400, "since must be before until")
        if until - since > TIMELINE_MAX:
            since = until - TIMELINE_MAX
        window = until - since
    else:
        since = until - window
    queue, task = request.arg("queue"), request.arg("task")
    attempts = page.read("dashboard_timeline", {
        "since": since, "until": until, "cap": TIMELINE_EVENTS, "bars": TIMELINE_BARS,
        "queue": queue, "task": task})
    runner_ids = sorted({int(r["runner_id"]) for r in attempts.rows})
    lanes = page.read("dashboard_timeline_runners", {
        "since": since, "until": until, "ids": runner_ids, "limit": TIMELINE_LANES})
    picture = timeline_layout.layout(since, until, db_now, lanes.rows, attempts.rows)
    events_read = attempts.rows[0]["events_read"] if attempts.rows else 0
    half = window / 2
    moves = {
        "earlier": {"window": window_text if not since_text else None,
                    "until": _stamp(until - half), "queue": queue, "task": task},
        "later": ({"window": window_text if not since_text else None,
                   "until": _stamp(until + half), "queue": queue, "task": task}
                  if until + half < db_now else {"window": window_text, "queue": queue, "task": task}),
        "now": {"window": window_text, "queue": queue, "task": task},
    }
    return {"picture": picture, "attempts": attempts, "lanes": lanes, "since": since, "until": until,
            "window_text": None if since_text else window_text, "windows": WINDOW_CHOICES, "queue": queue, "task": task,
            "truncated": len(attempts.rows) >= TIMELINE_BARS or events_read >= TIMELINE_EVENTS,
            "lanes_truncated": len(lanes.rows) >= TIMELINE_LANES, "moves": moves,
            "following": until_text is None, "outcomes": timeline_layout.OUTCOME_LABELS,
            "limits": {"bars": TIMELINE_BARS, "events": TIMELINE_EVENTS, "lanes": TIMELINE_LANES}}


# ---------------------------------------------------------------------- health

def health(page: Page) -> dict[str, Any]:
    settings = page.dashboard.app.settings
    tables = page.read("dashboard_table_health", {"schema": page.dashboard.schema})
    horizon = page.read("dashboard_xmin_horizon")
    maintenance = page.read("dashboard_maintenance")
    queues = queue_counts(page)
    orphans = page.read("dashboard_orphans", {"cap": COUNT_CAP})
    ping = page.read("dashboard_ping")
    oldest = max((q["oldest_ready_age"] for q in queues.rows if q["oldest_ready_age"] is not None),
                 default=None)
    lagging = max(queues.rows, key=lambda q: q["oldest_ready_age"] or dt.timedelta(0)) \
        if queues.rows else None
    return {"tables": tables, "horizon": horizon, "maintenance": maintenance, "queues": queues,
            "orphans": orphans, "ping": ping, "oldest_ready_age": oldest, "lagging": lagging,
            "maintenance_interval": settings.maintenance_interval}


PageFunction = Callable[..., dict[str, Any]]
