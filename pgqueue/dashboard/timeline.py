"""The cross-runner timeline, laid out: one lane per runner, one bar per attempt.

Pure functions over rows (no database, no HTML): :func:`layout` turns the runners and the
attempts of a time window into boxes in SVG user units, which ``timeline.html`` draws. The
picture it makes is the recovery story: a lane is drawn from the runner's start to its end
(solid while it heartbeats, dotted over the silence between its last heartbeat and the moment
it was declared dead); a dead runner's lane ends with a marker saying why; each attempt is a
bar coloured by how it ended, linked to its job; an attempt that ended because its runner died
or handed it back is joined by a dashed line to the job's next attempt, usually on another
lane. Attempts that overlap on one runner (concurrency > 1) get sub-rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

WIDTH = 1200.0
LABEL_WIDTH = 190.0
PLOT_RIGHT = WIDTH - 10.0
AXIS_HEIGHT = 24.0
LANE_HEADER = 6.0
ROW_HEIGHT = 13.0
BAR_HEIGHT = 10.0
LANE_GAP = 8.0
MAX_SUBROWS = 10
MIN_BAR_WIDTH = 2.0

OUTCOMES = ("succeeded", "retry_scheduled", "failed", "cancelled", "crashed", "handed_back",
            "running", "unknown")
OUTCOME_LABELS = {
    "succeeded": "succeeded",
    "retry_scheduled": "failed, retry scheduled",
    "failed": "failed",
    "cancelled": "cancelled",
    "crashed": "runner died: re-queued",
    "handed_back": "handed back",
    "running": "running",
    "unknown": "end not recorded",
}
# Attempts whose job went on elsewhere: joined to the next attempt.
_MOVED = {"crashed", "handed_back", "retry_scheduled"}

_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


@dataclass
class Bar:
    job_id: int
    attempt: int
    runner_id: int
    outcome: str
    task: str | None
    queue: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    x: float = 0.0
    width: float = 0.0
    y: float = 0.0
    row: int = 0
    clipped_left: bool = False
    clipped_right: bool = False

    @property
    def title(self) -> str:
        def fmt(moment: dt.datetime | None) -> str:
            # The database's times arrive in UTC (the session's zone): isoformat is cheap.
            if moment is None:
                return "?"
            if moment.utcoffset() != dt.timedelta(0):
                moment = moment.astimezone(dt.timezone.utc)
            return moment.isoformat(timespec="milliseconds")[11:23]
        seconds = ""
        if self.started_at and self.ended_at:
            seconds = f", {(self.ended_at - self.started_at).total_seconds():.2f} s"
        return (f"job {self.job_id} {self.task or ''} attempt {self.attempt} on runner {self.runner_id}: "
                f"{OUTCOME_LABELS.get(self.outcome, self.outcome)} ({fmt(self.started_at)} to "
                f"{fmt(self.ended_at) if self.outcome != 'running' else 'now'}{seconds})")

    @property
    def mid_y(self) -> float:
        return self.y + BAR_HEIGHT / 2


@dataclass
class Marker:
    x: float
    y1: float
    y2: float
    kind: str  # dead | stopped | heartbeat
    title: str


@dataclass
class Link:
    """From an attempt that ended (its runner died, it handed the job back, a retry) to the job's
    next attempt."""

    x1: float
    y1: float
    x2: float
    y2: float
    kind: str
    job_id: int


@dataclass
class Lane:
    runner_id: int
    label: str
    detail: str
    state: str
    y: float
    height: float
    life_x1: float | None = None
    life_x2: float | None = None
    silent_x1: float | None = None  # last heartbeat to declared dead: the silence
    ended_at: dt.datetime | None = None
    reason: str | None = None
    bars: list[Bar] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)

    @property
    def mid_y(self) -> float:
        return self.y + self.height / 2


@dataclass
class Tick:
    x: float
    label: str


@dataclass
class Timeline:
    since: dt.datetime
    until: dt.datetime
    width: float
    height: float
    lanes: list[Lane]
    links: list[Link]
    ticks: list[Tick]
    now_x: float | None
    bars: int
    plot_left: float = LABEL_WIDTH
    plot_right: float = PLOT_RIGHT


class Scale:
    def __init__(self, since: dt.datetime, until: dt.datetime) -> None:
        self.since = since
        self.until = until
        self.span = max((until - since).total_seconds(), 1e-3)

    def x(self, moment: dt.datetime) -> float:
        offset = (moment - self.since).total_seconds() / self.span
        return LABEL_WIDTH + min(max(offset, 0.0), 1.0) * (PLOT_RIGHT - LABEL_WIDTH)

    def inside(self, moment: dt.datetime) -> bool:
        return self.since <= moment <= self.until


def _ticks(scale: Scale) -> list[Tick]:
    target = scale.span / 8
    step = next((s for s in _TICK_STEPS if s >= target), _TICK_STEPS[-1])
    start = scale.since.astimezone(dt.timezone.utc)
    epoch = start.timestamp()
    first = (int(epoch // step) + 1) * step
    ticks = []
    moment = first
    show_seconds = step < 60
    while moment <= scale.until.timestamp():
        when = dt.datetime.fromtimestamp(moment, dt.timezone.utc)
        label = when.strftime("%H:%M:%S" if show_seconds else "%H:%M")
        x = scale.x(when)
        # A label too close to an edge would be cut off: keep the line, drop the text.
        ticks.append(Tick(x, label if LABEL_WIDTH + 20 <= x <= PLOT_RIGHT - 20 else ""))
        moment += step
    return ticks


def _bar(row: Mapping[str, Any]) -> Bar:
    outcome = row.get("outcome")
    if outcome is None:
        outcome = "running" if row.get("running") else "unknown"
    return Bar(job_id=int(row["job_id"]), attempt=int(row["attempt"]), runner_id=int(row["runner_id"]),
               outcome=outcome, task=row.get("task"), queue=row.get("queue"),
               started_at=row.get("started_at"), ended_at=row.get("ended_at"))


def layout(since: dt.datetime, until: dt.datetime, now: dt.datetime,
           runners: Iterable[Mapping[str, Any]], attempts: Iterable[Mapping[str, Any]]) -> Timeline:
    """Lanes for ``runners`` (rows of dashboard_timeline_runners) and bars for ``attempts``
    (rows of dashboard_timeline) over [since, until]."""
    scale = Scale(since, until)
    bars = [_bar(row) for row in attempts]
    by_runner: dict[int, list[Bar]] = {}
    for bar in bars:
        by_runner.setdefault(bar.runner_id, []).append(bar)
    runner_rows = {int(r["id"]): r for r in runners}
    lane_ids = sorted(set(runner_rows) | set(by_runner))

    lanes: list[Lane] = []
    y = AXIS_HEIGHT
    for runner_id in lane_ids:
        info = runner_rows.get(runner_id)
        lane_bars = sorted(by_runner.get(runner_id, []),
                           key=lambda b: (b.started_at or since, b.job_id, b.attempt))
        rows_used = _place(lane_bars, scale, until, now)
        height = LANE_HEADER + max(rows_used, 1) * ROW_HEIGHT + LANE_GAP
        lane = _lane(runner_id, info, scale, y, height, now)
        for bar in lane_bars:
            bar.y = y + LANE_HEADER + bar.row * ROW_HEIGHT
        lane.bars = lane_bars
        lanes.append(lane)
        y += height

    links = _links(bars)
    now_x = scale.x(now) if scale.inside(now) else None
    return Timeline(since=since, until=until, width=WIDTH, height=max(y, AXIS_HEIGHT + 30) + 4,
                    lanes=lanes, links=links, ticks=_ticks(scale), now_x=now_x, bars=len(bars))


def _place(bars: list[Bar], scale: Scale, until: dt.datetime, now: dt.datetime) -> int:
    """Give each bar its x, width and sub-row (the first row free at its start)."""
    row_ends: list[float] = []
    for bar in bars:
        start = bar.started_at or scale.since
        if bar.outcome == "running":
            end = min(now, until) if bar.ended_at is None else bar.ended_at
        else:
            end = bar.ended_at or until
        bar.clipped_left = start < scale.since
        bar.clipped_right = end > scale.until
        x1, x2 = scale.x(start), scale.x(end)
        bar.x = x1
        bar.width = max(x2 - x1, MIN_BAR_WIDTH)
        for index, row_end in enumerate(row_ends):
            if row_end <= x1:
                bar.row = index
                row_ends[index] = bar.x + bar.width + 0.5
                break
        else:
            if len(row_ends) < MAX_SUBROWS:
                bar.row = len(row_ends)
                row_ends.append(bar.x + bar.width + 0.5)
            else:  # more overlapping attempts than rows: share the row that frees first
                bar.row = min(range(len(row_ends)), key=row_ends.__getitem__)
                row_ends[bar.row] = max(row_ends[bar.row], bar.x + bar.width + 0.5)
    return len(row_ends)


def _lane(runner_id: int, info: Mapping[str, Any] | None, scale: Scale, y: float, height: float,
          now: dt.datetime) -> Lane:
    if info is None:
        return Lane(runner_id, f"runner {runner_id}", "(row pruned)", "unknown", y, height)
    state = info["state"]
    host, pid = info.get("host"), info.get("pid")
    lane = Lane(runner_id, f"runner {runner_id}", f"{host} pid {pid}", state, y, height,
                reason=info.get("reason"))
    started, stopped = info.get("started_at"), info.get("stopped_at")
    heartbeat = info.get("heartbeat_at")
    end = stopped if stopped is not None else now
    if started is not None and started <= scale.until and end >= scale.since:
        lane.life_x1 = scale.x(max(started, scale.since))
        lane.life_x2 = scale.x(min(end, scale.until))
    top, bottom = y + 1, y + height - LANE_GAP + 2
    if stopped is not None:
        lane.ended_at = stopped
        if state == "dead" and heartbeat is not None and heartbeat < stopped and lane.life_x1 is not None:
            lane.silent_x1 = max(scale.x(heartbeat), lane.life_x1)
        if scale.inside(stopped):
            why = info.get("lost_reason") or ""
            if state == "dead":
                title = (f"runner {runner_id} declared dead at {_clock(stopped)}"
                         f"{': ' + why if why else ''} ({info.get('reason') or 'no reason recorded'}); "
                         "its running jobs were re-queued")
            else:
                title = f"runner {runner_id} stopped at {_clock(stopped)} ({info.get('reason') or 'stopped'})"
            lane.markers.append(Marker(scale.x(stopped), top, bottom,
                                       "dead" if state == "dead" else "stopped", title))
        if state == "dead" and heartbeat is not None and scale.inside(heartbeat) and heartbeat < stopped:
            lane.markers.append(Marker(scale.x(heartbeat), top, bottom, "heartbeat",
                                       f"last heartbeat of runner {runner_id} at {_clock(heartbeat)}"))
    return lane


def _links(bars: list[Bar]) -> list[Link]:
    by_attempt = {(b.job_id, b.attempt): b for b in bars}
    links = []
    for bar in bars:
        if bar.outcome not in _MOVED:
            continue
        following = by_attempt.get((bar.job_id, bar.attempt + 1))
        if following is None:
            continue
        links.append(Link(bar.x + bar.width, bar.mid_y, following.x, following.mid_y, bar.outcome,
                          bar.job_id))
    return links


def _clock(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3] + " UTC"


def attempts_of(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A job's attempts from its events (oldest first): each 'claimed' event starts one, the
    first attempt-ending event with the same attempt number ends it. Rows shaped like those of
    dashboard_timeline, for the job page's small timeline."""
    attempts: dict[tuple[int, int], dict[str, Any]] = {}
    order: list[tuple[int, int]] = []
    for event in events:
        kind = event.get("kind")
        attempt = event.get("attempt") or 0
        runner = event.get("runner_id")
        if runner is None:
            continue
        key = (attempt, int(runner))
        if kind == "claimed":
            if key not in attempts:
                attempts[key] = {"job_id": 0, "attempt": attempt, "runner_id": runner,
                                 "started_at": event["at"], "ended_at": None, "outcome": None,
                                 "running": False}
                order.append(key)
        elif kind in OUTCOMES and key in attempts and attempts[key]["outcome"] is None:
            attempts[key]["ended_at"] = event["at"]
            attempts[key]["outcome"] = kind
    return [attempts[k] for k in order]
