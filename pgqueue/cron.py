"""Cron ticks in a time zone, and what a maintenance pass does with the ticks that are due.

:class:`Cron` turns an expression and an IANA time zone into the instants it fires at. croniter
only ever sees naive wall-clock times (it mishandles aware ones around daylight-saving changes);
the mapping of a wall-clock time to instants is done here, with zoneinfo:

* a wall-clock time that does not exist (the gap of a spring-forward day) fires once, at the
  first instant after the gap (02:30 on a day that jumps from 02:00 to 03:00 fires at 03:00);
* a wall-clock time that happens twice (the repeated hour of a fall-back day) fires once, at its
  first occurrence, unless the hour field is ``*`` or a step ``*/n``: such schedules run in real
  time and fire at every instant whose wall-clock time matches, in both passes of the hour (so
  ``*/15 * * * *`` fires every 15 real minutes all day);
* ticks are instants: two wall-clock times that map to one instant fire once.

:func:`plan` decides, for one schedule whose cursor (the next tick not yet handled) has come,
which ticks fire now, which are recorded as missed and why, and where the cursor goes: every
tick up to now is handled, so the cursor moves past now (``catch_up="all"`` may leave it at a
tick still due, to go on at the next pass). Time is always the database's, given by the caller.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from . import errors

UTC = dt.timezone.utc
_SECOND = dt.timedelta(seconds=1)
_TINY = dt.timedelta(microseconds=1)

#: A tick fired within this many seconds of its time is on time, whatever the catch-up policy
#: (a pass delayed by a hiccup loses nothing); one fired later is late (``current_job().late``)
#: and only the catch-up policy decides whether it runs.
ON_TIME = 10.0
#: Missed ticks recorded one by one per pass; beyond, one row says the rest were missed too.
MAX_LISTED = 100
#: Ticks ``catch_up="all"`` fires in one pass (the next pass goes on from there).
CATCH_UP_BATCH = 100
CATCH_UP_POLICIES = ("skip", "latest", "all")

_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# Looking for the next tick gives up after this many wall-clock matches that map to no instant
# after the start (a fixed-hour schedule in the second pass of a repeated hour skips at most
# 3,600 of them).
_MAX_STEPS = 100_000


class Cron:
    """The instants a cron expression names in a time zone. Raises ConfigurationError (saying
    why) for an expression croniter refuses, one that never fires, or an unknown time zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise errors.ConfigurationError(f"cron must be a cron expression (a string), not {expression!r}")
        if not isinstance(timezone, str) or not timezone:
            raise errors.ConfigurationError(f"timezone must be an IANA time zone name, not {timezone!r}")
        self.expression = " ".join(expression.split())
        self.timezone = timezone
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise errors.ConfigurationError(
                f"timezone {timezone!r} is not an IANA time zone name (e.g. 'UTC', 'Europe/Berlin', "
                "'America/New_York')") from None
        expanded = _ALIASES.get(self.expression.lower(), self.expression)
        if expanded.startswith("@"):
            raise errors.ConfigurationError(
                f"cron {expression!r}: unknown alias; use @yearly, @monthly, @weekly, @daily, @hourly "
                "or five fields (minute hour day-of-month month day-of-week), plus seconds last")
        fields = expanded.split()
        if len(fields) not in (5, 6):
            raise errors.ConfigurationError(
                f"cron {expression!r} has {len(fields)} fields: give five (minute hour day-of-month "
                "month day-of-week), or six with seconds last (croniter's order: '* * * * * */10' is "
                "every 10 seconds)")
        if any(ch in expanded.upper() for ch in "HR?"):
            raise errors.ConfigurationError(
                f"cron {expression!r}: hashed (H), random (R) and '?' fields are not supported: every "
                "runner must compute the same ticks")
        try:
            croniter(expanded, dt.datetime(2000, 1, 1))
        except Exception as exc:  # croniter raises several kinds, all about the expression
            raise errors.ConfigurationError(f"cron {expression!r} is not valid: {exc}") from None
        self._expanded = expanded
        # One croniter, moved to each start (parsing the expression anew would cost more than
        # the search); the lock: a parsed Cron is shared by the threads of a process.
        self._matches = croniter(expanded, dt.datetime(2000, 1, 1))
        self._lock = threading.Lock()
        # Real time: the hour field matches every hour (or steps through them from the first).
        self.realtime = fields[1].startswith("*")
        try:
            self.next_after(dt.datetime(2000, 1, 1, tzinfo=UTC))
        except Exception as exc:
            raise errors.ConfigurationError(f"cron {expression!r} never fires: {exc}") from None

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, {self.timezone!r})"

    # ------------------------------------------------------------------ ticks

    def next_after(self, instant: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``instant`` (aware), in UTC."""
        local = instant.astimezone(self.zone)
        wall, fold = local.replace(tzinfo=None), local.fold
        best: dt.datetime | None = None
        start = wall
        if self._ambiguous(wall):
            # Inside a repeated hour. In its first pass a real-time schedule also fires in the
            # second pass, which starts at the transition; in its second pass a fixed-hour
            # schedule fired already and goes on after it.
            delta = self._fold_delta(wall)
            if fold == 0 and self.realtime:
                back_at = self._transition(instant, instant + delta)
                first = self._first_at_or_after(back_at.astimezone(self.zone).replace(tzinfo=None))
                if self._ambiguous(first):
                    best = first.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
            elif fold == 1 and not self.realtime:
                back_at = self._transition(instant - delta, instant)
                start = back_at.astimezone(self.zone).replace(tzinfo=None) + delta - _TINY
        with self._lock:
            self._matches.set_current(start, force=True)
            for _ in range(_MAX_STEPS):
                candidate = self._matches.get_next(dt.datetime)
                found = next((t for t in self._instants(candidate) if t > instant), None)
                if found is not None:
                    return found if best is None else min(found, best)
        if best is not None:
            return best
        raise errors.ConfigurationError(f"cron {self.expression!r} has no tick after {instant}")

    def first_at_or_after(self, instant: dt.datetime) -> dt.datetime:
        return self.next_after(instant - _TINY)

    def latest_at_or_before(self, instant: dt.datetime, floor: dt.datetime) -> dt.datetime | None:
        """The latest tick in [floor, instant], or None. croniter's own backward search on the
        wall clock gives a guess, checked forwards; failing that (around a daylight-saving
        change), a look back in doubling steps, whose cost does not grow with how far back
        ``floor`` is."""
        wall = instant.astimezone(self.zone).replace(tzinfo=None)
        with self._lock:
            self._matches.set_current(wall + _SECOND, force=True)
            guess = self._matches.get_prev(dt.datetime)
        for tick in reversed(self._instants(guess)):
            if floor <= tick <= instant and self.next_after(tick) > instant:
                return tick
        step = _SECOND
        while True:
            start = max(instant - step, floor)
            tick = self.first_at_or_after(start)
            if tick <= instant:
                while True:
                    following = self.next_after(tick)
                    if following > instant:
                        return tick
                    tick = following
            if start <= floor:
                return None
            step *= 2

    def upcoming(self, after: dt.datetime, count: int) -> list[dt.datetime]:
        ticks, at = [], after
        for _ in range(count):
            at = self.next_after(at)
            ticks.append(at)
        return ticks

    # -------------------------------------------------------------- wall clock

    def _first_at_or_after(self, wall: dt.datetime) -> dt.datetime:
        with self._lock:
            self._matches.set_current(wall - _TINY, force=True)
            return self._matches.get_next(dt.datetime)

    def _offsets(self, wall: dt.datetime) -> tuple[dt.timedelta | None, dt.timedelta | None]:
        return (wall.replace(tzinfo=self.zone, fold=0).utcoffset(),
                wall.replace(tzinfo=self.zone, fold=1).utcoffset())

    def _ambiguous(self, wall: dt.datetime) -> bool:
        before, after = self._offsets(wall)
        return before is not None and after is not None and before > after

    def _fold_delta(self, wall: dt.datetime) -> dt.timedelta:
        before, after = self._offsets(wall)
        assert before is not None and after is not None
        return before - after

    def _instants(self, wall: dt.datetime) -> list[dt.datetime]:
        """The instants a matching wall-clock time fires at, earliest first."""
        fold0 = wall.replace(tzinfo=self.zone, fold=0)
        fold1 = wall.replace(tzinfo=self.zone, fold=1)
        if fold0.utcoffset() == fold1.utcoffset():
            return [fold0.astimezone(UTC)]
        # fold=0 reads the wall-clock time with the offset before the transition.
        with_before, with_after = fold0.astimezone(UTC), fold1.astimezone(UTC)
        if with_before < with_after:  # it happens twice (fall back)
            return [with_before, with_after] if self.realtime else [with_before]
        # It does not exist (spring forward): the first instant after the gap.
        return [self._transition(with_after, with_before)]

    def _transition(self, low: dt.datetime, high: dt.datetime) -> dt.datetime:
        """The first instant in (low, high] with high's UTC offset (transitions fall on whole
        seconds)."""
        target = high.astimezone(self.zone).utcoffset()
        low, high = low.astimezone(UTC), high.astimezone(UTC)
        while high - low > _SECOND:
            middle = low + (high - low) / 2
            middle = middle.replace(microsecond=0)
            if middle <= low:
                middle = low + _SECOND
            if middle.astimezone(self.zone).utcoffset() == target:
                high = middle
            else:
                low = middle
        return high


@functools.lru_cache(maxsize=1024)
def cron(expression: str, timezone: str) -> Cron:
    """A parsed Cron (cached: a pass parses each schedule's expression once)."""
    return Cron(expression, timezone)


# ---------------------------------------------------------------------- plans

@dataclass
class Plan:
    """What one pass does with one due schedule."""

    #: (tick, late, reason) of each tick to fire, in order.
    fire: list[tuple[dt.datetime, bool, str]] = field(default_factory=list)
    #: (tick, reason) of each tick recorded as missed.
    missed: list[tuple[dt.datetime, str]] = field(default_factory=list)
    #: The new cursor: the next tick not handled.
    next_run_at: dt.datetime | None = None


def plan(schedule: Cron, cursor: dt.datetime, now: dt.datetime, *, catch_up: str = "latest",
         catch_up_within: float = 3600.0, resumed_at: dt.datetime | None = None) -> Plan:
    """Which ticks from ``cursor`` (a tick, the first not handled) up to ``now`` fire, which are
    missed, and the next cursor. Ticks within ON_TIME of now fire whatever the policy; older
    ones (late) follow ``catch_up``: ``skip`` records them missed, ``latest`` fires the latest
    within ``catch_up_within`` once when no tick on time fires anyway, ``all`` fires every one
    within ``catch_up_within``, CATCH_UP_BATCH per pass. Ticks before ``resumed_at`` came while
    the schedule was paused: missed, never caught up."""
    if catch_up not in CATCH_UP_POLICIES:
        raise errors.ConfigurationError(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, not {catch_up!r}")
    result = Plan()
    on_time_from = now - dt.timedelta(seconds=ON_TIME)
    window_from = min(now - dt.timedelta(seconds=catch_up_within), on_time_from)
    # The cursor is a tick, unless it was written by hand.
    tick = schedule.first_at_or_after(cursor)
    if tick > now:
        result.next_run_at = tick
        return result

    def late_by(t: dt.datetime) -> str:
        return f"late by {(now - t).total_seconds():.1f} s"

    if resumed_at is not None and tick < resumed_at:
        tick = _record_missed(schedule, tick, min(resumed_at, now + _TINY), result.missed,
                              lambda t: "paused")
    if catch_up == "skip":
        late_until = on_time_from
    else:
        # Older than the window: too old for any catch-up.
        late_until = window_from
    if tick < late_until:
        what = "catch-up skip" if catch_up == "skip" else f"outside catch_up_within ({catch_up_within:g} s)"
        tick = _record_missed(schedule, tick, late_until, result.missed,
                              lambda t: f"{late_by(t)}: {what}")
    if tick < on_time_from:
        # Late, within the window: the policy decides (skip has no such ticks left).
        if catch_up == "all":
            fired = 0
            while tick < on_time_from and tick <= now:
                if fired == CATCH_UP_BATCH:
                    result.next_run_at = tick  # the next pass goes on from here
                    return result
                result.fire.append((tick, True, f"{late_by(tick)} (catch-up all)"))
                fired += 1
                tick = schedule.next_after(tick)
        else:
            latest = schedule.latest_at_or_before(on_time_from - _TINY, tick)
            on_time = schedule.first_at_or_after(on_time_from)
            if on_time <= now:
                # A tick on time fires now anyway: it stands for the missed ones.
                tick = _record_missed(schedule, tick, on_time_from, result.missed,
                                      lambda t: f"{late_by(t)}: superseded by the tick on time at "
                                                f"{iso(on_time)} (catch-up latest)")
            else:
                assert latest is not None
                tick = _record_missed(schedule, tick, latest, result.missed,
                                      lambda t: f"{late_by(t)}: superseded by the catch-up of the "
                                                f"tick at {iso(latest)} (catch-up latest)")
                result.fire.append((latest, True, f"{late_by(latest)} (catch-up latest)"))
                tick = schedule.next_after(latest)
    while tick <= now:
        result.fire.append((tick, False, "on time" if now - tick < _SECOND
                            else f"on time (after {(now - tick).total_seconds():.1f} s)"))
        tick = schedule.next_after(tick)
    result.next_run_at = tick
    return result


def _record_missed(schedule: Cron, tick: dt.datetime, until: dt.datetime,
                   out: list[tuple[dt.datetime, str]], reason) -> dt.datetime:
    """Record the ticks from ``tick`` up to (not including) ``until`` as missed, MAX_LISTED one
    by one and then one row for the rest; returns the first tick at or after ``until``."""
    listed = 0
    while tick < until:
        if listed == MAX_LISTED:
            out.append((tick, f"{reason(tick)}; so were the later ticks before {iso(until)}, not "
                              "listed one by one"))
            return schedule.first_at_or_after(until)
        out.append((tick, reason(tick)))
        listed += 1
        tick = schedule.next_after(tick)
    return tick


def iso(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
