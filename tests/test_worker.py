"""The worker runtime, with real `pgqueue work` subprocesses and real signals."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

import pgqueue
from helpers import events, job_rows, wait_for

FAST = ("--heartbeat-interval", "0.5", "--runner-dead-after", "2")


def test_jobs_run_and_results_come_back(wapp, start_worker) -> None:
    worker = start_worker()
    job = wapp.tasks["add"].enqueue(2, 3)
    assert job.result(timeout=20) == 5
    async_job = wapp.tasks["async_sleep"].enqueue(0.05)
    assert async_job.result(timeout=20) == 0.05
    echoed = wapp.tasks["echo"].enqueue({"nested": [1, "two", None]})
    assert echoed.result(timeout=20) == {"nested": [1, "two", None]}
    assert worker.proc.poll() is None


def test_history_of_a_successful_job(wapp, start_worker, admin) -> None:
    worker = start_worker()
    runner = worker.runner_id()
    job = wapp.tasks["add"].enqueue(1, 1)
    job.result(timeout=20)
    assert events(admin, wapp.settings.schema, job.id) == [
        (None, "queued", 0, None, "enqueued"),
        ("queued", "running", 1, runner, "claimed"),
        ("running", "succeeded", 1, runner, "succeeded"),
    ]
    row = job.info()
    assert row["started_at"] <= row["finished_at"]
    assert row["runner_id"] is None and row["attempts"] == 1


def test_failures_are_retried_with_backoff_then_fail(wapp, start_worker, admin) -> None:
    start_worker()
    job = wapp.tasks["fail"].enqueue("boom")
    with pytest.raises(pgqueue.JobFailed, match="ValueError: boom") as info:
        job.result(timeout=30)
    assert "Traceback" in info.value.error["traceback"]
    row = job.info()
    assert (row["status"], row["attempts"], row["failures"]) == ("failed", 3, 3)
    history = events(admin, wapp.settings.schema, job.id)
    reasons = [e[4] for e in history]
    assert reasons[0] == "enqueued"
    assert reasons[2].startswith("retry in ") and reasons[2].endswith("ValueError: boom")
    assert reasons[4].startswith("retry in ")
    assert reasons[6] == "failed after 3 failed attempts: ValueError: boom"
    # Backoff: the second retry waits longer on average; each claim comes after its retry's delay.
    times = admin.execute(
        f'SELECT at FROM "{wapp.settings.schema}".job_events WHERE job_id = %s ORDER BY id', (job.id,)
    ).fetchall()
    first_gap = (times[3][0] - times[2][0]).total_seconds()
    assert first_gap >= 0.09, f"retry ran after {first_gap} s: backoff not applied"


def test_flaky_job_succeeds_on_a_later_attempt(wapp, start_worker) -> None:
    start_worker()
    job = wapp.tasks["flaky"].enqueue(2)
    assert job.result(timeout=30) == 3
    row = job.info()
    assert (row["status"], row["attempts"], row["failures"]) == ("succeeded", 3, 2)


def test_retry_with_an_explicit_delay(wapp, start_worker, admin) -> None:
    start_worker()
    job = wapp.tasks["retry_later"].enqueue(0.3)
    assert job.result(timeout=20) == "second time lucky"
    history = events(admin, wapp.settings.schema, job.id)
    assert history[2][4].startswith("retry in 0.3 s: pgqueue.errors.Retry")


def test_not_retryable_errors_fail_at_once(wapp, start_worker) -> None:
    start_worker()
    marked = wapp.tasks["not_retryable"].enqueue()
    explicit = wapp.tasks["give_up"].enqueue()
    for job in (marked, explicit):
        with pytest.raises(pgqueue.JobFailed):
            job.result(timeout=20)
        assert job.info()["attempts"] == 1
    assert "not retryable" in events_reason(marked)


def events_reason(job: pgqueue.Job) -> str:
    rows = job.app.database.fetch(
        f'SELECT reason FROM "{job.app.settings.schema}".job_events WHERE job_id = %(id)s ORDER BY id DESC LIMIT 1',
        {"id": job.id})
    return rows[0]["reason"]


def test_timeouts_fail_the_job_and_free_the_slot(wapp, start_worker) -> None:
    start_worker("--concurrency", "1")
    slow = wapp.tasks["slow_sync"].enqueue(30)
    slow_async = wapp.tasks["slow_async"].enqueue(30)
    after = wapp.tasks["add"].enqueue(1, 2)
    # One slot: `after` can only run once the timed-out jobs gave theirs back.
    assert after.result(timeout=20) == 3
    for job in (slow, slow_async):
        with pytest.raises(pgqueue.JobFailed, match="timed out after 0.5 s"):
            job.result(timeout=20)


def test_unknown_task_and_bad_results_fail_clearly(wapp, start_worker, admin) -> None:
    start_worker()
    schema = wapp.settings.schema
    job_id = admin.execute(
        f"""INSERT INTO "{schema}".jobs (task, args, max_attempts) VALUES ('nobody.knows', '[]', 1)
            RETURNING id""").fetchone()[0]
    with pytest.raises(pgqueue.JobFailed, match="task 'nobody.knows' is not registered"):
        wapp.job(job_id).result(timeout=20)
    with pytest.raises(pgqueue.JobFailed, match="ResultNotSerializable"):
        wapp.tasks["bad_result"].enqueue().result(timeout=20)
    with pytest.raises(pgqueue.JobFailed, match="OutcomeNotStored"):
        wapp.tasks["nul_result"].enqueue().result(timeout=20)
    with pytest.raises(pgqueue.JobFailed, match="OutcomeNotStored"):
        wapp.tasks["surrogate_result"].enqueue().result(timeout=20)
    # Such outcomes never jam the worker: the next job goes through.
    assert wapp.tasks["add"].enqueue(2, 2).result(timeout=20) == 4


def test_cancel_a_running_job(wapp, start_worker) -> None:
    start_worker(*FAST)
    sync_job = wapp.tasks["cancellable"].enqueue(30)
    async_job = wapp.tasks["async_cancellable"].enqueue(30)
    for job in (sync_job, async_job):
        wait_for(lambda: job.status() == "running", message=f"job {job.id} to run")
        assert job.cancel() == "running"
    for job in (sync_job, async_job):
        with pytest.raises(pgqueue.JobCancelled):
            job.result(timeout=20)
    # The sync task saw the flag and returned early: cancelled, with what it returned kept.
    assert sync_job.info()["result"] == "stopped early"


def test_log_records_carry_the_job(wapp, start_worker) -> None:
    worker = start_worker()
    job = wapp.tasks["logs"].enqueue("hello")
    job.result(timeout=20)
    wait_for(lambda: "inside the task: hello" in worker.log(), message="the task's log line")
    line = next(l for l in worker.log().splitlines() if "inside the task: hello" in l)
    assert f"[job {job.id} logs attempt 1]" in line


def test_priority_and_run_at_decide_the_order(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    low = wapp.tasks["add"].options(priority=0).enqueue(0, 0)
    high = wapp.tasks["add"].options(priority=10).enqueue(0, 0)
    later = wapp.tasks["add"].options(priority=20, delay=3600).enqueue(0, 0)
    start_worker("--concurrency", "1")
    low.result(timeout=20)
    started = {r["id"]: r["started_at"] for r in job_rows(admin, schema, "started_at IS NOT NULL")}
    assert started[high.id] < started[low.id]
    assert later.status() == "queued"


def test_queues_limit_what_a_worker_runs(wapp, start_worker) -> None:
    start_worker("--queues", "mail")
    other = wapp.tasks["add"].enqueue(1, 1)
    mail = wapp.tasks["add"].options(queue="mail").enqueue(2, 2)
    assert mail.result(timeout=20) == 4
    assert other.status() == "queued"


def test_poll_only_mode(wapp, start_worker) -> None:
    start_worker("--no-listen", "--poll-interval", "0.2")
    assert wapp.tasks["add"].enqueue(4, 4).result(timeout=20) == 8


def test_a_notification_wakes_an_idle_worker_at_once(wapp, start_worker, admin) -> None:
    worker = start_worker("--poll-interval", "30")
    runner = worker.runner_id()
    wait_for(lambda: admin.execute(f'SELECT waiting FROM "{wapp.settings.schema}".runners WHERE id = %s',
                                   (runner,)).fetchone()[0], message="the runner to wait")
    # With a 30 s poll, only the NOTIFY can make this quick.
    assert wapp.tasks["add"].enqueue(1, 2).result(timeout=10) == 3


def test_sigterm_lets_running_jobs_finish_then_exits_0(wapp, start_worker, admin) -> None:
    worker = start_worker()
    runner = worker.runner_id()
    job = wapp.tasks["sleep"].enqueue(1.5)
    wait_for(lambda: job.status() == "running", message="the job to start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "received SIGTERM" in worker.log(), message="the signal to be handled")
    # Enqueued while the worker drains: it must not be claimed any more.
    late = wapp.tasks["add"].enqueue(1, 1)
    assert worker.wait(timeout=30) == 0, worker.log()
    assert job.status() == "succeeded"
    assert (late.status(), late.info()["attempts"]) == ("queued", 0)
    schema = wapp.settings.schema
    assert admin.execute(f'SELECT state FROM "{schema}".runners WHERE id = %s', (runner,)).fetchone() == ("stopped",)
    assert not job_rows(admin, schema, "status = 'running'")


def test_shutdown_timeout_hands_unfinished_jobs_back(wapp, start_worker, admin) -> None:
    worker = start_worker("--shutdown-timeout", "0.5")
    runner = worker.runner_id()
    job = wapp.tasks["sleep"].enqueue(60)
    wait_for(lambda: job.status() == "running", message="the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.log()
    row = job.info()
    assert (row["status"], row["attempts"], row["failures"], row["runner_id"]) == ("queued", 1, 0, None)
    assert events(admin, wapp.settings.schema, job.id)[-1] == (
        "running", "queued", 1, runner, "handed back: worker stopping")


def test_second_signal_hands_back_at_once(wapp, start_worker) -> None:
    worker = start_worker("--shutdown-timeout", "120")
    job = wapp.tasks["sleep"].enqueue(60)
    wait_for(lambda: job.status() == "running", message="the job to start")
    worker.signal(signal.SIGINT)
    wait_for(lambda: "received SIGINT" in worker.log(), message="the first signal to be handled")
    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=30) == 0, worker.log()
    assert time.monotonic() - started < 20
    assert job.status() == "queued"


def test_two_workers_never_run_one_attempt_twice(wapp, start_worker, admin) -> None:
    start_worker("--concurrency", "8")
    start_worker("--concurrency", "8")
    jobs = wapp.enqueue_many(wapp.tasks["recorded_sleep"], [(0,)] * 300)
    schema = wapp.settings.schema
    wait_for(lambda: admin.execute(f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'succeeded'""")
             .fetchone()[0] == len(jobs), timeout=120, message="all jobs to succeed")
    duplicates = admin.execute(
        f"""SELECT job_id, attempt, count(*) FROM "{schema}".executions WHERE note = 'start'
            GROUP BY 1, 2 HAVING count(*) > 1""").fetchall()
    assert duplicates == []
    per_runner = admin.execute(
        f"""SELECT count(DISTINCT runner_id) FROM "{schema}".executions""").fetchone()[0]
    assert per_runner == 2, "both workers should have taken part"
    assert admin.execute(f'SELECT count(*) FROM "{schema}".executions WHERE note = %s', ("start",)).fetchone()[0] == 300


def test_connections_cut_under_load_lose_nothing(wapp, start_worker, admin, schema_name) -> None:
    worker = start_worker("--concurrency", "4")
    worker.runner_id()
    jobs = wapp.enqueue_many(wapp.tasks["sleep"], [(0.01,)] * 200)
    schema = wapp.settings.schema
    done = lambda: admin.execute(  # noqa: E731
        f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'succeeded'""").fetchone()[0]
    wait_for(lambda: done() > 20, message="some progress")
    cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                        (f"pgqueue-test-{schema_name}",)).fetchone()[0]
    assert cut >= 2, "the worker's two connections (claim loop, control) should have been cut"
    wait_for(lambda: done() == len(jobs), timeout=60, message="every job to succeed after the cut")
    assert worker.proc.poll() is None
    log = worker.log()
    assert log.count("database unavailable") == 1, log
    assert "database reachable again" in log


def test_a_postgres_restart_under_load_loses_nothing(private_server, start_worker) -> None:
    """A real server restart (a private embedded server, so the test may stop it)."""
    server, dsn, app = private_server
    worker = start_worker("--concurrency", "4", dsn=dsn)
    worker.runner_id()
    jobs = app.enqueue_many(app.tasks["recorded_sleep"], [(0.02,)] * 150)
    schema = app.settings.schema

    def done() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return conn.execute(
                f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'succeeded'""").fetchone()[0]

    wait_for(lambda: done() > 10, message="some progress before the restart")
    assert server.stop()
    server.ensure_running()
    wait_for(lambda: done() == len(jobs), timeout=90, message="every job to succeed after the restart")
    assert worker.proc.poll() is None
    with psycopg.connect(dsn, autocommit=True) as conn:
        ran = conn.execute(
            f"""SELECT count(*), count(DISTINCT job_id) FROM "{schema}".executions WHERE note = 'end'""").fetchone()
        dead = conn.execute(f"""SELECT count(*) FROM "{schema}".runners WHERE state = 'dead'""").fetchone()[0]
    # Every job finished; an attempt cut short by the restart may have run again, never
    # more than the jobs in flight at that moment (4 slots).
    assert ran[1] == len(jobs) and ran[0] - ran[1] <= 4, ran
    assert dead == 0, "the restart must not get the runner declared dead"
    assert "database reachable again" in worker.log()


def test_pgqueue_demo_runs_and_recovers(database_dsn) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    result = subprocess.run([sys.executable, "-m", "pgqueue.cli", "--dsn", database_dsn, "demo"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Worker-1 exited with code -9" in out
    assert out.count("declared dead: process gone") == 3  # its sessions ended: known at once
    assert out.count("succeeded") >= 3
    assert "kill -> jobs completed:" in out


def test_a_stream_of_enqueues_wakes_a_lingering_runner_without_a_notify_each(wapp, start_worker, database_dsn) -> None:
    """After work a runner lingers (looks for more itself, its row saying it does not wait),
    so a stream of enqueues sends few NOTIFYs; then it waits, and an enqueue wakes it."""
    schema = wapp.settings.schema
    task = wapp.tasks["noop"]
    worker = start_worker(env={"PGQUEUE_POLL_INTERVAL": "60"})  # only a NOTIFY or a linger finds work
    runner = worker.runner_id()
    waiting = f'SELECT waiting FROM "{schema}".runners WHERE id = %s'
    with psycopg.connect(database_dsn, autocommit=True) as listener, \
            psycopg.connect(database_dsn, autocommit=True) as probe:
        wait_for(lambda: probe.execute(waiting, (runner,)).fetchone()[0], message="the runner to wait")
        listener.execute(f'LISTEN "{schema}.jobs"')
        jobs = []
        for _ in range(60):
            jobs.append(task.enqueue())
            time.sleep(0.002)
        for job in jobs:
            assert job.wait(30) == "succeeded"
        notifies = sum(1 for _ in listener.notifies(timeout=0.5))
        # Every enqueue would notify a waiting runner; a lingering one is not waiting. (Generous:
        # a stall of the machine longer than the linger makes the runner wait in between.)
        assert notifies < 30, f"{notifies} NOTIFYs for 60 enqueues"
        # The linger ends: the runner waits again, and a lone enqueue wakes it by its NOTIFY
        # (the poll is a minute away).
        wait_for(lambda: probe.execute(waiting, (runner,)).fetchone()[0], message="the runner to wait again")
        lone = task.enqueue()
        assert lone.wait(10) == "succeeded"


def test_the_claim_that_marks_a_runner_waiting_is_followed_by_a_look_at_once(wapp, admin) -> None:
    """A job whose enqueue checked the runner's flag just before the claim set it sent no
    NOTIFY, and that claim's snapshot may not show it: the claim loop looks again at once (and
    a few times over the next ms), not at the next poll a second later. (The look was asked for
    but the loop slept until its next deadline: one enqueue in ten waited for the next NOTIFY.)"""
    from pgqueue.worker import Runner

    runner = Runner(wapp, install_signals=False)
    try:
        runner._register()
        runner._linger_step = None  # a linger just ended: this claim marks the row waiting
        runner._wake.clear()
        runner._claim(time.monotonic())
        schema = wapp.settings.schema
        assert admin.execute(f'SELECT waiting FROM "{schema}".runners WHERE id = %s',
                             (runner.runner_id,)).fetchone()[0] is True
        assert runner._wake.is_set(), "the look after the flag waits for the next deadline"
        runner._wake.clear()
        runner._claim(time.monotonic())  # that look (nothing yet): then the settling looks
        assert runner._next_poll - time.monotonic() <= 0.01
    finally:
        runner._conn.discard()
