"""Schedules: cron definitions in code, their sync into the database at a runner's start, and
the operator's controls (``app.schedules``).

::

    @app.periodic(cron="0 7 * * 1-5", timezone="Europe/Berlin", id="morning-report")
    @app.task
    def morning_report(): ...

    app.schedule(cleanup, cron="*/15 * * * *")          # the same, without a decorator

A definition is checked when it is made (at import): a bad expression, an unknown time zone,
arguments the task does not take or a bad option raise ConfigurationError naming the schedule.

Sync (:func:`sync`). Every runner writes its App's schedules when it starts, in one
transaction that holds the ``schedules`` table against other syncs:

* a new schedule gets its first tick after the database's now: it never back-fills;
* a schedule whose definition differs is redefined: **the runner that started last wins**
  (during a rolling deploy the new code's definition applies from the first new runner on).
  A changed cron or time zone starts afresh after now, like a new schedule; other changes
  (arguments, queue, policies) keep the cursor;
* a schedule it does not declare is left alone: sync is additive. The runner's declarations
  are what keeps a schedule live: one that no running runner declares stops firing when its
  next tick comes and is marked orphaned (``schedule_status.orphaned``), never deleted;
  declaring it again resumes it under its catch-up policy.

Firing is the maintenance pass's (``pgqueue.worker.firing``); the tick arithmetic is
``pgqueue.cron``'s.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import cron as crons, errors, serialization
from .tasks import Task, seconds, validate_priority, validate_queue

if TYPE_CHECKING:
    from .app import App
    from .jobs import Job

logger = logging.getLogger(__name__)

OVERLAP_POLICIES = ("allow", "skip")
DEFAULT_CATCH_UP_WITHIN = 3600.0
MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class Definition:
    """One schedule as the code declares it."""

    id: str
    task: str
    cron: str
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None  # None: the task's
    priority: int | None = None  # None: the task's
    catch_up: str = "latest"
    catch_up_within: float = DEFAULT_CATCH_UP_WITHIN
    overlap: str = "allow"
    #: Whether the id was given (a task with more than one schedule needs an id for each).
    named: bool = True

    def schedule(self) -> crons.Cron:
        return crons.cron(self.cron, self.timezone)

    def row(self, task: Task[..., Any]) -> dict[str, Any]:
        """The schedules row this definition asks for (queue, priority and max_attempts
        resolved from the task and the App's settings)."""
        args_json, kwargs_json = serialization.encode_call(task.func, task.name, self.args, self.kwargs)
        return {
            "id": self.id, "task": self.task, "cron": self.cron, "timezone": self.timezone,
            "args": json.loads(args_json), "kwargs": json.loads(kwargs_json),
            "queue": self.queue or task.config.queue,
            "priority": task.config.priority if self.priority is None else self.priority,
            "max_attempts": task.max_attempts(), "catch_up": self.catch_up,
            "catch_up_within": float(self.catch_up_within), "overlap": self.overlap,
        }


def define(task: Any, *, cron: str, id: str | None = None, timezone: str = "UTC",
           args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, queue: str | None = None,
           priority: int | None = None, catch_up: str = "latest",
           catch_up_within: float | dt.timedelta = DEFAULT_CATCH_UP_WITHIN,
           overlap: str = "allow") -> Definition:
    """A checked Definition: every problem raises ConfigurationError naming the schedule."""
    if not isinstance(task, Task):
        raise errors.ConfigurationError(
            f"a schedule runs a task: put @app.periodic(...) above @app.task (or pass a task to "
            f"app.schedule), not {task!r}")
    name = id if id is not None else task.name
    label = f"schedule {name!r} (task {task.name!r})"

    def fail(reason: str) -> errors.ConfigurationError:
        return errors.ConfigurationError(f"{label}: {reason}")

    if not isinstance(name, str) or not name or len(name) > MAX_ID_LENGTH or "\x00" in name \
            or name != name.strip():
        raise errors.ConfigurationError(
            f"schedule id must be a name of 1 to {MAX_ID_LENGTH} characters without surrounding "
            f"spaces, not {name!r} (task {task.name!r})")
    try:
        schedule = crons.cron(cron, timezone) if isinstance(cron, str) and isinstance(timezone, str) \
            else crons.Cron(cron, timezone)
    except errors.ConfigurationError as exc:
        raise fail(str(exc)) from None
    if catch_up not in crons.CATCH_UP_POLICIES:
        raise fail(f"catch_up must be one of {', '.join(crons.CATCH_UP_POLICIES)}, not {catch_up!r}")
    if overlap not in OVERLAP_POLICIES:
        raise fail(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, not {overlap!r}")
    try:
        within = seconds("catch_up_within", catch_up_within)
        if queue is not None:
            validate_queue(queue)
        if priority is not None:
            validate_priority(priority)
    except errors.ConfigurationError as exc:
        raise fail(str(exc)) from None
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise fail(f"args must be a tuple or list of positional arguments, not {args!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise fail(f"kwargs must be a dict of keyword arguments, not {kwargs!r}")
    kwargs = dict(kwargs or {})
    try:
        task.check_call(tuple(args), kwargs)
        serialization.encode_call(task.func, task.name, tuple(args), kwargs)
    except errors.InvalidArguments as exc:
        raise fail(str(exc)) from None
    return Definition(id=name, task=task.name, cron=schedule.expression, timezone=timezone,
                      args=tuple(args), kwargs=kwargs, queue=queue, priority=priority,
                      catch_up=catch_up, catch_up_within=within, overlap=overlap, named=id is not None)


class Schedules:
    """``app.schedules``: the App's declared schedules, and the operator's controls over the
    schedules in the database (``list``, ``get``, ``pause``, ``resume``, ``trigger``,
    ``remove``, ``history``, ``upcoming``)."""

    def __init__(self, app: "App") -> None:
        self._app = app
        #: Schedules declared in this App's code, by id.
        self.declared: dict[str, Definition] = {}

    def __repr__(self) -> str:
        return f"<pgqueue schedules: {len(self.declared)} declared>"

    # ------------------------------------------------------------ declaring

    def add(self, task: Any, **options: Any) -> Definition:
        """Declare a schedule of ``task`` (what ``@app.periodic`` and ``app.schedule`` call)."""
        definition = define(task, **options)
        if isinstance(task, Task) and task.app is not self._app:
            raise errors.ConfigurationError(
                f"schedule {definition.id!r}: task {task.name!r} belongs to another App")
        siblings = [d for d in self.declared.values() if d.task == definition.task]
        if siblings and not (definition.named and all(d.named for d in siblings)):
            crons_ = ", ".join(repr(d.cron) for d in [*siblings, definition])
            raise errors.ConfigurationError(
                f"task {definition.task!r} has more than one schedule ({crons_}): give each an id= "
                "(ids are permanent: the database knows a schedule by its id)")
        if definition.id in self.declared:
            other = self.declared[definition.id]
            raise errors.ConfigurationError(
                f"two schedules have the id {definition.id!r} ({other.cron!r} of task {other.task!r} "
                f"and {definition.cron!r} of task {definition.task!r}): give each its own id=")
        self.declared[definition.id] = definition
        return definition

    # -------------------------------------------------------------- reading

    def list(self) -> list[dict[str, Any]]:
        """Every schedule in the database (the ``schedule_status`` view), by id."""
        return self._app.database.fetch(self._app.queries.schedule_list)

    def get(self, id: str) -> dict[str, Any]:
        rows = self._app.database.fetch(self._app.queries.schedule_get, {"id": id})
        if not rows:
            known = ", ".join(r["id"] for r in self.list()[:20]) or "none"
            raise errors.ScheduleNotFound(
                f"there is no schedule {id!r} in schema {self._app.settings.schema!r} (known: {known})")
        return rows[0]

    def history(self, id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The schedule's latest events (fired, missed, skipped, ...), newest first."""
        if limit < 1:
            raise errors.ConfigurationError(f"limit must be at least 1, not {limit}")
        rows = self._app.database.fetch(self._app.queries.schedule_history, {"id": id, "limit": limit})
        if not rows:
            self.get(id)  # says so when there is no such schedule
        return rows

    def upcoming(self, id: str, count: int = 5) -> list[dt.datetime]:
        """Its next ``count`` ticks (from its cursor, as the database has it)."""
        row = self.get(id)
        schedule = crons.cron(row["cron"], row["timezone"])
        first = schedule.first_at_or_after(row["next_run_at"])
        return [first, *schedule.upcoming(first, count - 1)] if count > 0 else []

    # ------------------------------------------------------------- controls

    def pause(self, id: str, *, reason: str | None = None, by: str | None = None) -> bool:
        """Stop firing it (its ticks are recorded as missed); False if it was paused already."""
        self.get(id)
        rows = self._app.database.fetch(self._app.queries.schedule_pause,
                                        {"id": id, "reason": reason, "by": by or _who()})
        return bool(rows[0]["changed"])

    def resume(self, id: str, *, by: str | None = None) -> bool:
        """Fire it again from its next tick after now; False if it was not paused."""
        self.get(id)
        rows = self._app.database.fetch(self._app.queries.schedule_resume, {"id": id, "by": by or _who()})
        return bool(rows[0]["changed"])

    def trigger(self, id: str, *, by: str | None = None) -> "Job":
        """Enqueue one of its jobs now, as a tick would; its cursor does not move. With overlap
        skip and its previous job still queued or running, that job comes back
        (``job.created`` is False)."""
        from .jobs import Job

        self.get(id)
        row = self._app.database.fetch(self._app.queries.schedule_trigger, {"id": id, "by": by or _who()})[0]
        return Job(self._app, row["job_id"], created=row["created"])

    def remove(self, id: str, *, by: str | None = None) -> None:
        """Delete a schedule no live runner declares (an orphaned one); its history stays."""
        row = self.get(id)
        if row["declared_by"]:
            raise errors.ConfigurationError(
                f"schedule {id!r} is declared by {row['declared_by']} live runner(s): remove it from "
                "the code and restart them first (a runner's start would bring it back)")
        self._app.database.fetch(self._app.queries.schedule_remove, {"id": id, "by": by or _who()})


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "python"


# ---------------------------------------------------------------------- sync

@dataclass(frozen=True)
class SyncResult:
    created: tuple[str, ...] = ()
    redefined: tuple[str, ...] = ()
    declared_again: tuple[str, ...] = ()
    unchanged: int = 0


def sync(app: "App", conn: Any, runner_id: int, *, redefine: bool = True,
         timeouts: Mapping[str, Any] | None = None) -> SyncResult:
    """Write the App's schedules and this runner's declarations (``conn``: a worker connection
    with ``get``/``run``). ``redefine``: a changed definition replaces the stored one (at a
    process start; a runner that only registered again after losing its lease renews its
    declarations and changes nothing else)."""
    definitions = app.schedules.declared
    q = app.queries
    rows_in = {d.id: d.row(app.get_task(d.task)) for d in definitions.values()}
    pg = conn.get()
    with pg.transaction():
        if timeouts:
            conn.run(q.raw("maintenance_begin"), timeouts)
        conn.run(q.raw("schedule_sync_lock"), {})
        now = conn.run_one(q.raw("admin_now"), {})[0]
        existing = {r[0]: r for r in conn.run(q.raw("schedule_sync_read"),
                                              {"ids": sorted(rows_in), "runner_id": runner_id})}
        writes, outcome = [], {"created": [], "redefined": [], "declared": [], None: []}
        for schedule_id, wanted in sorted(rows_in.items()):
            entry = _decide(definitions[schedule_id], wanted, existing.get(schedule_id), now, runner_id,
                            redefine)
            outcome[entry["event"]].append(schedule_id)
            if entry["event"] == "redefined" and existing[schedule_id][13] is not None:
                outcome["declared"].append(schedule_id)
            writes.append(entry)
        conn.run(q.raw("schedule_sync"), {"schedules": json.dumps(writes, default=_json_default),
                                           "runner_id": runner_id})
    for schedule_id in outcome["created"]:
        logger.info("schedule %r created: %s", schedule_id, definitions[schedule_id].cron)
    return SyncResult(tuple(outcome["created"]), tuple(outcome["redefined"]), tuple(outcome["declared"]),
                      len(outcome[None]))


def _decide(definition: Definition, wanted: dict[str, Any], old: Sequence[Any] | None, now: dt.datetime,
            runner_id: int, redefine: bool) -> dict[str, Any]:
    """What a sync writes for one declared schedule: its row (``write``), the event, the reason."""
    entry = dict(wanted, definition=dict(wanted), write=False, event=None, reason=None, next_run_at=None)
    if old is None:
        return dict(entry, write=True, event="created", next_run_at=definition.schedule().next_after(now),
                    reason=f"created: {definition.cron!r} in {definition.timezone}; first tick after "
                           f"{crons.iso(now)}, none before")
    stored = _stored(old)
    changes = [k for k in _COMPARED if stored[k] != wanted[k]] if redefine else []
    if redefine:
        _warn_about_others(definition.id, wanted, old[14])
    entry["next_run_at"] = old[12]
    notes = []
    if changes:
        timing = bool({"cron", "timezone"} & set(changes))
        notes.append(f"redefined by runner {runner_id}: " + "; ".join(
            f"{k} {_show(stored[k])} -> {_show(wanted[k])}" for k in changes))
        if timing:  # like a new schedule: from now on
            entry["next_run_at"] = definition.schedule().next_after(now)
            notes.append(f"first tick of the new timing after {crons.iso(now)}")
        entry.update(write=True, event="redefined")
    else:
        entry.update({k: stored[k] for k in _COMPARED})
    if old[13] is not None:
        notes.append(f"declared again by runner {runner_id} after being orphaned since "
                     f"{crons.iso(old[13])}; missed ticks follow its catch-up policy")
        entry.update(write=True, event=entry["event"] or "declared")
    if entry["write"]:
        entry["reason"] = "; ".join(notes)
        logger.warning("schedule %r: %s", definition.id, entry["reason"])
    return entry


_COMPARED = ("task", "cron", "timezone", "args", "kwargs", "queue", "priority", "max_attempts",
             "catch_up", "catch_up_within", "overlap")


def _stored(row: Sequence[Any]) -> dict[str, Any]:
    """A schedule_sync_read row as the same dict as Definition.row()."""
    return dict(zip(_COMPARED, (row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                                row[9], float(row[10]), row[11])))


def _warn_about_others(schedule_id: str, wanted: Mapping[str, Any], others: Any) -> None:
    for other in others or []:
        theirs = other.get("definition") or {}
        differ = [k for k in ("cron", "timezone", "task") if k in theirs and theirs[k] != wanted[k]]
        if differ:
            logger.warning(
                "schedule %r: live runner %s declares another %s (%s); this runner started last, so "
                "its definition applies (a rolling deploy?)", schedule_id, other.get("runner_id"),
                "/".join(differ), ", ".join(f"{k} {_show(theirs[k])}" for k in differ))


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
