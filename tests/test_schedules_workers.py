"""Schedules with real worker processes: many runners firing each tick once, a runner killed in
the middle of a fire, downtime, overlap with a long job, a deploy that drops a schedule, and
retention while workers run."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from helpers import Worker, wait_for
from pgqueue import sqlfiles

pytestmark = pytest.mark.slow

#: How long the eight runners fire an every-second schedule (CRON_SOAK_SECONDS=300 for a soak).
SOAK_SECONDS = float(os.environ.get("CRON_SOAK_SECONDS", "30"))


@pytest.fixture
def start_cron_worker(database_dsn: str, schema_name: str, tmp_path: Path) -> Iterator:
    """Start `pgqueue work` on tests/cronapp.py declaring the given schedules."""
    started: list[Worker] = []

    def start(specs: list[dict[str, Any]], *args: str, env: dict[str, str] | None = None,
              dsn: str | None = None) -> Worker:
        worker = Worker(dsn or database_dsn, schema_name, tmp_path / f"cron-worker-{len(started)}.log", *args,
                        env={"CRONAPP_SCHEDULES": json.dumps(specs), **(env or {})}, app="cronapp:app")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def one(conn: psycopg.Connection, query: str, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def declared(conn: psycopg.Connection, schema: str, schedule_id: str) -> int:
    return one(conn, f'SELECT declared_by FROM "{schema}".schedule_status WHERE id = %s', (schedule_id,)) or 0


def db_now(conn: psycopg.Connection) -> dt.datetime:
    return one(conn, "SELECT now()")


def wait_until_db_time(conn: psycopg.Connection, at: dt.datetime, timeout: float) -> None:
    wait_for(lambda: db_now(conn) >= at, timeout=timeout, interval=0.1, message=f"database time {at}")


def tick_events(conn: psycopg.Connection, schema: str, schedule_id: str, since: dt.datetime) -> list[tuple]:
    return conn.execute(
        f'SELECT kind, tick, job_id, runner_id, at, reason FROM "{schema}".schedule_events '
        "WHERE schedule_id = %s AND tick >= %s AND kind IN ('fired', 'missed', 'skipped') ORDER BY tick",
        (schedule_id, since)).fetchall()


def test_eight_runners_fire_every_tick_once_with_no_gap(wapp, admin, start_cron_worker) -> None:
    """Eight runners and an every-second schedule: one job per tick, no gap, no duplicate, also
    across a SIGKILL of the runner that fired last, half-way."""
    schema = wapp.settings.schema
    specs = [{"task": "noop", "id": "every-second", "cron": "* * * * * *"}]
    workers = [start_cron_worker(specs, "--concurrency", "2") for _ in range(8)]
    wait_for(lambda: declared(admin, schema, "every-second") == 8, timeout=90, interval=0.2,
             message="eight runners to declare the schedule")
    start = db_now(admin).replace(microsecond=0) + dt.timedelta(seconds=2)
    end = start + dt.timedelta(seconds=SOAK_SECONDS)
    wait_until_db_time(admin, start + dt.timedelta(seconds=SOAK_SECONDS / 2), timeout=SOAK_SECONDS + 60)
    firer = one(admin, f"SELECT runner_id FROM \"{schema}\".schedule_events WHERE kind = 'fired' "
                       "ORDER BY id DESC LIMIT 1")
    pid = one(admin, f'SELECT pid FROM "{schema}".runners WHERE id = %s', (firer,))
    victim = next(w for w in workers if w.pid == pid)
    victim.proc.kill()
    killed_at = db_now(admin)
    wait_until_db_time(admin, end + dt.timedelta(seconds=1), timeout=SOAK_SECONDS + 60)
    wait_for(lambda: len(tick_events(admin, schema, "every-second", start)) > SOAK_SECONDS, timeout=30,
             message="the last ticks to fire")
    rows = [r for r in tick_events(admin, schema, "every-second", start) if r[1] <= end]
    expected = [start + dt.timedelta(seconds=s) for s in range(int(SOAK_SECONDS) + 1)]
    assert [r[1] for r in rows] == expected, "one event per tick, no gap"
    assert {r[0] for r in rows} == {"fired"}, [r for r in rows if r[0] != "fired"]
    per_tick = admin.execute(
        f"SELECT (meta->>'scheduled_for')::timestamptz AS tick, count(*) FROM \"{schema}\".jobs "
        "WHERE meta->>'schedule' = 'every-second' GROUP BY 1 HAVING count(*) > 1").fetchall()
    assert per_tick == [], f"ticks with more than one job: {per_tick}"
    jobs = one(admin, f"SELECT count(*) FROM \"{schema}\".jobs WHERE meta->>'schedule' = 'every-second' "
                      "AND (meta->>'scheduled_for')::timestamptz BETWEEN %s AND %s", (start, end))
    assert jobs == len(expected)
    after_kill = [r for r in rows if r[4] > killed_at + dt.timedelta(seconds=1)]
    assert after_kill and firer not in {r[3] for r in after_kill}
    lags = sorted((r[4] - r[1]).total_seconds() for r in rows)
    print(f"\nfiring lag after the tick over {len(lags)} ticks: median {lags[len(lags) // 2]:.3f} s, "
          f"p95 {lags[int(len(lags) * 0.95)]:.3f} s, max {lags[-1]:.3f} s; "
          f"{len({r[3] for r in rows})} runners fired")
    assert lags[len(lags) // 2] < 5.0, "generous: a tick fires within about a second"


def test_a_runner_killed_in_the_middle_of_a_fire_leaves_the_tick_to_another(wapp, admin, database_dsn, start_cron_worker) -> None:
    """The fire is held inside its statement (its job's key is being inserted by an open
    transaction of the test), after the cursor moved; the runner doing it is SIGKILLed there.
    Nothing of its fire commits: another runner fires that tick, once."""
    schema = wapp.settings.schema
    specs = [{"task": "noop", "id": "held", "cron": "* * * * * */5", "overlap": "skip"}]
    env = {"PGQUEUE_RUNNER_DEAD_AFTER": "20"}  # a fire may wait 2.5 s for a lock
    workers = [start_cron_worker(specs, "--concurrency", "2", env=env) for _ in range(2)]
    wait_for(lambda: declared(admin, schema, "held") == 2, timeout=60, message="both runners to declare it")
    lock_class = sqlfiles.runner_lock_class(schema)
    with psycopg.connect(database_dsn, autocommit=False) as blocker:
        blocker.execute(f"INSERT INTO \"{schema}\".jobs (task, key) VALUES ('noop', 'pgqueue:schedule:held')")
        blocker_pid = one(blocker, "SELECT pg_backend_pid()")
        tick = one(admin, f"SELECT next_run_at FROM \"{schema}\".schedules WHERE id = 'held'")

        def holder() -> int | None:
            return one(admin, "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                       (blocker_pid,))

        backend = wait_for(holder, timeout=30, interval=0.01, message="a fire held by the test's key")
        runner = one(admin, "SELECT objid::bigint FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
                            "AND classid = %s::int::oid AND objsubid = 2", (backend, lock_class))
        pid = one(admin, f'SELECT pid FROM "{schema}".runners WHERE id = %s', (runner,))
        victim = next(w for w in workers if w.pid == pid)
        assert one(admin, f"SELECT next_run_at FROM \"{schema}\".schedules WHERE id = 'held'") == tick
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        blocker.rollback()
    fired = wait_for(lambda: [r for r in tick_events(admin, schema, "held", tick) if r[1] == tick],
                     timeout=30, message=f"the tick at {tick} to be fired")
    assert len(fired) == 1 and fired[0][0] == "fired" and fired[0][3] != runner, fired
    assert one(admin, f"SELECT count(*) FROM \"{schema}\".jobs WHERE meta->>'schedule' = 'held' "
                      "AND (meta->>'scheduled_for')::timestamptz = %s", (tick,)) == 1


def test_a_database_restart_neither_loses_nor_doubles_a_tick(private_server, start_cron_worker) -> None:
    server, dsn, app = private_server
    schema = app.settings.schema
    specs = [{"task": "noop", "id": "through", "cron": "* * * * * *", "catch_up": "all"}]
    for _ in range(2):
        start_cron_worker(specs, "--concurrency", "2", dsn=dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_for(lambda: declared(conn, schema, "through") == 2, timeout=60, message="the runners to declare it")
        wait_for(lambda: len(tick_events(conn, schema, "through", db_now(conn) - dt.timedelta(seconds=3))) >= 2,
                 timeout=30, message="ticks before the restart")
        start = one(conn, f"SELECT min(tick) FROM \"{schema}\".schedule_events WHERE kind = 'fired'")
    assert server.stop()
    server.ensure_running()
    with psycopg.connect(dsn, autocommit=True) as conn:
        after = db_now(conn) + dt.timedelta(seconds=3)
        wait_until_db_time(conn, after, timeout=60)
        end = after - dt.timedelta(seconds=1)
        wait_for(lambda: one(conn, f"SELECT max(tick) FROM \"{schema}\".schedule_events WHERE kind = 'fired'") >= end,
                 timeout=60, message="the ticks after the restart")
        rows = [r for r in tick_events(conn, schema, "through", start) if r[1] <= end]
        seconds = int((end - start).total_seconds()) + 1
        assert [r[1] for r in rows] == [start + dt.timedelta(seconds=s) for s in range(seconds)]
        assert {r[0] for r in rows} == {"fired"}
        doubles = conn.execute(f"SELECT meta->>'scheduled_for' FROM \"{schema}\".jobs GROUP BY 1 "
                               "HAVING count(*) > 1").fetchall()
        assert doubles == []


def test_downtime_then_each_catch_up_policy(wapp, admin, start_cron_worker) -> None:
    """Down for three hours (the cursors rewound while no worker runs): skip runs nothing,
    latest the latest tick once, all every tick of the last hour; the jobs know they are late."""
    schema = wapp.settings.schema
    minute = (db_now(admin).minute + 5) % 10  # no tick comes due during the test
    cron = f"{minute}-59/10 * * * *"
    specs = [{"task": "tick", "id": policy, "cron": cron, "catch_up": policy, "catch_up_within": 3600}
             for policy in ("skip", "latest", "all")]
    worker = start_cron_worker(specs)
    wait_for(lambda: all(declared(admin, schema, p) for p in ("skip", "latest", "all")), timeout=60,
             message="the schedules to be declared")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    admin.execute(f"UPDATE \"{schema}\".schedules SET next_run_at = next_run_at - interval '3 hours'")
    start_cron_worker(specs)
    wait_for(lambda: one(admin, f'SELECT count(*) FROM "{schema}".executions') == 7, timeout=60,
             message="the catch-up jobs to run")
    ran = [json.loads(n) for (n,) in admin.execute(f'SELECT note FROM "{schema}".executions ORDER BY at')]
    by_policy = {p: sorted(r["scheduled_for"] for r in ran if r["schedule"] == p) for p in ("skip", "latest", "all")}
    assert (len(by_policy["skip"]), len(by_policy["latest"]), len(by_policy["all"])) == (0, 1, 6)
    assert all(r["late"] is True for r in ran)
    assert by_policy["latest"] == by_policy["all"][-1:]
    missed = dict(admin.execute(f"SELECT schedule_id, count(*) FROM \"{schema}\".schedule_events "
                                "WHERE kind = 'missed' GROUP BY 1").fetchall())
    assert missed == {"skip": 18, "latest": 17, "all": 12}


def test_overlap_skip_with_a_long_job(wapp, admin, start_cron_worker) -> None:
    schema = wapp.settings.schema
    specs = [{"task": "recorded_sleep", "id": "long", "cron": "* * * * * *", "overlap": "skip",
              "args": [2.5]}]
    start_cron_worker(specs, "--concurrency", "4")
    wait_for(lambda: one(admin, f"SELECT count(*) FROM \"{schema}\".executions WHERE note = 'end'") >= 3,
             timeout=60, message="three runs of the long job")
    runs = admin.execute(f"SELECT job_id, min(at), max(at) FROM \"{schema}\".executions GROUP BY job_id "
                         "HAVING count(*) = 2 ORDER BY 2").fetchall()
    for (_, _, end), (_, start, _) in zip(runs, runs[1:]):
        assert start >= end, f"two runs overlapped: {runs}"
    skipped = admin.execute(f"SELECT reason FROM \"{schema}\".schedule_events WHERE kind = 'skipped'").fetchall()
    assert len(skipped) >= 3
    assert all(re.fullmatch(r"overlap: job \d+ of an earlier tick is still queued or running", r) for (r,) in skipped)


def test_a_deploy_that_drops_a_schedule_leaves_it_orphaned(wapp, admin, start_cron_worker) -> None:
    """Old code declares "kept" (every second) and "dropped"; the new code redefines "kept"
    (every two seconds) and drops "dropped". While both run, "kept" follows the runner that
    started last and "dropped" still fires; once the old runner is gone, "dropped" stops firing,
    shows as orphaned, and is still there."""
    schema = wapp.settings.schema
    old = start_cron_worker([{"task": "noop", "id": "kept", "cron": "* * * * * *"},
                             {"task": "noop", "id": "dropped", "cron": "* * * * * *"}])
    wait_for(lambda: declared(admin, schema, "dropped") == 1, timeout=60, message="the old code's schedules")
    new = start_cron_worker([{"task": "noop", "id": "kept", "cron": "* * * * * */2"}])
    wait_for(lambda: declared(admin, schema, "kept") == 2, timeout=60, message="the new runner's declarations")
    assert one(admin, f"SELECT cron FROM \"{schema}\".schedules WHERE id = 'kept'") == "* * * * * */2"
    assert "declares another cron" in new.log()
    rolling = db_now(admin)
    wait_for(lambda: one(admin, f"SELECT count(*) FROM \"{schema}\".schedule_events WHERE schedule_id = "
                                "'dropped' AND kind = 'fired' AND at > %s", (rolling,)) >= 2,
             timeout=30, message="the dropped schedule to fire while an old runner declares it")
    old.signal(signal.SIGTERM)
    assert old.wait() == 0
    wait_for(lambda: one(admin, f"SELECT orphaned_at FROM \"{schema}\".schedules WHERE id = 'dropped'"),
             timeout=30, message="the dropped schedule to be marked orphaned")
    gone = db_now(admin)
    later = gone + dt.timedelta(seconds=4)
    wait_until_db_time(admin, later, timeout=30)
    assert one(admin, f"SELECT count(*) FROM \"{schema}\".schedule_events WHERE schedule_id = 'dropped' "
                      "AND kind = 'fired' AND at > %s", (gone,)) == 0
    kept = [t for _, t, *_ in tick_events(admin, schema, "kept", rolling) if t <= later - dt.timedelta(seconds=1)]
    assert kept and {t.second % 2 for t in kept[2:]} == {0}, "the new definition (every 2 s) fires"
    status = admin.execute(f"SELECT id, orphaned, declared_by FROM \"{schema}\".schedule_status ORDER BY id").fetchall()
    assert status == [("dropped", True, 0), ("kept", False, 1)]


def test_retention_deletes_in_batches_while_workers_run(wapp, admin, start_worker) -> None:
    schema = wapp.settings.schema
    admin.execute(
        f"INSERT INTO \"{schema}\".jobs (task, status, finished_at, due) "
        "SELECT 'noop', s, now() - interval '8 days', false "
        "FROM unnest(array_fill('succeeded'::text, ARRAY[2200]) || array_fill('cancelled'::text, ARRAY[400]) "
        "            || array_fill('failed'::text, ARRAY[300])) AS s")
    admin.execute(
        f"INSERT INTO \"{schema}\".jobs (task, status, finished_at, due, scoped_key, key_scope, key_until) "
        "SELECT 'noop', 'succeeded', now() - interval '8 days', false, 'p' || g, 'period', now() + interval '1 day' "
        "FROM generate_series(1, 20) AS g")
    admin.execute(f'INSERT INTO "{schema}".job_events (job_id, to_status, reason) '
                  f"SELECT id, status, 'seeded' FROM \"{schema}\".jobs")
    workers = [start_worker("--concurrency", "4") for _ in range(2)]
    noop = wapp.tasks["noop"]
    jobs = [noop.enqueue() for _ in range(30)]
    wait_for(lambda: one(admin, f"SELECT count(*) FROM \"{schema}\".jobs WHERE finished_at < now() - interval '7 days' "
                                "AND status <> 'failed'") == 20, timeout=60, message="old jobs to be pruned")
    more = [noop.enqueue() for _ in range(30)]
    for job in jobs + more:
        assert job.result(timeout=30) is None
    left = dict(admin.execute(f"SELECT status, count(*) FROM \"{schema}\".jobs GROUP BY 1").fetchall())
    assert left == {"failed": 300, "succeeded": 80}  # 20 whose period key is taken, 60 new ones
    assert one(admin, f'SELECT count(*) FROM "{schema}".job_events e WHERE NOT EXISTS '
                      f'(SELECT 1 FROM "{schema}".jobs j WHERE j.id = e.job_id)') == 0
    logs = "".join(w.log() for w in workers)
    batches = sum(int(n) for n in re.findall(r"retention: deleted \d+ finished job\(s\) and \d+ schedule "
                                             r"event\(s\) in (\d+) batch", logs))
    assert batches >= 6, logs[-3000:]
