"""Hardening: global stalls, poison rows, hostile settings and rows, operator commands that
cannot wedge, one locked row, plans on grown tables, poolers, rolling deploys."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgqueue
from helpers import ROOT, events, wait_for
from pgqueue import admin as admin_ops
from pgqueue import errors, migrations, sqlfiles
from pgqueue.worker import claimer, outcomes
from pgqueue.worker.connections import ServiceConnection
from sqlrunner import maintain, register

FAST = ("--heartbeat-interval", "0.5", "--runner-dead-after", "2")


def count(admin: psycopg.Connection, sql: str, *params: object) -> int:
    return admin.execute(sql, params).fetchone()[0]


# ------------------------------------------------------------ 1. global stalls

@pytest.mark.parametrize("table", ["jobs", "runners"])
def test_a_global_stall_declares_no_runner_dead(wapp, start_worker, admin, database_dsn, table) -> None:
    """A lock on a whole table (VACUUM FULL, REINDEX, an ALTER queued behind a reader,
    LOCK TABLE) held for three leases while jobs run: nobody is declared dead, nothing re-runs."""
    schema = wapp.settings.schema
    workers = [start_worker(*FAST, "--concurrency", "2") for _ in range(2)]
    runners = [w.runner_id() for w in workers]
    jobs = [wapp.tasks["recorded_sleep"].enqueue(7.0) for _ in range(4)]
    wait_for(lambda: all(j.status() == "running" for j in jobs), message="all four jobs running")
    with psycopg.connect(database_dsn) as locker:
        locker.execute(f'LOCK TABLE "{schema}"."{table}" IN ACCESS EXCLUSIVE MODE')
        held_from = time.monotonic()
        wait_for(lambda: time.monotonic() - held_from >= 6.0, timeout=10,
                 message="three leases (3 x 2 s) to pass under the lock")
        locker.rollback()
    for job in jobs:
        assert job.result(timeout=30) == "slept 7.0"
    states = admin.execute(f'SELECT id, state FROM "{schema}".runners ORDER BY id').fetchall()
    assert states == [(r, "running") for r in sorted(runners)], states
    ran = admin.execute(f"""SELECT job_id, count(*) FROM "{schema}".executions WHERE note = 'start'
                            GROUP BY job_id""").fetchall()
    assert sorted(n for _, n in ran) == [1, 1, 1, 1], f"a job ran twice: {ran}"
    assert count(admin, f"SELECT count(*) FROM \"{schema}\".job_events WHERE kind = 'crashed'") == 0
    assert count(admin, f'SELECT coalesce(sum(crashes), 0) FROM "{schema}".jobs') == 0


# --------------------------------------------------------------- 2. poison rows

def test_a_row_the_worker_cannot_decode_fails_that_job_alone(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    deep = "[" * 2000 + "]" * 2000
    huge_int = "1" + "0" * 5000
    good = [wapp.tasks["echo"].enqueue(n) for n in range(3)]
    bad = [admin.execute(f"""INSERT INTO "{schema}".jobs (task, args) VALUES ('echo', %s::jsonb)
                             RETURNING id""", (args,)).fetchone()[0]
           for args in (f"[{deep}]", f"[{huge_int}]")]
    oversized = admin.execute(f"""INSERT INTO "{schema}".jobs (task, args)
                                  SELECT 'echo', jsonb_build_array(string_agg(md5(random()::text), ''))
                                  FROM generate_series(1, 70000) RETURNING id""").fetchone()[0]
    start_worker("--concurrency", "10")
    for job in good:
        assert job.result(timeout=30) == job.info()["args"][0]
    for job_id, kind in ((bad[0], "ArgumentsNotDecodable"), (bad[1], "ArgumentsNotDecodable"),
                         (oversized, "ArgumentsTooLarge")):
        job = wapp.job(job_id)
        with pytest.raises(pgqueue.JobFailed) as failed:
            job.result(timeout=30)
        assert failed.value.error["type"] == kind, failed.value.error
        info = job.info()  # reading the row back does not fail either
        assert (info["status"], info["attempts"], info["max_attempts"]) == ("failed", 1, 3), \
            "an undecodable job must fail at once, not be retried"
        if kind == "ArgumentsNotDecodable":
            assert isinstance(info["args"], pgqueue.db.UndecodableJSON)


def test_a_non_object_error_written_by_hand_is_reported_not_raised_on(app, admin) -> None:
    schema = app.settings.schema
    job_id = admin.execute(f"""INSERT INTO "{schema}".jobs (task, status, error, finished_at)
                               VALUES ('t', 'failed', '"the disk is full"', now()) RETURNING id""").fetchone()[0]
    with pytest.raises(pgqueue.JobFailed, match="the disk is full"):
        app.job(job_id).result(timeout=5)


# ------------------------------------------------------- 3. settings and rows

def test_hostile_runner_rows_are_refused_by_the_schema(app, admin) -> None:
    schema = app.settings.schema
    for column, value in (("dead_after", "NaN"), ("dead_after", "Infinity"), ("dead_after", "1e300"),
                          ("heartbeat_interval", "NaN"), ("heartbeat_interval", "0")):
        with pytest.raises(psycopg.errors.CheckViolation):
            admin.execute(f"""INSERT INTO "{schema}".runners (host, pid, concurrency, version, {column})
                              VALUES ('h', 1, 1, 'x', %s::float8)""", (value,))


def test_the_migration_repairs_hostile_runner_rows_of_an_older_schema(make_app, admin) -> None:
    """A NaN lease written by hand under revision 0002 broke every reaper pass; 0003 repairs it."""
    app = make_app()
    migrations.migrate(app.database.dsn, app.settings.schema, target="0002")
    schema = app.settings.schema
    admin.execute(f"""INSERT INTO "{schema}".runners (host, pid, concurrency, version, dead_after,
                                                     heartbeat_interval)
                      VALUES ('h', 1, 1, 'x', 'NaN', 'Infinity')""")
    app.migrate()
    row = admin.execute(f'SELECT dead_after, heartbeat_interval FROM "{schema}".runners').fetchone()
    assert row == (10.0, 2.0)
    assert maintain(app, admin).elected


def test_backoff_cannot_overflow_at_any_number_of_failures() -> None:
    for failures in (1, 60, 1025, 5000, 100_000):
        delay = outcomes.backoff(failures, 1.0, 3600.0)
        assert 0 <= delay <= 3600.0


def test_a_job_that_retries_forever_keeps_retrying(wapp, start_worker, admin) -> None:
    """max_attempts=100000 is a real "retry forever" setup: at its 2001st failure the delay is
    capped and the slot is given back (it used to raise OverflowError and leak the slot)."""
    schema = wapp.settings.schema
    job = wapp.tasks["fail"].options(max_attempts=100_000).enqueue("again")
    admin.execute(f'UPDATE "{schema}".jobs SET failures = 2000 WHERE id = %s', (job.id,))
    start_worker("--concurrency", "1")
    wait_for(lambda: events(admin, schema, job.id)[-1][1] == "queued" and job.info()["failures"] == 2001,
             timeout=20, message="the 2001st failure to be written as a retry")
    info = job.info()
    assert info["run_at"] - info["started_at"] < dt.timedelta(hours=2)
    assert wapp.tasks["add"].enqueue(1, 2).result(timeout=20) == 3  # the slot came back


@pytest.mark.parametrize(("options", "message"), [
    ({"queue": "q" * 129}, "queue names are at most 128 characters"),
    ({"key": "k" * 513}, "keys are at most 512 characters"),
    ({"queue": "a\x00b"}, "without NUL"),
])
def test_names_and_keys_have_length_limits(app, options, message) -> None:
    task = app.task(name="t")(lambda: None)
    with pytest.raises(errors.ConfigurationError, match=message):
        task.options(**options).enqueue()


def test_task_names_have_a_length_limit(app) -> None:
    with pytest.raises(errors.ConfigurationError, match="task names are at most 255 characters"):
        app.task(name="t" * 256)(lambda: None)


def test_the_schema_refuses_overlong_names_written_by_hand(app, admin) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_queue_length"):
        admin.execute(f"""INSERT INTO "{app.settings.schema}".jobs (task, queue) VALUES ('t', repeat('q', 129))""")


def test_arguments_over_the_size_limit_are_refused_at_enqueue(make_app) -> None:
    app = make_app(max_args_bytes=4096)
    app.migrate()
    task = app.task(name="t")(lambda data: None)
    with pytest.raises(errors.ArgumentNotSerializable, match="over max_args_bytes \\(4096\\)"):
        task.enqueue("x" * 5000)
    with pytest.raises(errors.ArgumentNotSerializable, match="item 2: .*over max_args_bytes"):
        app.enqueue_many(task, [("a",), ("b",), ("x" * 5000,)])
    assert task.enqueue("x" * 1000).status() == "queued"


def test_nul_characters_are_refused_like_every_bad_argument(app) -> None:
    task = app.task(name="t")(lambda data: None)
    with pytest.raises(errors.ArgumentNotSerializable, match="NUL character"):
        task.enqueue({"name": "a\x00b"})
    with pytest.raises(errors.ArgumentNotSerializable, match="item 1: .*NUL character"):
        app.enqueue_many(task, [("ok",), ("a\x00",)])
    assert task.enqueue("the six characters \\u0000 are fine").status() == "queued"


def test_a_result_over_the_size_limit_fails_the_job(wapp, start_worker) -> None:
    start_worker(env={"PGQUEUE_MAX_RESULT_BYTES": "2048"})
    job = wapp.tasks["echo"].enqueue("r" * 4000)
    with pytest.raises(pgqueue.JobFailed) as failed:
        job.result(timeout=20)
    assert failed.value.error["type"] == "ResultTooLarge"
    assert job.info()["attempts"] == 1  # not retried: the same result would not fit again


# -------------------------------------------------------- 4. operator commands

def cli(database_dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=database_dsn, PGQUEUE_SCHEMA=schema)
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_retry_failed_with_shared_keys_retries_what_it_can(app, admin, database_dsn) -> None:
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    keyed = [task.options(key="k1").enqueue() for _ in range(1)]
    for _ in range(2):  # more failed jobs of the same key (each enqueued after the last failed)
        admin.execute(f"UPDATE \"{schema}\".jobs SET status = 'failed', finished_at = now() WHERE key = 'k1'")
        keyed.append(task.options(key="k1").enqueue())
    admin.execute(f"UPDATE \"{schema}\".jobs SET status = 'failed', finished_at = now() WHERE key = 'k1'")
    plain = task.enqueue()
    admin.execute(f"UPDATE \"{schema}\".jobs SET status = 'failed', finished_at = now() WHERE id = %s",
                  (plain.id,))
    result = cli(database_dsn, schema, "retry", "--failed")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 failed jobs queued again" in result.stdout, result.stdout
    assert "2 left failed: another job holds its key" in result.stdout, result.stdout
    statuses = [j.status() for j in keyed]
    assert sorted(statuses) == ["failed", "failed", "queued"] and plain.status() == "queued"


def test_retry_failed_terminates_when_retried_jobs_fail_again_at_once(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    jobs = wapp.enqueue_many(wapp.tasks["give_up"], [()] * 30)
    start_worker("--concurrency", "5")
    wait_for(lambda: count(admin, f"SELECT count(*) FROM \"{schema}\".jobs WHERE status = 'failed'") == 30,
             timeout=30, message="all jobs to fail")
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(admin_ops.retry_failed(wapp, batch=1)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "retry --failed did not terminate while the jobs failed again at once"
    assert outcome[0].retried == len(jobs)  # each retried once, however fast it failed again
    for job in jobs:
        assert sum(1 for e in events(admin, schema, job.id) if e[4] == "retried by user") == 1


# -------------------------------------------------------- 5. one locked row

def test_one_locked_row_does_not_stall_the_runner(wapp, start_worker, database_dsn) -> None:
    """An operator's open transaction holds one running job's row: that job's outcome waits,
    every other outcome (and claim) goes through."""
    schema = wapp.settings.schema
    worker = start_worker("--concurrency", "4")
    slow = wapp.tasks["sleep"].enqueue(0.5)
    wait_for(lambda: slow.status() == "running", message="the slow job to start")
    with psycopg.connect(database_dsn) as operator:
        operator.execute(f'SELECT * FROM "{schema}".jobs WHERE id = %s FOR UPDATE', (slow.id,))
        wait_for(lambda: f"job {slow.id}: its row is locked by another transaction" in worker.log(),
                 timeout=20, message="the slow job's outcome to meet the lock")
        quick = wapp.enqueue_many(wapp.tasks["add"], [(n, n) for n in range(20)])
        for n, job in enumerate(quick):
            assert job.result(timeout=20) == 2 * n  # written while the slow job's row is locked
        assert slow.status() == "running"
        operator.rollback()
    assert slow.result(timeout=20) == 0.5


# ---------------------------------------------------- 6. plans on grown tables

def test_a_claim_planned_on_an_empty_table_still_uses_the_index_after_it_grew(app, admin, database_dsn) -> None:
    schema = app.settings.schema
    conn = ServiceConnection(database_dsn, "test", 5, generic_plans=True, io_timeout=5)
    runner = register(app, admin, concurrency=10)
    request = claimer.Claim(runner, 10, "all")
    for _ in range(7):  # prepared (psycopg prepares at the 5th) and planned on an empty table
        claimer.claim(conn, app.queries, request, app.settings.max_args_bytes)
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, priority)
                      SELECT 't', (random() * 10)::int FROM generate_series(1, 200000)""")
    pg = conn.get()
    name, types = pg.execute("SELECT name, parameter_types FROM pg_prepared_statements "
                             "WHERE statement LIKE 'WITH me AS MATERIALIZED%%'").fetchone()
    statement = app.queries.raw(request.statement)
    values = statement.params(request.params(app.settings.max_args_bytes))
    with pg.transaction(force_rollback=True):
        with psycopg.ClientCursor(pg) as cur:
            plan = "\n".join(r[0] for r in cur.execute(
                f"EXPLAIN EXECUTE {name}(" + ", ".join(f"%s::{t}" for t in types) + ")", values).fetchall())
    conn.discard()
    assert "Seq Scan on jobs" not in plan, plan
    assert "jobs_ready_idx" in plan, plan


# ------------------------------------------------ 7. poolers, rolling deploys

def test_result_honours_listen_off(make_app, start_worker, admin) -> None:
    app = make_app(listen=False)
    app.migrate()
    from conftest import register_worker_tasks

    register_worker_tasks(app, admin)
    start_worker("--no-listen")
    assert app.tasks["add"].enqueue(2, 3).result(timeout=20) == 5
    assert app._waiters is None, "with listen off, no LISTEN connection is opened for results"
    assert count(admin, f'SELECT count(*) FROM "{app.settings.schema}".result_waiters') == 0


def test_workers_run_on_a_newer_compatible_schema(app, admin) -> None:
    schema = app.settings.schema
    admin.execute(f"UPDATE \"{schema}\".alembic_version SET version_num = '0099'")
    assert app.check_schema() == "0099"  # a rolling deploy: the next release migrated first
    admin.execute(f"UPDATE \"{schema}\".schema_info SET value = '0099' WHERE key = 'compatible_since'")
    with pytest.raises(errors.SchemaNotMigrated, match="not compatible with it .*upgrade pgqueue"):
        app.check_schema()


def test_a_migration_waits_for_locks_without_blocking_everyone_behind_it(make_app, admin, database_dsn) -> None:
    app = make_app()
    migrations.migrate(app.database.dsn, app.settings.schema, target="0002")
    schema = app.settings.schema
    done: list[object] = []
    with psycopg.connect(database_dsn) as reader:  # a long reader holds ACCESS SHARE on jobs
        reader.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()
        thread = threading.Thread(target=lambda: done.append(app.migrate()), daemon=True)
        thread.start()
        # While the migration waits for its lock, writes to jobs are not queued behind it for long.
        for _ in range(3):
            started = time.monotonic()
            admin.execute(f"""INSERT INTO "{schema}".jobs (task) VALUES ('t')""")
            assert time.monotonic() - started < migrations.LOCK_TIMEOUT + 2.0
        assert thread.is_alive(), "the migration should still be waiting for the reader"
        reader.rollback()
    thread.join(timeout=60)
    assert done and done[0][1] == sqlfiles.head_revision()


# --------------------------------------------------- 8. the DSN is not in argv

def test_worker_processes_get_the_dsn_in_their_environment_not_in_argv(wapp, database_dsn, tmp_path) -> None:
    """`pgqueue --dsn ... work --processes 2`: the children's command lines (readable by every
    local user in /proc/<pid>/cmdline) do not carry the DSN; their environment does."""
    schema = wapp.settings.schema
    env = {k: v for k, v in os.environ.items() if not (k.startswith("PGQUEUE_") or k == "DATABASE_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["PGAPPNAME"] = f"pgqueue-test-{schema}"
    with open(tmp_path / "supervisor.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "--app", "workerapp:app", "--dsn",
                                 database_dsn, "--schema", schema, "work", "--processes", "2"],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        def child_pids() -> list[int]:
            with psycopg.connect(database_dsn, autocommit=True) as conn:
                return [r[0] for r in conn.execute(
                    f"SELECT pid FROM \"{schema}\".runners WHERE state = 'running'").fetchall()]
        wait_for(lambda: len(child_pids()) == 2, timeout=60, message="both worker processes to register")
        for pid in child_pids():
            assert pid != proc.pid
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert not any(database_dsn.encode() in a for a in argv), argv
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"PGQUEUE_DSN={database_dsn}".encode() in environ
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# ------------------------------------------------------------------ 10. bloat

def test_queue_tables_have_queue_minded_autovacuum_settings(app, admin) -> None:
    rows = dict(admin.execute(
        "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname IN ('jobs', 'job_events')", (app.settings.schema,)).fetchall())
    assert "autovacuum_vacuum_scale_factor=0.01" in rows["jobs"]
    assert "autovacuum_vacuum_cost_delay=0" in rows["jobs"]
    assert "autovacuum_vacuum_insert_scale_factor=0.05" in rows["job_events"]


def test_queue_stats_does_not_scan_the_jobs_table(app, admin) -> None:
    schema = app.settings.schema
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, status, finished_at)
                      SELECT 't', 'succeeded', now() FROM generate_series(1, 50000)""")
    admin.execute(f"""INSERT INTO "{schema}".jobs (task) SELECT 't' FROM generate_series(1, 100)""")
    admin.execute(f'ANALYZE "{schema}".jobs')
    plan = "\n".join(r[0] for r in admin.execute(f'EXPLAIN SELECT * FROM "{schema}".queue_stats').fetchall())
    assert "Seq Scan on jobs" not in plan, plan


def test_status_warns_while_a_transaction_holds_the_horizon(app, database_dsn, monkeypatch) -> None:
    monkeypatch.setattr(admin_ops, "HORIZON_WARNING", 1.0)
    with psycopg.connect(database_dsn) as reporting:  # a long report on the primary
        reporting.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reporting.execute(f'SELECT count(*) FROM "{app.settings.schema}".jobs').fetchone()
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > 1.5, message="the transaction to be old")
        report = admin_ops.status_report(app)
        reporting.rollback()
    held = [w for w in report["warnings"] if "held the xmin horizon" in w]
    assert held and "dead job rows cannot be cleaned up" in held[0], report["warnings"]
    assert report["health"]["oldest_transaction_age"].total_seconds() > 1.0


# ------------------------------------------------------- 11. the App's own pool

def test_the_apps_pool_closed_by_another_thread_serves_the_next_caller(app) -> None:
    """A runner closes the App's pool when it starts, while web or task code in the same
    process may be using it: a caller caught between reading the pool and checking a
    connection out of it gets a fresh pool, never 'the pool is already closed'."""
    database = app.database
    failures: list[BaseException] = []
    served = [0] * 4
    done = threading.Event()

    def use(index: int) -> None:
        try:
            while not done.is_set():
                assert database.fetch("SELECT 1 AS one") == [{"one": 1}]
                served[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    users = [threading.Thread(target=use, args=(index,)) for index in range(4)]
    for thread in users:
        thread.start()
    try:
        for _ in range(40):
            before = list(served)
            database.close()
            wait_for(lambda: failures or all(now > then for now, then in zip(served, before)),
                     timeout=10, message="every caller to be served again")
    finally:
        done.set()
        for thread in users:
            thread.join(30)
    assert not failures, failures[0]
