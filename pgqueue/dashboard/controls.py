"""Operator controls of queues and schedules from the dashboard: pause a queue (with a
reason), resume it, set or clear its limits; pause a schedule, resume it, trigger it now.

They pass the same guards as the job actions (``Dashboard._action``: a POST from one of the
dashboard's own pages, actions on, the ``authorize(environ, name)`` hook, whose ``name`` is the
control's: ``"pause_queue"``, ``"resume_queue"``, ``"limit_queue"``, ``"pause_schedule"``,
``"resume_schedule"``, ``"trigger_schedule"``), and go the same way: the first POST shows a
confirmation page saying what will change (a pause's reason can still be written there), the
confirming POST (``confirm=yes``) acts, and the browser is sent back to the page it came from,
which says what was done.

Each control runs the statement ``app.queues`` / ``app.schedules`` and the CLI run
(``queue_pause`` is ``SELECT pause_queue(...)``), so it leaves the same ``queue_events`` or
``schedule_events`` row; who acted is written as ``dashboard (alice from 10.0.0.7)``.

Bad input never reaches the database: an unknown queue or schedule is a 404 page; limits that
are not what a limit can be come back as the form, with what is wrong (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import errors, settings
from ..queues import MAX_REASON_LENGTH
from ..schedules import MAX_ID_LENGTH
from ..tasks import MAX_QUEUE_LENGTH
from . import control_pages
from .actions import Notice, actor, printable
from .format import segment
from .web import HTTPError, Request

if TYPE_CHECKING:
    from .reader import Session
    from .views import Page

INT_MAX = 2_147_483_647


@dataclass(frozen=True)
class Control:
    name: str  # its URL (/actions/<name>) and what the authorize hook is asked
    target: str  # "queue" or "schedule": the form field naming what it acts on
    query: str  # the statement of the Python API it runs
    title: str  # its button
    question: str  # the confirmation's heading, "{}" the queue or schedule
    refusal: str  # "you may not <refusal> on this dashboard"
    takes_reason: bool = False


CONTROLS = {c.name: c for c in (
    Control("pause_queue", "queue", "queue_pause", "Pause", "Pause queue {}?", "pause queues",
            takes_reason=True),
    Control("resume_queue", "queue", "queue_resume", "Resume", "Resume queue {}?", "resume queues"),
    Control("limit_queue", "queue", "queue_limit", "Set limits", "Set the limits of queue {}?",
            "limit queues"),
    Control("pause_schedule", "schedule", "schedule_pause", "Pause", "Pause schedule {}?",
            "pause schedules", takes_reason=True),
    Control("resume_schedule", "schedule", "schedule_resume", "Resume", "Resume schedule {}?",
            "resume schedules"),
    Control("trigger_schedule", "schedule", "schedule_trigger", "Trigger now", "Trigger schedule {} now?",
            "trigger schedules"),
)}

@dataclass(frozen=True)
class Limits:
    concurrency: int | None = None
    rate: int | None = None
    per: float | None = None  # seconds, with rate


@dataclass
class Chosen:
    """What a control's form asks for, checked."""

    control: Control
    target: str
    reason: str | None = None
    limits: Limits | None = None
    #: The limit form's fields as typed (shown again when they are wrong).
    fields: dict[str, str] | None = None
    problem: str | None = None


# ------------------------------------------------------------------- the form

def target_of(request: Request, control: Control) -> str:
    """The queue or schedule the form names (400 when it names none, or no possible one)."""
    value = request.form_value(control.target) or ""
    longest = MAX_QUEUE_LENGTH if control.target == "queue" else MAX_ID_LENGTH
    if not value or value != value.strip() or len(value) > longest or "\x00" in value:
        raise HTTPError(400, f"no {control.target} named: the form must name one "
                             f"(1 to {longest} characters, no surrounding spaces)")
    return value


def parse(request: Request, control: Control) -> Chosen:
    chosen = Chosen(control, target_of(request, control))
    if control.takes_reason:
        text = (request.form_value("reason") or "").strip()
        if len(text) > MAX_REASON_LENGTH:
            chosen.problem = (f"the reason is {len(text):,} characters long: write at most "
                              f"{MAX_REASON_LENGTH:,}")
        # One line in the history: runs of whitespace (newlines too) become one space.
        chosen.reason = printable(re.sub(r"\s+", " ", text), MAX_REASON_LENGTH) or None
    if control.name == "limit_queue":
        chosen.fields = {k: (request.form_value(k) or "").strip() for k in ("concurrency", "rate", "per")}
        if request.form_value("clear") == "1":
            chosen.limits, chosen.fields = Limits(), {"concurrency": "", "rate": "", "per": ""}
        else:
            try:
                chosen.limits = parse_limits(**chosen.fields)
            except ValueError as exc:
                chosen.problem = str(exc)
    return chosen


def parse_limits(concurrency: str, rate: str, per: str) -> Limits:
    """The limits the form's fields spell (empty: no such limit); ValueError says what is wrong."""
    def count(text: str, what: str) -> int | None:
        if not text:
            return None
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 1 <= int(text) <= INT_MAX:
            raise ValueError(f"{what} must be a whole number from 1 to {INT_MAX:,} "
                             f"(empty: no limit), not {text[:40]!r}")
        return int(text)

    jobs = count(concurrency, "the concurrency limit")
    starts = count(rate, "the rate limit")
    if (starts is None) != (not per):
        raise ValueError("give the rate limit and its period together (e.g. 100 per 1m), or neither")
    period = None
    if per:
        try:
            period = settings.parse_duration(per)
        except errors.ConfigurationError:
            raise ValueError(f"the period must be a duration such as 30s, 1m or 1h, not {per[:40]!r}") from None
        if not 0 < period <= 366 * 86400:
            raise ValueError(f"the period must be longer than zero and at most a year, not {per[:40]!r}")
    return Limits(jobs, starts, period)


# ----------------------------------------------------------- what it acts on

def look_up(page: "Page", control: Control, target: str) -> dict[str, Any]:
    """The current state of the control's target, for the confirmation page (the pages' own
    reads: 404 when there is no such queue or schedule, 503 when it cannot be read)."""
    if control.target == "queue":
        found = control_pages.find_queue(page, target, history=1)
        # A queue known only from its history (no job, no controls now) is shown as empty.
        row = found["queue"] or {"queue": target, "paused_at": None, "paused_by": None, "pause_reason": None,
                                 "concurrency_limit": None, "rate_limit": None, "rate_period": None,
                                 "running": 0, "ready": 0}
    else:
        row = control_pages.find_schedule(page, target)
    if page.problems:
        raise HTTPError(503, f"could not read {control.target} {target!r}: {page.problems[0]}")
    return row


def page_of(control: Control, target: str) -> str:
    """The path of the page that shows the target (where to go back to by default)."""
    return f"/{control.target}s/{segment(target)}"


# ----------------------------------------------------------------- performing

@dataclass(frozen=True)
class Outcome:
    changed: bool
    job_id: int | None = None

    def token(self, control: Control) -> str:
        """The ``done`` parameter of the redirect (read back by :func:`notice`)."""
        return f"{control.name}:{int(self.changed)}:{self.job_id or 0}"


def by(request: Request) -> str:
    return f"dashboard ({actor(request)})"


def perform(session: "Session", chosen: Chosen, who: str) -> Outcome:
    """Run the control's statement (one read-write transaction)."""
    import psycopg

    control, target = chosen.control, chosen.target
    key = "queue" if control.target == "queue" else "id"
    params: dict[str, Any] = {key: target, "by": who}
    if control.takes_reason:
        params["reason"] = chosen.reason
    if chosen.limits is not None:
        params.update(concurrency=chosen.limits.concurrency, rate=chosen.limits.rate, per=chosen.limits.per)
    try:
        rows = session.write(control.query, params)
    except psycopg.errors.NoDataFound:
        # Removed between the confirmation and now.
        raise HTTPError(404, f"there is no schedule {target!r} (any more)") from None
    except psycopg.errors.InvalidParameterValue as exc:
        raise HTTPError(400, str(exc).splitlines()[0]) from None
    row = rows[0] if rows else {}
    if control.name == "trigger_schedule":
        return Outcome(bool(row.get("created")), row.get("job_id"))
    return Outcome(bool(row.get("changed", True)))


_NOTICES = {
    "pause_queue": "Queue paused: no runner claims its jobs until it is resumed (running ones finish).",
    "resume_queue": "Queue resumed: runners claim its jobs again.",
    "limit_queue": "Limits set: they hold over every runner from now on.",
    "pause_schedule": "Schedule paused: its ticks are recorded as missed until it is resumed.",
    "resume_schedule": "Schedule resumed: its next tick after now fires (ticks while it was paused "
                       "are not caught up).",
}
_UNCHANGED = {
    "pause_schedule": "The schedule was paused already: nothing changed.",
    "resume_schedule": "The schedule was not paused: nothing changed.",
}


def notice(done: str | None) -> Notice | None:
    """The notice of ``done=pause_queue:1:0`` (control, changed, job id); None for anything else."""
    match = re.fullmatch(r"([a-z_]+):([01]):(\d+)", done or "")
    if not match or match.group(1) not in CONTROLS:
        return None
    name, changed, job_id = match.group(1), match.group(2) == "1", int(match.group(3))
    if name == "trigger_schedule":
        if changed:
            return Notice("Triggered: one job enqueued now, as a tick would.", f"/jobs/{job_id}", f"job {job_id}")
        return Notice("Nothing enqueued: the job of an earlier run is still queued or running "
                      "(overlap skip).", f"/jobs/{job_id}" if job_id else None, f"job {job_id}")
    return Notice(_NOTICES[name] if changed or name not in _UNCHANGED else _UNCHANGED[name])
