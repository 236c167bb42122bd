"""Cron ticks in time zones, daylight-saving days and the catch-up plan: pure arithmetic, driven
with explicit instants (no database, no sleeping)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

import pgqueue
from pgqueue import cron as crons
from pgqueue.cron import Cron, plan

UTC = dt.timezone.utc
BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def ticks(expression: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    schedule, out, at = Cron(expression, zone), [], start
    while (at := schedule.next_after(at)) <= end:
        out.append(at)
    return out


def walls(instants: list[dt.datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M %Z") for t in instants]


# 2026: Berlin springs forward on 29 March at 02:00 (to 03:00 CEST) and falls back on 25 October
# at 03:00 (to 02:00 CET); New York springs forward on 8 March at 02:00 (to 03:00 EDT) and falls
# back on 1 November at 02:00 (to 01:00 EST).
DAYS = {
    BERLIN: {"spring": (utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)),
             "fall": (utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)),
             "gap": "2", "repeated": "2"},
    NEW_YORK: {"spring": (utc(2026, 3, 7, 17), utc(2026, 3, 8, 16)),
               "fall": (utc(2026, 10, 31, 16), utc(2026, 11, 1, 17)),
               "gap": "2", "repeated": "1"},
}


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_a_time_in_the_spring_gap_fires_once_right_after_it(zone) -> None:
    start, end = DAYS[zone]["spring"]
    fired = ticks(f"30 {DAYS[zone]['gap']} * * *", zone, start, end)
    summer = "CEST" if zone == BERLIN else "EDT"
    assert walls(fired, zone) == [f"{fired[0].astimezone(ZoneInfo(zone)):%m-%d} 03:00 {summer}"], (
        "02:30 does not exist that day: it must fire once, at the first instant after the gap")


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_a_time_in_the_repeated_hour_fires_once(zone) -> None:
    start, end = DAYS[zone]["fall"]
    hour = DAYS[zone]["repeated"]
    fired = ticks(f"30 {hour} * * *", zone, start, end)
    summer = "CEST" if zone == BERLIN else "EDT"
    assert len(fired) == 1 and walls(fired, zone)[0].endswith(f"0{hour}:30 {summer}"), walls(fired, zone)
    # Every minute of that hour, fixed: once each (the first pass), not twice.
    fixed = ticks(f"*/10 {hour} * * *", zone, start, end)
    assert len(fixed) == 6 and len(set(walls(fixed, zone))) == 6, walls(fixed, zone)


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("day", ["spring", "fall"])
def test_a_real_time_schedule_fires_at_every_real_instant(zone, day) -> None:
    start, end = DAYS[zone][day]
    fired = ticks("*/15 * * * *", zone, start, end)
    gaps = {b - a for a, b in zip(fired, fired[1:])}
    assert gaps == {dt.timedelta(minutes=15)}, f"*/15 must fire every 15 real minutes: {walls(fired, zone)}"
    assert fired[0] - start <= dt.timedelta(minutes=15) and end - fired[-1] < dt.timedelta(minutes=15)
    hourly = ticks("0 * * * *", zone, start, end)
    assert {b - a for a, b in zip(hourly, hourly[1:])} == {dt.timedelta(hours=1)}, walls(hourly, zone)
    per_second = ticks("* * * * * *", zone, start - dt.timedelta(seconds=1), start + dt.timedelta(seconds=5))
    assert len(per_second) == 6


def test_around_the_transitions_instant_by_instant() -> None:
    ny = Cron("*/15 * * * *", NEW_YORK)
    # 01:45 EST, then the gap: 03:00 EDT is 15 real minutes later.
    assert ny.next_after(utc(2026, 3, 8, 6, 45)) == utc(2026, 3, 8, 7, 0)
    # Fall back: 01:45 EDT (05:45Z) -> 01:00 EST (06:00Z), and on.
    assert ny.next_after(utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 1, 6, 0)
    assert ny.next_after(utc(2026, 11, 1, 6, 50)) == utc(2026, 11, 1, 7, 0)
    fixed = Cron("30 1 * * *", NEW_YORK)
    # In the second pass of 01:xx the fixed 01:30 already fired: next is the day after.
    assert fixed.next_after(utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 30)
    assert fixed.next_after(utc(2026, 11, 1, 5, 0)) == utc(2026, 11, 1, 5, 30)
    both = Cron("0 2,3 * * *", NEW_YORK)  # 02:00 does not exist on 8 March; 03:00 does: one tick
    assert ticks("0 2,3 * * *", NEW_YORK, utc(2026, 3, 8, 5), utc(2026, 3, 8, 9)) == [utc(2026, 3, 8, 7)]
    assert both.next_after(utc(2026, 3, 8, 7)) == utc(2026, 3, 9, 6)


def test_expressions_aliases_and_refusals() -> None:
    assert Cron("@hourly", "UTC").next_after(utc(2026, 1, 1, 10, 30)) == utc(2026, 1, 1, 11)
    assert Cron("@daily", "UTC").realtime is False and Cron("@hourly", "UTC").realtime is True
    assert Cron("* * * * * */10", "UTC").next_after(utc(2026, 1, 1, 10, 0, 1)) == utc(2026, 1, 1, 10, 0, 10)
    assert Cron("0 9 * * 1-5", BERLIN).next_after(utc(2026, 1, 2, 9)) == utc(2026, 1, 5, 8)  # Monday
    for expression, fragment in [("61 * * * *", "not valid"), ("* * * *", "4 fields"),
                                 ("* * * * * * *", "7 fields"), ("0 0 30 2 *", "never fires"),
                                 ("@reboot", "unknown alias"), ("H * * * *", "hashed"),
                                 ("", "cron expression")]:
        with pytest.raises(pgqueue.ConfigurationError, match=fragment):
            Cron(expression, "UTC")
    with pytest.raises(pgqueue.ConfigurationError, match="not an IANA time zone"):
        Cron("* * * * *", "Mars/Olympus_Mons")


def test_latest_tick_before_an_instant_is_found_without_walking_the_window() -> None:
    schedule = Cron("0 9 * * *", "UTC")
    now = utc(2026, 6, 10, 8)
    assert schedule.latest_at_or_before(now, now - dt.timedelta(days=400)) == utc(2026, 6, 9, 9)
    assert schedule.latest_at_or_before(now, now - dt.timedelta(hours=3)) is None
    second = Cron("* * * * * *", "UTC")
    assert second.latest_at_or_before(utc(2026, 1, 1, 0, 0, 5, 500), utc(2025, 1, 1)) == utc(2026, 1, 1, 0, 0, 5)


# ------------------------------------------------------------------- plans

MINUTELY = Cron("* * * * *", "UTC")
NOW = utc(2026, 1, 1, 12, 0, 30)


def test_ticks_on_time_fire_whatever_the_policy() -> None:
    schedule = Cron("* * * * * *", "UTC")
    for policy in crons.CATCH_UP_POLICIES:
        result = plan(schedule, NOW - dt.timedelta(seconds=3), NOW, catch_up=policy)
        assert [t for t, _, _ in result.fire] == [NOW - dt.timedelta(seconds=s) for s in (3, 2, 1, 0)]
        assert not any(late for _, late, _ in result.fire) and not result.missed
        assert result.next_run_at == NOW + dt.timedelta(seconds=1)


def test_after_downtime_each_policy() -> None:
    cursor = utc(2026, 1, 1, 10, 0)  # down since 10:00, now 12:00:30: 120 ticks due, none on time
    skip = plan(MINUTELY, cursor, NOW, catch_up="skip")
    assert skip.fire == [] and len(skip.missed) == 101  # 100 listed, one row for the rest
    assert "catch-up skip" in skip.missed[0][1] and "not listed one by one" in skip.missed[-1][1]
    latest = plan(MINUTELY, cursor, NOW, catch_up="latest")
    assert [(t, late) for t, late, _ in latest.fire] == [(utc(2026, 1, 1, 12, 0), True)]
    assert "superseded by the catch-up of the tick at 2026-01-01T12:00:00Z" in latest.missed[-1][1]
    assert "outside catch_up_within" in latest.missed[0][1]
    every = plan(MINUTELY, cursor, NOW, catch_up="all")
    assert [t for t, _, _ in every.fire] == [utc(2026, 1, 1, 11, m) for m in range(1, 60)] + [utc(2026, 1, 1, 12)]
    for result in (skip, latest, every):
        assert result.next_run_at == utc(2026, 1, 1, 12, 1)
    # A tick on time stands for the missed ones under "latest".
    on_time = plan(MINUTELY, cursor, utc(2026, 1, 1, 12, 0, 4), catch_up="latest")
    assert [(t, late) for t, late, _ in on_time.fire] == [(utc(2026, 1, 1, 12, 0), False)]


def test_catch_up_all_goes_on_at_the_next_pass() -> None:
    schedule = Cron("* * * * * *", "UTC")
    cursor = NOW - dt.timedelta(minutes=5)
    first = plan(schedule, cursor, NOW, catch_up="all")
    assert len(first.fire) == crons.CATCH_UP_BATCH and first.next_run_at == cursor + dt.timedelta(seconds=100)
    second = plan(schedule, first.next_run_at, NOW, catch_up="all")
    assert second.fire[0][0] == cursor + dt.timedelta(seconds=100)


def test_ticks_while_paused_are_missed_not_caught_up() -> None:
    resumed = utc(2026, 1, 1, 11, 30)
    result = plan(MINUTELY, utc(2026, 1, 1, 11, 0), NOW, catch_up="all", resumed_at=resumed)
    paused = [t for t, reason in result.missed if reason == "paused"]
    assert paused == [utc(2026, 1, 1, 11, m) for m in range(30)]
    assert result.fire[0][0] == resumed


def test_a_cursor_written_by_hand_goes_to_the_next_tick() -> None:
    result = plan(MINUTELY, utc(2026, 1, 1, 12, 0, 0, 123), utc(2026, 1, 1, 12, 1, 2))
    assert [t for t, _, _ in result.fire] == [utc(2026, 1, 1, 12, 1)]


def _by_the_rules(expression: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The ticks in (start, end] by the documented rules, the slow way: every real minute whose
    wall-clock time matches (the second pass of a repeated hour only for real-time schedules),
    plus the first instant after a gap for each matching wall-clock time inside it."""
    from croniter import croniter

    local, realtime = ZoneInfo(zone), Cron(expression, zone).realtime
    first_wall = start.astimezone(local).replace(tzinfo=None) - dt.timedelta(hours=3)
    last_wall = end.astimezone(local).replace(tzinfo=None) + dt.timedelta(hours=3)
    matching, walls_ = set(), croniter(expression, first_wall)
    while (wall := walls_.get_next(dt.datetime)) <= last_wall:
        matching.add(wall)
    found, at = set(), start + dt.timedelta(minutes=1)
    while at <= end:
        wall = at.astimezone(local)
        if wall.replace(tzinfo=None) in matching and (wall.fold == 0 or realtime):
            found.add(at)
        at += dt.timedelta(minutes=1)
    for wall in matching:
        before, after = wall.replace(tzinfo=local, fold=0), wall.replace(tzinfo=local, fold=1)
        if before.astimezone(UTC) > after.astimezone(UTC):  # inside a gap
            first_after_gap = after.astimezone(UTC)
            while first_after_gap.astimezone(local).utcoffset() != after.utcoffset():
                first_after_gap += dt.timedelta(minutes=1)
            if start < first_after_gap <= end:
                found.add(first_after_gap)
    return sorted(found)


TRANSITION_DAYS = {BERLIN: (utc(2026, 3, 29), utc(2026, 10, 25)), NEW_YORK: (utc(2026, 3, 8), utc(2026, 11, 1)),
                   "Australia/Lord_Howe": (utc(2026, 4, 5), utc(2026, 10, 4))}


@pytest.mark.parametrize("zone", list(TRANSITION_DAYS))
@pytest.mark.parametrize("expression", ["*/20 * * * *", "30 2 * * *", "10,40 1-3 * * *", "45 */2 * * *"])
def test_ticks_agree_with_the_rules_computed_minute_by_minute(zone, expression) -> None:
    """Lord Howe shifts by 30 minutes: nothing assumes an hour."""
    for day in TRANSITION_DAYS[zone]:
        start, end = day - dt.timedelta(hours=14), day + dt.timedelta(hours=14)
        assert ticks(expression, zone, start, end) == _by_the_rules(expression, zone, start, end), (zone, day)
