"""Every dashboard query is index-backed and bounded.

* Default run: a small seeded schema; each statement of sql/queries/dashboard.sql is EXPLAINed
  with sequential scans disabled, and no plan may read jobs, job_events or throughput with a
  Seq Scan: that proves an index path exists for every access (the planner still picks a Seq
  Scan where no index can serve).
* ``DASHBOARD_SCALE_TEST=1``: a schema of 1,000,000 jobs and 5,000,000 events, seeded once with
  generate_series and kept (``pgqueue_scale_v2``) for later runs; the real plans (statistics,
  no hints) may not Seq Scan those tables, and every page renders in under 300 ms at the 95th
  percentile, server side, with the dashboard's cache off. It prints the figures.
"""

from __future__ import annotations

import os
import statistics
import time
import urllib.parse
from typing import Any, Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from dashboard_support import call
from pgqueue import sqlfiles
from pgqueue.dashboard import control_pages, make_app, views

GUARDED = {"jobs", "job_events", "throughput", "queue_events", "schedule_events"}
SCALE_SCHEMA = "pgqueue_scale_v2"
SCALE_JOBS = 1_000_000
PAGE_BUDGET_MS = 300.0
#: Statements one page may run (each panel is one; no page loops over rows with queries).
MAX_STATEMENTS = 8


def seed(conn: psycopg.Connection, schema: str, jobs: int) -> None:
    """``jobs`` jobs over the last 7 days, five events each (two attempts) for finished ones;
    ready, scheduled and running jobs spread among them; 50 runners; the throughput rollup."""
    s = f'"{schema}".'
    span = "interval '7 days'"
    conn.execute(f"""
        INSERT INTO {s}runners (host, pid, concurrency, version, state, started_at, heartbeat_at,
                                stopped_at, reason, lost_reason)
        SELECT 'host-' || (g % 5), 1000 + g, 20, 'seed',
               CASE WHEN g > 45 THEN 'running' WHEN g % 3 = 0 THEN 'dead' ELSE 'stopped' END,
               now() - {span} + (g - 1) * ({span} / 50),
               CASE WHEN g > 45 THEN now() ELSE now() - {span} + g * ({span} / 50) END,
               CASE WHEN g > 45 THEN NULL ELSE now() - {span} + g * ({span} / 50) END,
               CASE WHEN g % 3 = 0 THEN 'no heartbeat for 10.2 s' ELSE 'stopped' END,
               CASE WHEN g % 3 = 0 AND g <= 45 THEN 'no heartbeat' END
        FROM generate_series(1, 50) AS g""")
    # Job i: enqueued at t(i), spread evenly over the 7 days; its runner is the one alive then.
    conn.execute(f"""
        INSERT INTO {s}jobs (queue, task, args, kwargs, priority, run_at, status, due, attempts,
                             failures, runner_id, error, result, enqueued_at, started_at, finished_at)
        SELECT 'q' || (i %% 5), 'tasks.t' || (i %% 20), jsonb_build_array(i %% 1000, 'x'),
               jsonb_build_object('user', i %% 500), (i %% 3) * 5,
               CASE WHEN kind = 'scheduled' THEN now() + interval '1 day' ELSE t END,
               CASE WHEN kind IN ('ready', 'scheduled') THEN 'queued' ELSE kind END,
               kind <> 'scheduled',
               CASE WHEN kind IN ('ready', 'scheduled') THEN 0 WHEN kind = 'running' THEN 1 ELSE 2 END,
               CASE WHEN kind = 'failed' THEN 2 WHEN kind IN ('succeeded', 'cancelled') THEN 1 ELSE 0 END,
               CASE WHEN kind = 'running' THEN 46 + i %% 5 END,
               CASE WHEN kind = 'failed' THEN '{{"type": "ValueError", "message": "seeded", "traceback": ""}}'::jsonb END,
               CASE WHEN kind = 'succeeded' THEN to_jsonb(i) END,
               t,
               CASE WHEN kind NOT IN ('ready', 'scheduled') THEN t + interval '3 seconds' END,
               CASE WHEN kind IN ('succeeded', 'failed', 'cancelled') THEN t + interval '4 seconds' END
        FROM (SELECT i, now() - {span} + i * ({span} / %(n)s) - interval '10 seconds' AS t,
                     CASE WHEN i %% 67 = 1 THEN 'ready' WHEN i %% 200 = 2 THEN 'scheduled'
                          WHEN i %% 20000 = 3 THEN 'running' WHEN i %% 33 = 0 THEN 'failed'
                          WHEN i %% 101 = 0 THEN 'cancelled' ELSE 'succeeded' END AS kind
              FROM generate_series(1, %(n)s) AS i) AS g
        ORDER BY i""", {"n": jobs})
    # Events in time order (the BRIN index on at relies on it): enqueued, claimed, a failed attempt
    # retried, claimed again, the outcome.
    conn.execute(f"""
        INSERT INTO {s}job_events (job_id, at, from_status, to_status, attempt, runner_id, kind, reason)
        SELECT j.id, j.enqueued_at + k * interval '1 second',
               (ARRAY[NULL, 'queued', 'running', 'queued', 'running'])[k + 1],
               (ARRAY['queued', 'running', 'queued', 'running', j.status])[k + 1],
               (ARRAY[0, 1, 1, 2, 2])[k + 1],
               CASE WHEN k > 0 THEN 1 + ((j.id - 1) * 50 / %(n)s)::int END,
               (ARRAY['enqueued', 'claimed', 'retry_scheduled', 'claimed', j.status])[k + 1],
               (ARRAY['enqueued', 'claimed', 'retry in 1.0 s: ValueError: seeded', 'claimed', j.status])[k + 1]
        FROM {s}jobs AS j
        CROSS JOIN LATERAL generate_series(0, CASE WHEN j.status = 'queued' THEN 0
                                                   WHEN j.status = 'running' THEN 1 ELSE 4 END) AS k
        ORDER BY j.id, k""", {"n": jobs})
    # Schedules, each tick of the last week one event (fired with its job, or missed), and the
    # control changes of the queues.
    conn.execute(f"""
        INSERT INTO {s}schedules (id, task, cron, next_run_at, created_at)
        SELECT 'schedule-' || g, 'tasks.t' || g, '* * * * *', date_trunc('minute', now()) + interval '1 minute',
               now() - {span}
        FROM generate_series(1, 20) AS g""")
    conn.execute(f"""
        INSERT INTO {s}schedule_events (schedule_id, at, kind, tick, job_id, reason)
        SELECT 'schedule-' || (i %% 20 + 1), t, CASE WHEN i %% 3 = 0 THEN 'fired' ELSE 'missed' END, t,
               CASE WHEN i %% 3 = 0 THEN 1 + i %% %(n)s END, 'seeded'
        FROM (SELECT i, now() - {span} + i * ({span} / %(events)s) AS t
              FROM generate_series(1, %(events)s) AS i) AS g""", {"n": jobs, "events": max(jobs // 5, 100)})
    conn.execute(f"""
        INSERT INTO {s}queue_events (queue, at, action, by, reason)
        SELECT 'q' || (i %% 5), now() - {span} + i * ({span} / %(events)s),
               CASE WHEN i %% 2 = 0 THEN 'paused' ELSE 'resumed' END, 'seed', 'seeded'
        FROM generate_series(1, %(events)s) AS i""", {"events": max(jobs // 50, 50)})
    conn.execute(f"""
        INSERT INTO {s}throughput (queue, minute, runner_id, succeeded, failed, retried, run_seconds)
        SELECT 'q' || q, m, 1 + (extract(epoch FROM m - (now() - {span})) / extract(epoch FROM {span}) * 49)::int,
               (%(n)s / 50400)::int + 1, 1, 2, 10.0
        FROM generate_series(0, 4) AS q,
             generate_series(date_trunc('minute', now() - {span}), date_trunc('minute', now()),
                             interval '1 minute') AS m""", {"n": jobs})


def reads(conn: psycopg.Connection, schema: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of dashboard.sql with representative parameters: (name, params)."""
    with conn.cursor(row_factory=dict_row) as cur:
        now = cur.execute("SELECT now() AS now").fetchone()["now"]
        job = cur.execute(f'SELECT id, finished_at FROM "{schema}".jobs WHERE status = %s ORDER BY id '
                          "LIMIT 1 OFFSET 10", ("succeeded",)).fetchone()
        ready = cur.execute(f'SELECT id, priority, run_at FROM "{schema}".jobs WHERE status = %s AND due '
                            "ORDER BY id LIMIT 1", ("queued",)).fetchone()
    base = {"queue": None, "task": None, "args": None, "kwargs": None, "max_args": views.LIST_ARGS_BYTES,
            "limit": views.PAGE_SIZE + 1, "scan": views.PAGE_SIZE + 1}
    narrow = {**base, "scan": views.SCAN_WINDOW}
    filters = [base, {**narrow, "task": "tasks.t3"}, {**narrow, "queue": "q1"},
               {**narrow, "args": "[7]"}, {**narrow, "kwargs": '{"user": 7}'}]
    yield "dashboard_queues", {"cap": views.COUNT_CAP, "max_heads": views.MAX_HEADS}
    yield "dashboard_throughput", {"minutes": 60, "queue": None}
    yield "dashboard_throughput", {"minutes": 60, "queue": "q1"}
    yield "dashboard_runner_summary", {"recent_seconds": 3600, "cap": views.COUNT_CAP}
    yield "dashboard_orphans", {"cap": views.COUNT_CAP}
    for f in filters:
        yield "dashboard_jobs_recent", {**f, "before_id": None}
        yield "dashboard_jobs_recent", {**f, "before_id": job["id"] + 500}
        for status in ("succeeded", "failed", "cancelled"):
            yield "dashboard_jobs_finished", {**f, "status": status, "before_at": None, "before_id": None}
        yield "dashboard_jobs_finished", {**f, "status": "succeeded", "before_at": job["finished_at"],
                                          "before_id": job["id"]}
        yield "dashboard_jobs_ready", {**f, "after_priority": None, "after_at": None, "after_id": None,
                                       "below_priority": views.INT_MAX}
        yield "dashboard_jobs_ready", {**f, "after_priority": ready["priority"], "after_at": ready["run_at"],
                                       "after_id": ready["id"], "below_priority": ready["priority"] - 1}
        yield "dashboard_jobs_scheduled", {**f, "after_at": None, "after_id": None}
        yield "dashboard_jobs_scheduled", {**f, "after_at": now, "after_id": 1}
        yield "dashboard_jobs_running", {**f, "before_id": None, "cap": views.COUNT_CAP}
    yield "dashboard_job", {"id": job["id"], "max_bytes": views.DETAIL_VALUE_BYTES}
    yield "dashboard_job_events", {"id": job["id"], "limit": views.JOB_EVENTS}
    yield "dashboard_runners", {"recent_seconds": 86400, "limit": views.RUNNERS_LIMIT}
    yield "dashboard_runner", {"id": 1}
    yield "dashboard_runner_jobs", {"id": 47, "limit": views.RUNNER_JOBS}
    yield "dashboard_runner_events", {"id": 50, "since": now - views.RUNNER_WINDOW, "until": now,
                                      "limit": views.RUNNER_EVENTS}
    for queue, task in ((None, None), ("q1", None), (None, "tasks.t3")):
        yield "dashboard_timeline", {"since": now - views.TIMELINE_DEFAULT, "until": now,
                                     "cap": views.TIMELINE_EVENTS, "bars": views.TIMELINE_BARS,
                                     "queue": queue, "task": task}
    yield "dashboard_timeline_runners", {"since": now - views.TIMELINE_DEFAULT, "until": now, "ids": [1, 2],
                                         "limit": views.TIMELINE_LANES}
    yield "dashboard_table_health", {"schema": schema}
    yield "dashboard_xmin_horizon", {}
    yield "dashboard_maintenance", {}
    yield "dashboard_ping", {}
    for queue in (None, "q1"):
        yield "dashboard_queue_events", {"queue": queue, "limit": control_pages.QUEUE_HISTORY}
    for after in (None, "schedule-5"):
        yield "dashboard_schedules", {"after": after, "limit": control_pages.SCHEDULES_PAGE + 1}
    yield "dashboard_schedule", {"id": "schedule-3"}
    for runs in (False, True):
        yield "dashboard_schedule_events", {"id": "schedule-3", "runs": runs, "limit": control_pages.SCHEDULE_EVENTS}
    yield "dashboard_deleted", {"id": job["id"]}
    yield "dashboard_count_ids", {"ids": list(range(1, 1001))}
    for action in ("dashboard_retry", "dashboard_cancel", "dashboard_delete"):
        yield action, {"ids": list(range(1, 1001)), "reason": "dashboard: explained"}


def seq_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in GUARDED:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found += seq_scans(child)
    return found


def explain(conn: psycopg.Connection, query: str, params: dict[str, Any], *, hint: bool) -> dict[str, Any]:
    with conn.transaction():
        if hint:
            conn.execute("SET LOCAL enable_seqscan = off")
        row = conn.execute(("EXPLAIN (FORMAT JSON) " + query).encode(), params).fetchone()
    return row[0][0]["Plan"]


def check_plans(conn: psycopg.Connection, schema: str, *, hint: bool) -> list[str]:
    queries = sqlfiles.queries_for(schema)
    failures, covered = [], set()
    for name, params in reads(conn, schema):
        covered.add(name)
        plan = explain(conn, queries[name], params, hint=hint)
        bad = seq_scans(plan)
        if bad:
            failures.append(f"{name} {params}: Seq Scan on {', '.join(sorted(set(bad)))}")
    missing = {n for n in queries.names() if n.startswith("dashboard_")} - covered
    assert not missing, f"add these dashboard queries to reads() so their plans are checked: {missing}"
    return failures


def test_every_dashboard_query_has_an_index_path(app, admin, database_dsn) -> None:
    schema = app.settings.schema
    seed(admin, schema, 3000)
    admin.execute(f'ANALYZE "{schema}".jobs')
    admin.execute(f'ANALYZE "{schema}".job_events')
    with psycopg.connect(database_dsn, prepare_threshold=None) as conn:
        failures = check_plans(conn, schema, hint=True)
    assert not failures, ("these dashboard queries cannot avoid a sequential scan (add a predicate an "
                          "index serves, or bound them):\n" + "\n".join(failures))
    # The seeded schema renders: the page code and the seed agree.
    dashboard = make_app(app)
    try:
        for path in ("/", "/jobs", "/jobs?status=failed", "/timeline?window=7d", "/runners?recent=7d",
                     "/queues", "/queues/q1", "/schedules", "/schedules/schedule-3"):
            assert call(dashboard, path).status == 200, path
    finally:
        dashboard.close()


# --------------------------------------------------------------------- scale

@pytest.fixture(scope="module")
def scale_schema(database_dsn: str) -> str:
    if os.environ.get("DASHBOARD_SCALE_TEST") != "1":
        pytest.skip("the scale test seeds 1,000,000 jobs (minutes, once): run it with DASHBOARD_SCALE_TEST=1")
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                              "AND table_name = 'scale_seeded'", (SCALE_SCHEMA,)).fetchone()
        if not exists:
            conn.execute(f'DROP SCHEMA IF EXISTS "{SCALE_SCHEMA}" CASCADE')
            app = pgqueue.App(database_dsn, schema=SCALE_SCHEMA)
            app.migrate()
            app.close()
            started = time.monotonic()
            seed(conn, SCALE_SCHEMA, SCALE_JOBS)
            conn.execute(f'VACUUM ANALYZE "{SCALE_SCHEMA}".jobs')
            conn.execute(f'VACUUM ANALYZE "{SCALE_SCHEMA}".job_events')
            conn.execute(f'VACUUM ANALYZE "{SCALE_SCHEMA}".throughput')
            conn.execute(f'VACUUM ANALYZE "{SCALE_SCHEMA}".runners')
            conn.execute(f'VACUUM ANALYZE "{SCALE_SCHEMA}".schedule_events')
            conn.execute(f'VACUUM ANALYZE "{SCALE_SCHEMA}".queue_events')
            conn.execute(f'CREATE TABLE "{SCALE_SCHEMA}".scale_seeded (seconds float8)')
            conn.execute(f'INSERT INTO "{SCALE_SCHEMA}".scale_seeded VALUES (%s)', (time.monotonic() - started,))
        counts = conn.execute(f'SELECT (SELECT count(*) FROM "{SCALE_SCHEMA}".jobs), '
                              f'(SELECT count(*) FROM "{SCALE_SCHEMA}".job_events), '
                              f'(SELECT seconds FROM "{SCALE_SCHEMA}".scale_seeded)').fetchone()
    print(f"\nscale schema: {counts[0]:,} jobs, {counts[1]:,} events (seeded in {counts[2]:.0f} s)")
    assert counts[0] >= SCALE_JOBS and counts[1] >= 4_900_000
    return SCALE_SCHEMA


@pytest.mark.scale
def test_no_sequential_scan_at_a_million_jobs(scale_schema: str, database_dsn: str) -> None:
    with psycopg.connect(database_dsn, prepare_threshold=None) as conn:
        failures = check_plans(conn, scale_schema, hint=False)
    assert not failures, "\n".join(failures)


@pytest.mark.scale
def test_pages_render_within_budget_at_a_million_jobs(scale_schema: str, database_dsn: str) -> None:
    app = pgqueue.App(database_dsn, schema=scale_schema)
    dashboard = make_app(app, cache_seconds=0)
    with psycopg.connect(database_dsn) as conn:
        job_id = conn.execute(f'SELECT id FROM "{scale_schema}".jobs WHERE status = %s ORDER BY id '
                              "LIMIT 1 OFFSET 15000", ("failed",)).fetchone()[0]
        # The timeline looks at the seed's last hour, however long ago it was seeded.
        last = conn.execute(f'SELECT enqueued_at + interval \'5 seconds\' FROM "{scale_schema}".jobs '
                            "ORDER BY id DESC LIMIT 1").fetchone()[0]
    until = urllib.parse.quote(last.isoformat())
    pages = ["/", "/jobs", "/jobs?status=queued", "/jobs?status=queued&queue=q2", "/jobs?status=scheduled",
             "/jobs?status=running", "/jobs?status=failed", "/jobs?status=succeeded&queue=q3",
             "/jobs?task=tasks.t7", "/jobs?args=%5B7%5D", "/jobs?args=%7B%22user%22%3A+7%7D",
             f"/jobs/{job_id}", "/runners", "/runners?recent=7d", "/runners/50", "/runners/3",
             f"/timeline?until={until}", f"/timeline?window=1h&until={until}",
             f"/timeline?window=15m&queue=q1&until={until}", "/health", "/metrics",
             "/queues", "/queues/q2", "/schedules", "/schedules/schedule-3",
             "/schedules/schedule-3?events=runs"]
    report = []
    try:
        for path in pages:
            before = sum(dashboard.reader.counts.values())
            assert call(dashboard, path).status == 200, path  # warm up (templates, caches of the server)
            statements = sum(dashboard.reader.counts.values()) - before
            assert statements <= MAX_STATEMENTS, f"{path} ran {statements} statements"
            times = []
            for _ in range(20):
                started = time.perf_counter()
                response = call(dashboard, path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status == 200 and "data-problem" not in response.text, path
            p95 = statistics.quantiles(times, n=20)[18]
            report.append((path, statistics.median(times), p95, statements))
    finally:
        dashboard.close()
        app.close()
    print("\npage                                           median ms   p95 ms  statements")
    for path, median, p95, statements in report:
        print(f"{path.split('&until')[0].split('?until')[0]:<46} {median:9.1f} {p95:8.1f} {statements:6d}")
    slow = [(p, round(q, 1)) for p, _, q, _ in report if q > PAGE_BUDGET_MS]
    assert not slow, f"pages over the {PAGE_BUDGET_MS:.0f} ms p95 budget: {slow}"
