"""Schedules against the database: sync, firing with the clock pinned through the database
(daylight-saving days, downtime, racing runners), overlap, orphans, controls, retention, CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from zoneinfo import ZoneInfo

import psycopg
import pytest

import pgqueue
from pgqueue import schedules as schedules_module
from pgqueue.context import JobContext
from pgqueue.cron import Cron
from pgqueue.worker.connections import BorrowedConnection
from pgqueue.worker.firing import Firing
from pgqueue.worker.retention import Retention
from sqlrunner import maintain, register

UTC = dt.timezone.utc


def sync(app: pgqueue.App, conn: psycopg.Connection, runner: int | None = None, **options) -> tuple[int, object]:
    """Declare the App's schedules as a (new, unless given) runner, as a runner's start does."""
    runner = runner if runner is not None else register(app, conn)
    return runner, schedules_module.sync(app, BorrowedConnection(conn), runner, **options)


def fire(app: pgqueue.App, conn: psycopg.Connection, now: dt.datetime | None = None, runner: int | None = None):
    """One pass's firing, with the database's clock pinned at ``now``."""
    return Firing(queries=app.queries).run_once(BorrowedConnection(conn), runner, now=now)


def events(conn: psycopg.Connection, schema: str, schedule_id: str, kinds=("fired", "missed", "skipped")) -> list[tuple]:
    return conn.execute(
        f'SELECT kind, tick, job_id, reason FROM "{schema}".schedule_events '
        "WHERE schedule_id = %s AND kind = ANY(%s) ORDER BY id", (schedule_id, list(kinds))).fetchall()


def set_cursor(conn: psycopg.Connection, schema: str, schedule_id: str, at: dt.datetime) -> None:
    conn.execute(f'UPDATE "{schema}".schedules SET next_run_at = %s WHERE id = %s', (at, schedule_id))


def db_now(conn: psycopg.Connection) -> dt.datetime:
    return conn.execute("SELECT now()").fetchone()[0]


@pytest.fixture
def noop(app: pgqueue.App):
    return app.task(name="noop")(lambda *args, **kwargs: None)


# ------------------------------------------------------- daylight saving

DST_DAYS = {
    # zone, day start (local midnight) as UTC, hours that day, the gap's or repeated hour
    ("Europe/Berlin", "spring"): (dt.datetime(2026, 3, 28, 23, tzinfo=UTC), 23, 2),
    ("Europe/Berlin", "fall"): (dt.datetime(2026, 10, 24, 22, tzinfo=UTC), 25, 2),
    ("America/New_York", "spring"): (dt.datetime(2026, 3, 8, 5, tzinfo=UTC), 23, 2),
    ("America/New_York", "fall"): (dt.datetime(2026, 11, 1, 4, tzinfo=UTC), 25, 1),
}


@pytest.mark.parametrize(("zone", "day"), list(DST_DAYS))
def test_a_daylight_saving_day_driven_through_the_database(app, admin, noop, zone, day) -> None:
    """The clock is pinned (schedule_due's now) at each next tick plus half a second, through a
    whole spring-forward or fall-back day: what fires is what the rules say, once each."""
    start, hours, hour = DST_DAYS[(zone, day)]
    schema = app.settings.schema
    app.schedule(noop, id="fixed", cron=f"30 {hour} * * *", timezone=zone)
    app.schedule(noop, id="quarter", cron="*/15 * * * *", timezone=zone)
    app.schedule(noop, id="hourly", cron="@hourly", timezone=zone)
    runner, _ = sync(app, admin)
    for schedule_id in ("fixed", "quarter", "hourly"):
        set_cursor(admin, schema, schedule_id, start)
    end = start + dt.timedelta(hours=hours)
    passes = 0
    while True:
        cursor = admin.execute(f'SELECT min(next_run_at) FROM "{schema}".schedules').fetchone()[0]
        if cursor >= end:
            break
        fire(app, admin, now=cursor + dt.timedelta(milliseconds=500), runner=runner)
        passes += 1
        assert passes < 200, "the cursor does not move"
    local = ZoneInfo(zone)

    def fired(schedule_id: str) -> list[dt.datetime]:
        rows = events(admin, schema, schedule_id)
        assert all(kind == "fired" for kind, *_ in rows), rows
        assert all(reason == "on time" for *_, reason in rows), rows
        return [tick for _, tick, _, _ in rows if tick < end]

    quarter = fired("quarter")
    assert len(quarter) == hours * 4 and {b - a for a, b in zip(quarter, quarter[1:])} == {dt.timedelta(minutes=15)}
    hourly = fired("hourly")
    assert len(hourly) == hours and {b - a for a, b in zip(hourly, hourly[1:])} == {dt.timedelta(hours=1)}
    fixed = [t.astimezone(local).strftime("%H:%M") for t in fired("fixed")]
    assert fixed == (["03:00"] if day == "spring" else [f"0{hour}:30"]), (
        "a time in the gap fires once right after it; a time in the repeated hour fires once")
    jobs = admin.execute(f'SELECT meta FROM "{schema}".jobs WHERE meta->>\'schedule\' = \'quarter\' ORDER BY id').fetchall()
    assert [dt.datetime.fromisoformat(m["scheduled_for"]) for (m,) in jobs][:len(quarter)] == quarter
    assert not any(m["late"] for (m,) in jobs)


# ------------------------------------------------------------- exactly once

def test_ten_runners_racing_fire_each_tick_once(app, admin, noop, database_dsn) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="racy", cron="* * * * * *", catch_up="all")
    runner, _ = sync(app, admin)
    start = db_now(admin).replace(microsecond=0) + dt.timedelta(seconds=1)
    set_cursor(admin, schema, "racy", start)
    conns = [psycopg.connect(database_dsn, autocommit=True) for _ in range(10)]
    try:
        for step in range(5):
            now = start + dt.timedelta(seconds=step * 3 + 2.5)  # three ticks due per round
            barrier = threading.Barrier(len(conns))
            results: list[object] = []

            def race(conn: psycopg.Connection) -> None:
                barrier.wait()
                try:
                    results.append(fire(app, conn, now=now, runner=runner))
                except Exception as exc:  # reported below
                    results.append(exc)

            threads = [threading.Thread(target=race, args=(c,)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not [r for r in results if isinstance(r, Exception)], results
            assert sum(r.fired for r in results) == 3, results
    finally:
        for c in conns:
            c.close()
    rows = events(admin, schema, "racy")
    assert [tick for _, tick, _, _ in rows] == [start + dt.timedelta(seconds=s) for s in range(15)]
    assert admin.execute(f'SELECT count(*), count(DISTINCT meta->>\'scheduled_for\') FROM "{schema}".jobs').fetchone() == (15, 15)


def test_a_new_schedule_never_back_fills(app, admin, noop) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="fresh", cron="* * * * *", catch_up="all", catch_up_within=86_400)
    created_at = db_now(admin)
    sync(app, admin)
    assert fire(app, admin).fired == 0
    row = app.schedules.get("fresh")
    assert row["next_run_at"] > created_at and row["next_run_at"] - created_at <= dt.timedelta(minutes=1)
    result = fire(app, admin, now=row["next_run_at"] + dt.timedelta(seconds=1))
    assert (result.fired, result.missed) == (1, 0)
    assert [r[0] for r in events(admin, schema, "fresh", kinds=("created", "fired"))] == ["created", "fired"]


def test_downtime_follows_each_catch_up_policy(app, admin, noop) -> None:
    schema = app.settings.schema
    for policy in ("skip", "latest", "all"):
        app.schedule(noop, id=policy, cron="*/10 * * * *", catch_up=policy, catch_up_within=3600)
    runner, _ = sync(app, admin)
    down_since = dt.datetime(2026, 1, 1, 9, 0, 5, tzinfo=UTC)
    for policy in ("skip", "latest", "all"):
        set_cursor(admin, schema, policy, dt.datetime(2026, 1, 1, 9, 10, tzinfo=UTC))
    back = dt.datetime(2026, 1, 1, 12, 5, tzinfo=UTC)  # 3 h down: 18 ticks due, none on time
    assert back - down_since > dt.timedelta(hours=3)
    fire(app, admin, now=back, runner=runner)
    late = {p: [(t, reason) for kind, t, _, reason in events(admin, schema, p) if kind == "fired"]
            for p in ("skip", "latest", "all")}
    assert late["skip"] == []
    assert [t.hour * 60 + t.minute for t, _ in late["latest"]] == [12 * 60]
    assert [t.strftime("%H:%M") for t, _ in late["all"]] == ["11:10", "11:20", "11:30", "11:40", "11:50", "12:00"]
    assert all("late by" in reason for p in late for _, reason in late[p])
    missed = {p: len([1 for kind, *_ in events(admin, schema, p) if kind == "missed"]) for p in late}
    assert missed == {"skip": 18, "latest": 17, "all": 12}
    metas = [m for (m,) in admin.execute(f'SELECT meta FROM "{schema}".jobs ORDER BY id')]
    assert metas and all(m["late"] is True for m in metas)
    # Everything is handled: the next pass has nothing to do.
    assert fire(app, admin, now=back).schedules == 0


# ------------------------------------------------------------------ overlap

def test_overlap_skip_records_the_skipped_tick_and_never_raises(app, admin, noop) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="single", cron="* * * * *", overlap="skip")
    app.schedule(noop, id="many", cron="* * * * *")
    runner, _ = sync(app, admin)
    first = dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for schedule_id in ("single", "many"):
        set_cursor(admin, schema, schedule_id, first)
    fire(app, admin, now=first + dt.timedelta(seconds=1), runner=runner)
    result = fire(app, admin, now=first + dt.timedelta(minutes=1, seconds=1), runner=runner)
    assert (result.fired, result.skipped) == (1, 1)
    rows = events(admin, schema, "single")
    holder = rows[0][2]
    assert [r[0] for r in rows] == ["fired", "skipped"]
    assert rows[1][3] == f"overlap: job {holder} of an earlier tick is still queued or running"
    # Its job finished: the next tick fires again.
    admin.execute(f"UPDATE \"{schema}\".jobs SET status = 'succeeded', finished_at = now(), due = false "
                  "WHERE id = %s", (holder,))
    assert fire(app, admin, now=first + dt.timedelta(minutes=2, seconds=1), runner=runner).fired == 2


# ----------------------------------------------------- sync and orphans

def test_sync_is_additive_and_the_runner_that_started_last_wins(app, make_app, admin, noop, caplog) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="report", cron="0 7 * * *", timezone="Europe/Berlin", args=(1,))
    old_runner, result = sync(app, admin)
    assert result.created == ("report",)
    before = app.schedules.get("report")

    new = make_app()
    new_task = new.task(name="noop")(lambda *args, **kwargs: None)
    new.schedule(new_task, id="report", cron="0 8 * * *", timezone="Europe/Berlin", args=(1,))
    new.schedule(new_task, id="added", cron="@daily")
    caplog.set_level("WARNING")
    new_runner, result = sync(new, admin)
    assert (result.created, result.redefined) == (("added",), ("report",))
    assert "live runner" in caplog.text and "declares another cron" in caplog.text
    after = new.schedules.get("report")
    assert after["cron"] == "0 8 * * *" and after["next_run_at"] != before["next_run_at"]
    assert after["next_run_at"].astimezone(ZoneInfo("Europe/Berlin")).hour == 8
    redefined = events(admin, schema, "report", kinds=("redefined",))[0][3]
    assert "cron '0 7 * * *' -> '0 8 * * *'" in redefined

    # The old runner registers again (a lost lease): it renews its declaration, changes nothing.
    _, result = sync(app, admin, runner=register(app, admin), redefine=False)
    assert result.redefined == () and new.schedules.get("report")["cron"] == "0 8 * * *"
    # Arguments change, timing does not: the cursor stays.
    new.schedules.declared.pop("report")
    new.schedule(new_task, id="report", cron="0 8 * * *", timezone="Europe/Berlin", args=(2,))
    sync(new, admin, runner=new_runner)
    again = new.schedules.get("report")
    assert again["args"] == [2] and again["next_run_at"] == after["next_run_at"]
    # Schedules no code declares any more are never deleted by a sync.
    assert {r["id"] for r in new.schedules.list()} == {"report", "added"}
    assert old_runner != new_runner


def test_an_undeclared_schedule_is_orphaned_then_resumes_when_declared_again(app, admin, noop) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="nightly", cron="0 3 * * *", catch_up="latest", catch_up_within=86_400)
    runner, _ = sync(app, admin)
    tick = dt.datetime(2026, 1, 2, 3, tzinfo=UTC)
    set_cursor(admin, schema, "nightly", tick)
    admin.execute(f"UPDATE \"{schema}\".runners SET state = 'stopped', stopped_at = now() WHERE id = %s", (runner,))
    assert app.schedules.get("nightly")["orphaned"] is True  # shown at once
    result = fire(app, admin, now=tick + dt.timedelta(seconds=1))
    assert (result.orphaned, result.fired) == (1, 0)
    row = app.schedules.get("nightly")
    assert row["orphaned_at"] is not None and row["next_run_at"] == tick  # cursor kept, nothing lost
    # Orphaned schedules are out of the index: passes no longer look at them.
    assert fire(app, admin, now=tick + dt.timedelta(days=2)).schedules == 0
    with pytest.raises(pgqueue.ConfigurationError, match="declared by"):
        sync(app, admin)  # declared again (a new runner)...
        app.schedules.remove("nightly")  # ...so it cannot be removed
    assert app.schedules.get("nightly")["orphaned"] is False
    fired = fire(app, admin, now=tick + dt.timedelta(hours=30))
    assert fired.fired == 1  # the catch-up policy decides about the ticks meanwhile: the latest
    kinds = [k for k, *_ in events(admin, schema, "nightly", kinds=("orphaned", "declared", "fired", "missed"))]
    assert kinds == ["orphaned", "declared", "missed", "fired"]


def test_remove_deletes_only_orphans_and_keeps_the_history(app, admin, noop) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="gone", cron="@hourly")
    runner, _ = sync(app, admin)
    with pytest.raises(pgqueue.ConfigurationError, match="declared by 1 live runner"):
        app.schedules.remove("gone")
    admin.execute(f"UPDATE \"{schema}\".runners SET state = 'dead', stopped_at = now() WHERE id = %s", (runner,))
    app.schedules.remove("gone")
    with pytest.raises(pgqueue.ScheduleNotFound, match="there is no schedule 'gone'"):
        app.schedules.get("gone")
    assert [k for k, *_ in events(admin, schema, "gone", kinds=("created", "removed"))] == ["created", "removed"]


# ----------------------------------------------------------------- controls

def test_pause_resume_and_trigger(app, admin, noop) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="ops", cron="* * * * *", catch_up="all", catch_up_within=86_400, args=(5,))
    runner, _ = sync(app, admin)
    assert app.schedules.pause("ops", reason="maintenance window") is True
    assert app.schedules.pause("ops") is False
    assert fire(app, admin, now=db_now(admin) + dt.timedelta(minutes=10)).schedules == 0
    job = app.schedules.trigger("ops")  # works while paused, moves nothing
    assert job.created and job.info()["args"] == [5] and job.info()["meta"]["triggered"] is True
    assert app.schedules.get("ops")["last_job_id"] == job.id
    cursor = app.schedules.get("ops")["next_run_at"]
    set_cursor(admin, schema, "ops", cursor - dt.timedelta(minutes=3))  # paused for three ticks
    assert app.schedules.resume("ops") is True and app.schedules.resume("ops") is False
    result = fire(app, admin, runner=runner)
    assert result.fired == 0 and result.missed >= 3
    assert {r[3] for r in events(admin, schema, "ops") if r[0] == "missed"} == {"paused"}
    history = app.schedules.history("ops", limit=10)
    assert {"paused", "resumed", "triggered"} <= {h["kind"] for h in history}
    assert len(app.schedules.upcoming("ops", 3)) == 3
    with pytest.raises(pgqueue.ScheduleNotFound):
        app.schedules.pause("nope")


def test_a_schedule_that_cannot_be_fired_is_paused_and_the_others_fire(app, admin, noop) -> None:
    schema = app.settings.schema
    app.schedule(noop, id="broken", cron="* * * * *")
    app.schedule(noop, id="fine", cron="* * * * *")
    app.schedule(noop, id="bad_queue", cron="* * * * *")
    runner, _ = sync(app, admin)
    admin.execute(f"UPDATE \"{schema}\".schedules SET cron = 'every tuesday' WHERE id = 'broken'")
    # A value the table accepts and enqueue_job refuses: the batch fails, then each on its own.
    admin.execute(f"UPDATE \"{schema}\".schedules SET queue = ' padded ' WHERE id = 'bad_queue'")
    now = app.schedules.get("fine")["next_run_at"] + dt.timedelta(seconds=1)
    result = fire(app, admin, now=now, runner=runner)
    assert (result.fired, result.paused) == (1, 2)
    broken = app.schedules.get("broken")
    assert broken["paused"] and "cannot be computed" in broken["pause_reason"]
    assert "queue must be a name" in app.schedules.get("bad_queue")["pause_reason"]
    assert app.schedules.get("bad_queue")["paused"]


def test_a_maintenance_pass_fires_and_the_due_look_is_one_index_probe(app, admin, noop) -> None:
    schema = app.settings.schema
    for n in range(1000):
        app.schedule(noop, id=f"s{n}", cron="* * * * *", args=(n,))
    runner, _ = sync(app, admin)
    admin.execute(f'ANALYZE "{schema}".schedules')
    with admin.transaction(force_rollback=True):
        admin.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in admin.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + app.queries.schedule_due.replace("%(now)s", "NULL")
            .replace("%(limit)s", "500")).fetchall())
    assert "schedules_due_idx" in plan, plan
    touched = re.search(r"Buffers: shared hit=(\d+)", plan)
    assert touched and int(touched.group(1)) < 20, plan
    # One tick, a thousand schedules: one pass fires them all.
    from pgqueue.worker.maintenance import Maintenance

    passes = Maintenance(queries=app.queries, interval=0.001, dead_after=10, max_crashes=3,
                         process_checks=False, statement_timeout=30, firing=Firing(queries=app.queries))
    admin.execute(f"UPDATE \"{schema}\".schedules SET next_run_at = date_trunc('minute', now())")
    result = passes.run_once(BorrowedConnection(admin), runner)
    assert result.fired == 1000
    assert admin.execute(f"SELECT count(DISTINCT meta->>'schedule') FROM \"{schema}\".jobs").fetchone()[0] == 1000


# ------------------------------------------------------------ inside a job

def test_current_job_tells_the_tick_and_whether_it_is_late() -> None:
    context = JobContext(1, "t", 1, "default", 7, meta={
        "schedule": "nightly", "scheduled_for": "2026-03-08T07:00:00.000000+00:00", "late": True})
    assert context.schedule == "nightly" and context.late is True
    assert context.scheduled_for == dt.datetime(2026, 3, 8, 7, tzinfo=UTC)
    plain = JobContext(2, "t", 1, "default", 7, meta={"scheduled_for": "whenever"})
    assert (plain.schedule, plain.scheduled_for, plain.late) == (None, None, False)


def test_definitions_are_checked_at_declaration(app, noop) -> None:
    other = app.task(name="other")(lambda: None)
    with pytest.raises(pgqueue.ConfigurationError, match=r"schedule 'noop' \(task 'noop'\): cron '\* \* \*'"):
        app.schedule(noop, cron="* * *")
    with pytest.raises(pgqueue.ConfigurationError, match="schedule 'x'.*overlap must be one of allow, skip"):
        app.schedule(noop, id="x", cron="@daily", overlap="queue")
    with pytest.raises(pgqueue.ConfigurationError, match="schedule 'x'.*cannot be called with these arguments"):
        app.schedule(other, id="x", cron="@daily", args=(1, 2))
    with pytest.raises(pgqueue.ConfigurationError, match="above @app.task"):
        app.periodic(cron="@daily")(lambda: None)
    app.periodic(cron="@daily")(other)
    with pytest.raises(pgqueue.ConfigurationError, match="more than one schedule.*give each an id"):
        app.periodic(cron="@hourly", id="other-hourly")(other)
    app.periodic(cron="@daily", id="noop-a")(noop)
    app.periodic(cron="@hourly", id="noop-b", catch_up_within=dt.timedelta(minutes=5))(noop)
    assert app.schedules.declared["noop-b"].catch_up_within == 300


# --------------------------------------------------------------- retention

def seed_finished(admin: psycopg.Connection, schema: str, status: str, count: int, age: str,
                  key_until: str | None = None) -> None:
    admin.execute(
        f'INSERT INTO "{schema}".jobs (task, status, finished_at, due, scoped_key, key_scope, key_until) '
        f"SELECT 'noop', %s, now() - %s::interval, false, "
        f"CASE WHEN %s::text IS NOT NULL THEN 'k' || g END, CASE WHEN %s::text IS NOT NULL THEN 'period' END, "
        f"now() + %s::interval FROM generate_series(1, %s) AS g",
        (status, age, key_until, key_until, key_until, count))
    admin.execute(f'INSERT INTO "{schema}".job_events (job_id, to_status, reason) '
                  f"SELECT id, status, 'seeded' FROM \"{schema}\".jobs WHERE status = %s", (status,))


def test_retention_deletes_in_short_batches_and_keeps_what_it_must(app, admin) -> None:
    schema = app.settings.schema
    seed_finished(admin, schema, "succeeded", 1200, "8 days")
    seed_finished(admin, schema, "cancelled", 300, "8 days")
    seed_finished(admin, schema, "failed", 200, "8 days")  # kept: failed jobs stay 30 days
    seed_finished(admin, schema, "succeeded", 100, "1 day")  # young
    admin.execute(f"UPDATE \"{schema}\".jobs SET scoped_key = NULL, key_scope = NULL, key_until = NULL")
    admin.execute(
        f"INSERT INTO \"{schema}\".jobs (task, status, finished_at, due, scoped_key, key_scope, key_until) "
        "SELECT 'noop', 'succeeded', now() - interval '8 days', false, 'period:' || g, 'period', "
        f"now() + interval '1 hour' FROM generate_series(1, 50) AS g")  # its key's period runs on
    admin.execute(f"INSERT INTO \"{schema}\".schedule_events (schedule_id, kind, reason, at) "
                  "SELECT 'x', 'created', 'old', now() - interval '40 days' FROM generate_series(1, 30)")
    # A yearly schedule's two runs, both old: the latest one stays (schedule_status shows it).
    admin.execute(f"INSERT INTO \"{schema}\".schedule_events (schedule_id, kind, tick, job_id, reason, at) "
                  "VALUES ('yearly', 'fired', now() - interval '800 days', 1, 'on time', now() - interval '800 days'),"
                  "       ('yearly', 'fired', now() - interval '435 days', 2, 'on time', now() - interval '435 days')")
    retention = Retention.from_settings(app.queries, app.settings)
    retention.batch, retention.budget = 250, 60.0  # a loaded machine must not cut this pass short
    at = db_now(admin)
    result = retention.run_once(BorrowedConnection(admin), at)
    assert (result.jobs, result.schedule_events) == (1500, 31) and not result.more
    kept = admin.execute(f'SELECT schedule_id, job_id FROM "{schema}".schedule_events').fetchall()
    assert kept == [("yearly", 2)], "a schedule's latest run is kept however old"
    assert result.batches >= 1500 // 250
    left = dict(admin.execute(f'SELECT status, count(*) FROM "{schema}".jobs GROUP BY status').fetchall())
    assert left == {"failed": 200, "succeeded": 150}
    orphans = admin.execute(f'SELECT count(*) FROM "{schema}".job_events e WHERE NOT EXISTS '
                            f'(SELECT 1 FROM "{schema}".jobs j WHERE j.id = e.job_id)').fetchone()[0]
    assert orphans == 0, "a job's events go with it"
    # A tiny budget: it stops and says more is left for the next pass.
    seed_finished(admin, schema, "cancelled", 600, "8 days")
    retention.budget, retention.batch = 0.0, 100
    assert retention.run_once(BorrowedConnection(admin), at).more is True
    assert not retention.due() and retention.due(time.monotonic() + 1.5)  # again a second later


def test_retention_settings_parse_durations_and_none(make_app, monkeypatch) -> None:
    monkeypatch.setenv("PGQUEUE_RETAIN_SUCCEEDED", "12h")
    monkeypatch.setenv("PGQUEUE_RETAIN_FAILED", "never")
    settings = pgqueue.Settings.load({"retain_cancelled": dt.timedelta(days=2)})
    assert (settings.retain_succeeded, settings.retain_cancelled, settings.retain_failed) == (43_200, 172_800, None)
    assert pgqueue.Settings.load({"retain_succeeded": None}).retain_succeeded is None
    monkeypatch.setenv("PGQUEUE_RETAIN_SUCCEEDED", "soon")
    with pytest.raises(pgqueue.ConfigurationError, match="retain_succeeded must be a duration"):
        pgqueue.Settings.load()
    monkeypatch.delenv("PGQUEUE_RETAIN_SUCCEEDED")
    with pytest.raises(pgqueue.ConfigurationError, match="retain_cancelled must be a duration longer than 0"):
        pgqueue.Settings.load({"retain_cancelled": 0})
    retention = Retention.from_settings(pgqueue.sqlfiles.queries_for("x"), pgqueue.Settings.load(
        {"retain_succeeded": None, "retain_cancelled": None, "retain_failed": None}))
    assert not retention.due()


def test_prune_keeps_jobs_whose_period_key_is_still_taken(app, admin) -> None:
    from pgqueue import admin as admin_functions

    schema = app.settings.schema
    admin.execute(
        f"INSERT INTO \"{schema}\".jobs (task, status, finished_at, due, scoped_key, key_scope, key_until) "
        "VALUES ('noop', 'succeeded', now() - interval '9 days', false, 'p', 'period', now() + interval '1 day'),"
        "       ('noop', 'succeeded', now() - interval '9 days', false, 'q', 'period', now() - interval '1 day')")
    assert admin_functions.prune(app, older_than=86_400).jobs == 1
    assert admin.execute(f'SELECT scoped_key FROM "{schema}".jobs').fetchall() == [("p",)]


# ---------------------------------------------------------------------- CLI

def test_the_schedules_command(app, admin, noop, database_dsn) -> None:
    from test_cli import assert_one_line_error, run

    app.schedule(noop, id="digest", cron="*/5 * * * *", timezone="Europe/Berlin")
    sync(app, admin)
    env = {"PGQUEUE_DSN": database_dsn, "PGQUEUE_SCHEMA": app.settings.schema}
    listed = run("schedules", env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"digest\s+noop\s+\*/5 \* \* \* \*\s+Europe/Berlin", listed.stdout), listed.stdout
    assert "active" in listed.stdout
    assert "is paused" in run("schedules", "pause", "digest", "--reason", "deploy", env=env).stdout
    assert "paused (deploy)" in run("schedules", env=env).stdout
    triggered = run("schedules", "trigger", "digest", env=env)
    assert re.search(r"job \d+ enqueued", triggered.stdout), triggered
    assert "is resumed" in run("schedules", "resume", "digest", env=env).stdout
    history = run("schedules", "history", "digest", env=env).stdout
    assert "triggered" in history and "paused" in history and "created" in history
    data = json.loads(run("schedules", "--json", env=env).stdout)
    assert data[0]["id"] == "digest" and data[0]["declared_by"] == 1
    assert_one_line_error(run("schedules", "pause", "nope", env=env), "there is no schedule 'nope'")
    assert_one_line_error(run("schedules", "remove", "digest", env=env), "declared by 1 live runner")
