"""Scale: claims lock only the rows they claim whatever the queues, one maintenance pass per
interval for the whole cluster, and the sweep for orphaned jobs finds them by runner."""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest

from pgqueue.worker import claimer
from pgqueue.worker.connections import BorrowedConnection, ServiceConnection
from pgqueue.worker.maintenance import Maintenance
from sqlrunner import claim, maintain, register


def seed_queues(admin: psycopg.Connection, schema: str, queues: int, per_queue: int) -> None:
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, queue, due, priority)
                      SELECT 't', 'q' || lpad(q::text, 4, '0'), true, (random() * 3)::int
                      FROM generate_series(1, %s) AS q, generate_series(1, %s) AS n""", (queues, per_queue))
    admin.execute(f'ANALYZE "{schema}".jobs')


@pytest.mark.parametrize("served", [None, 50, 3, 1])
def test_a_claim_locks_only_the_rows_it_claims(app, admin, database_dsn, served) -> None:
    """1,000 queues holding 20 jobs each: a runner serving every queue, 50 of them, 3, or one
    claims 20 jobs and holds no lock on any other row (it once locked 20 per queue)."""
    schema = app.settings.schema
    seed_queues(admin, schema, 1000, 20)
    queues = None if served is None else [f"q{n:04d}" for n in range(1, served + 1)]
    runner = register(app, admin, concurrency=20)
    with psycopg.connect(database_dsn) as conn:  # one transaction: the claim's locks stay held
        request = claimer.Claim.serving(runner, 20, tuple(queues) if queues else None)
        result = claimer.claim(BorrowedConnection(conn), app.queries, request, app.settings.max_args_bytes)
        assert len(result.jobs) == 20
        # Rows this transaction locked without claiming them still look queued to it, with its
        # own transaction id as their locker (xmax).
        extra = conn.execute(f"""SELECT count(*) FROM "{schema}".jobs
                                 WHERE status = 'queued' AND xmax = pg_current_xact_id()::xid""").fetchone()[0]
        assert extra == 0, f"the claim locked {extra} rows it did not claim"
        conn.rollback()


def test_claims_across_many_queues_keep_claim_order_within_each_queue(app, admin) -> None:
    schema = app.settings.schema
    seed_queues(admin, schema, 50, 5)
    runner = register(app, admin, concurrency=100)
    queues = tuple(f"q{n:04d}" for n in range(1, 51))
    remaining = dict(admin.execute(
        f"""SELECT queue, array_agg(id ORDER BY priority DESC, run_at, id) FROM "{schema}".jobs
            GROUP BY queue""").fetchall())
    claimed = 0
    while True:
        jobs = claim(app, admin, runner, limit=17, queues=list(queues))
        if not jobs:
            break
        claimed += len(jobs)
        by_queue: dict[str, set[int]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, set()).add(job.id)
        for queue, ids in by_queue.items():
            head = remaining[queue][:len(ids)]
            assert set(head) == ids, f"queue {queue}: claimed {sorted(ids)}, its next jobs were {head}"
            remaining[queue] = remaining[queue][len(ids):]
    assert claimed == 250


@pytest.mark.parametrize("served", ["every queue", "every queue but one", "30 named"])
def test_each_claim_across_queues_takes_the_best_jobs_of_the_queues_served(app, admin, served) -> None:
    """Queues of uneven sizes, priorities and run times (and better jobs in a queue not
    served): every claim takes exactly the best `limit` runnable jobs of the queues served, in
    (priority, run_at, id) order, however they spread over the queues. Modes 'all', 'many'
    without a list (a queue excluded, as a paused one is) and 'many' with one."""
    schema = app.settings.schema
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, queue, due, priority, run_at)
                      SELECT 't', 'q' || lpad(q::text, 4, '0'), true, (n * 7 + q * 13) % 4,
                             now() - (((n * 31 + q * 17) % 97) || ' seconds')::interval
                      FROM generate_series(1, 40) AS q, generate_series(1, q % 9 + q / 8) AS n""")
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, queue, due, priority)
                      SELECT 't', 'unserved', true, 10 FROM generate_series(1, 50)""")
    admin.execute(f'ANALYZE "{schema}".jobs')
    queues, excluded = {"every queue": (None, None), "every queue but one": (None, ["unserved"]),
                        "30 named": ([f"q{n:04d}" for n in range(1, 31)], None)}[served]
    runner = register(app, admin, concurrency=100)
    order = f"""SELECT id FROM "{schema}".jobs WHERE status = 'queued' AND due
                  AND (%(queues)s::text[] IS NULL OR queue = ANY (%(queues)s::text[]))
                  AND NOT (queue = ANY (coalesce(%(excluded)s::text[], '{{}}')))
                ORDER BY priority DESC, run_at, id"""
    which = {"queues": queues, "excluded": excluded}
    expected_total = len(admin.execute(order, which).fetchall())
    claimed = 0
    for limit in [17, 1, 5, 20, 3] * 40:
        best = [r[0] for r in admin.execute(order + " LIMIT %(limit)s", {**which, "limit": limit})]
        request = claimer.Claim.serving(runner, limit, tuple(queues) if queues else None, excluded)
        assert request.mode == {"every queue": "all", "every queue but one": "many", "30 named": "many"}[served]
        jobs = claimer.claim(BorrowedConnection(admin), app.queries, request, app.settings.max_args_bytes).jobs
        assert sorted(job.id for job in jobs) == sorted(best), f"limit {limit}: claimed the wrong jobs"
        claimed += len(jobs)
        if not jobs:
            break
    assert claimed == expected_total and expected_total > 150


def test_one_maintenance_pass_per_interval_whatever_the_number_of_runners(app, database_dsn) -> None:
    """Twenty runners trying at once, all the time: passes stay one per interval."""
    interval = 0.25
    stop = threading.Event()
    won: list[float] = []
    errors: list[BaseException] = []

    def runner_loop() -> None:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            passes = Maintenance(queries=app.queries, interval=interval, dead_after=10.0, max_crashes=3,
                                 process_checks=True, statement_timeout=5.0)
            while not stop.is_set():
                try:
                    result = passes.run_once(BorrowedConnection(conn), None)
                    if result.elected:
                        won.append(result.at.timestamp())  # the database's clock
                except Exception as exc:  # asserted below
                    errors.append(exc)
                stop.wait(0.02)

    threads = [threading.Thread(target=runner_loop, daemon=True) for _ in range(20)]
    started = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(3.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]
    won.sort()
    gaps = [b - a for a, b in zip(won, won[1:])]
    assert min(gaps) >= 0.8 * interval * 0.9, f"two passes {min(gaps):.3f} s apart: the election failed"
    assert len(won) <= elapsed / (0.8 * interval) + 1, f"{len(won)} passes in {elapsed:.1f} s"
    assert len(won) >= elapsed / interval / 2, f"only {len(won)} passes in {elapsed:.1f} s"


def test_the_sweep_finds_orphaned_jobs_by_runner(app, admin) -> None:
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    app.enqueue_many(task, [()] * 30)
    alive = register(app, admin, concurrency=10)
    claim(app, admin, alive, limit=10)
    gone = register(app, admin, concurrency=10)
    claim(app, admin, gone, limit=10)
    stopped = register(app, admin, concurrency=10)
    claim(app, admin, stopped, limit=10)
    admin.execute(f'DELETE FROM "{schema}".runners WHERE id = %s', (gone,))  # a row deleted by hand
    admin.execute(f"UPDATE \"{schema}\".runners SET state = 'stopped' WHERE id = %s", (stopped,))
    admin.execute(f"UPDATE \"{schema}\".maintenance SET last_sweep_at = '-infinity'")
    result = maintain(app, admin)
    assert result.swept == 20
    rows = dict(admin.execute(f"""SELECT kind, count(*) FROM "{schema}".job_events
                                  WHERE kind IN ('crashed', 'handed_back') GROUP BY kind""").fetchall())
    assert rows == {"crashed": 10, "handed_back": 10}
    assert admin.execute(f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'running'""").fetchone()[0] == 10


def executed_rows_on_jobs(plan: list[str]) -> int:
    """The most rows any executed plan node over ``jobs`` produced (``never executed`` nodes
    and their children count nothing)."""
    worst = 0
    for line in plan:
        match = re.search(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=(\d+)", line)
        if match and (" on jobs" in line or "Sort" in line):
            worst = max(worst, int(match.group(1)) * int(match.group(2)))
    return worst


@pytest.mark.parametrize("mode", ["all", "one", "many", "limited"])
def test_each_claim_reads_only_what_it_claims_on_an_analyzed_backlog(app, admin, database_dsn, mode) -> None:
    """20,000 runnable jobs in one queue, the table analyzed (as autovacuum would): each
    claim mode, through a connection set up as a worker's (generic plans, prepared once the
    statement repeats), reads about as many rows as it claims. A claim that once tested each
    row's queue against the paused ones sorted the whole backlog at every claim (with a single
    queue in the statistics, the planner took "not one of the paused queues" to match no row)."""
    schema = app.settings.schema
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, due) SELECT 't', true FROM generate_series(1, 20000)""")
    admin.execute(f'ANALYZE "{schema}".jobs')
    if mode == "limited":
        app.queues.limit("default", concurrency=1000)
    runner = register(app, admin, concurrency=20)
    request = {"all": claimer.Claim.serving(runner, 20, None),
               "one": claimer.Claim.serving(runner, 20, ("default",)),
               "many": claimer.Claim.serving(runner, 20, ("default", "other")),
               "limited": claimer.Claim.limited(runner, 20, "default")}[mode]
    conn = ServiceConnection(database_dsn, "test", 5, generic_plans=True, io_timeout=5)
    try:
        for _ in range(6):  # psycopg prepares it at the 5th execution (these claims commit)
            result = claimer.claim(conn, app.queries, request, app.settings.max_args_bytes)
            assert len(result.jobs) == 20
        pg = conn.get()
        name, types = pg.execute("SELECT name, parameter_types FROM pg_prepared_statements "
                                 "WHERE statement LIKE 'WITH me AS MATERIALIZED%%'").fetchone()
        values = app.queries.raw(request.statement).params(request.params(app.settings.max_args_bytes))
        with pg.transaction(force_rollback=True), psycopg.ClientCursor(pg) as cur:
            plan = [r[0] for r in cur.execute(
                f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE {name}(" + ", ".join(f"%s::{t}" for t in types) + ")",
                values).fetchall()]
    finally:
        conn.discard()
    assert executed_rows_on_jobs(plan) <= 200, "\n".join(plan)
