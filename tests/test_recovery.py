"""Self-healing: SIGKILLed workers, zombies, concurrent reapers, poison pills, lost leases."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

import pgqueue
from helpers import events, wait_for
from pgqueue.worker.connections import OutageLog, ServiceConnection
from pgqueue.worker.heartbeat import Heartbeat
from pgqueue.worker.reaper import reap

FAST = ("--heartbeat-interval", "0.5", "--runner-dead-after", "2")


def runner_state(admin: psycopg.Connection, schema: str, runner_id: int) -> tuple:
    return admin.execute(f'SELECT state, reason FROM "{schema}".runners WHERE id = %s', (runner_id,)).fetchone()


def test_sigkill_mid_job_another_worker_finishes(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    first = start_worker(*FAST, "--concurrency", "3")
    dead_runner = first.runner_id()
    jobs = [wapp.tasks["recorded_sleep"].enqueue(1.5) for _ in range(3)]
    wait_for(lambda: all(j.status() == "running" for j in jobs), message="all jobs running on worker 1")
    second = start_worker(*FAST)
    survivor = second.runner_id()
    first.signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    for job in jobs:
        assert job.result(timeout=30) == "slept 1.5"
    assert runner_state(admin, schema, dead_runner)[0] == "dead"
    for job in jobs:
        history = events(admin, schema, job.id)
        steps = [(e[0], e[1], e[3]) for e in history]
        assert steps == [
            (None, "queued", None),
            ("queued", "running", dead_runner),
            ("running", "queued", dead_runner),
            ("queued", "running", survivor),
            ("running", "succeeded", survivor),
        ], history
        assert history[2][4].startswith(f"runner {dead_runner} declared dead: no heartbeat for ")
        row = job.info()
        assert (row["attempts"], row["crashes"], row["failures"]) == (2, 1, 0)
    # Worker 1 started each job and never finished one; worker 2 ran each from start to end.
    ran = admin.execute(f'SELECT runner_id, note, count(*) FROM "{schema}".executions GROUP BY 1, 2 ORDER BY 1, 2').fetchall()
    assert ran == [(dead_runner, "start", 3), (survivor, "end", 3), (survivor, "start", 3)]


def test_a_paused_worker_declared_dead_does_not_overwrite_the_new_attempt(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    zombie = start_worker(*FAST, "--concurrency", "1")
    zombie_runner = zombie.runner_id()
    job = wapp.tasks["recorded_sleep"].enqueue(2.0)
    wait_for(lambda: job.status() == "running", message="the job to start on the first worker")
    zombie.signal(signal.SIGSTOP)
    survivor = start_worker(*FAST)
    survivor_runner = survivor.runner_id()
    # Declared dead and re-run elsewhere while the first worker is frozen.
    wait_for(lambda: job.info()["runner_id"] == survivor_runner, timeout=30,
             message="the job to be reclaimed by the second worker")
    zombie.signal(signal.SIGCONT)
    assert job.result(timeout=30) == "slept 2.0"
    # The zombie's attempt also ran to its end (threads cannot be stopped)...
    wait_for(lambda: admin.execute(
        f"SELECT count(*) FROM \"{schema}\".executions WHERE runner_id = %s AND note = 'end'",
        (zombie_runner,)).fetchone()[0] == 1, timeout=20, message="the zombie's attempt to end")
    # ...but its outcome was dropped: abandoned once it knew its lease was gone (or, had it
    # finished first, fenced out by the write), and it never claimed again as its old self.
    wait_for(lambda: f"runner {zombie_runner} lost its lease" in zombie.log(), timeout=20,
             message="the zombie to notice it lost its lease")
    history = events(admin, schema, job.id)
    assert [(e[1], e[2], e[3]) for e in history if e[0] == "running"] == [
        ("queued", 1, zombie_runner), ("succeeded", 2, survivor_runner)]
    claims_by_zombie = [e for e in history if e[1] == "running" and e[3] == zombie_runner]
    assert len(claims_by_zombie) == 1
    assert job.info()["attempts"] == 2
    # The zombie noticed and came back under a new runner id.
    wait_for(lambda: admin.execute(
        f"SELECT count(*) FROM \"{schema}\".runners WHERE pid = %s AND state = 'running' AND id <> %s",
        (zombie.pid, zombie_runner)).fetchone()[0] == 1, timeout=20, message="the zombie to re-register")
    assert runner_state(admin, schema, zombie_runner)[0] == "dead"
    # And it still works under its new identity.
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0
    assert wapp.tasks["add"].enqueue(2, 2).result(timeout=20) == 4


def test_concurrent_reapers_never_both_reclaim_a_job(app, admin, database_dsn) -> None:
    schema = app.settings.schema
    q = app.queries
    task = app.task(name="t")(lambda: None)
    jobs = app.enqueue_many(task, [()] * 50)
    dead = admin.execute(q.runner_register, {"host": "h", "pid": 1, "queues": None, "concurrency": 50,
                                             "version": "test",
                                             "heartbeat_interval": 1, "dead_after": 10}).fetchone()[0]
    admin.execute(q.job_claim, {"runner_id": dead, "limit": 50, "queues": None, "can_wait": False})
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '1 hour', dead_after = 0.001 "
                  "WHERE id = %s", (dead,))
    barrier = threading.Barrier(6)
    results: list[object] = []

    def one() -> None:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            barrier.wait()
            try:
                results.append(reap(conn, q, max_crashes=3))
            except Exception as exc:  # asserted below
                results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.requeued for r in results) == len(jobs)
    assert [r.dead_runners for r in results if r.dead_runners] == [(dead,)]
    counts = admin.execute(
        f"""SELECT count(*) FROM "{schema}".job_events WHERE reason LIKE 'runner %% declared dead%%'
            GROUP BY job_id""").fetchall()
    assert counts == [(1,)] * len(jobs)
    assert admin.execute(f'SELECT DISTINCT status, crashes FROM "{schema}".jobs').fetchall() == [("queued", 1)]


def test_the_reaper_gives_a_restarted_server_a_grace_period(app, admin) -> None:
    """Heartbeats older than the server's start do not count against a runner: after a
    restart every runner gets a full lease to heartbeat again."""
    schema = app.settings.schema
    q = app.queries
    runner = admin.execute(q.runner_register, {"host": "h", "pid": 1, "queues": None, "concurrency": 1,
                                               "version": "test", "heartbeat_interval": 1,
                                               "dead_after": 10}).fetchone()[0]
    up = float(admin.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()[0])
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = pg_postmaster_start_time() - interval '1 hour', "
                  "dead_after = %s WHERE id = %s", (up + 3600, runner))
    assert reap(admin, q, max_crashes=3).dead_runners == ()
    admin.execute(f'UPDATE "{schema}".runners SET dead_after = %s WHERE id = %s', (max(up - 1, 2), runner))
    assert reap(admin, q, max_crashes=3).dead_runners == (runner,)


def test_the_reaper_uses_each_runners_own_lease(app, admin) -> None:
    schema = app.settings.schema
    q = app.queries
    slow = admin.execute(q.runner_register, {"host": "h", "pid": 1, "queues": None, "concurrency": 1,
                                             "version": "test", "heartbeat_interval": 20,
                                             "dead_after": 60}).fetchone()[0]
    fast = admin.execute(q.runner_register, {"host": "h", "pid": 2, "queues": None, "concurrency": 1,
                                             "version": "test", "heartbeat_interval": 0.5,
                                             "dead_after": 2}).fetchone()[0]
    # The server must have been up longer than the fast lease (a younger server grants a full one).
    wait_for(lambda: admin.execute("SELECT now() - pg_postmaster_start_time() > interval '3 s'").fetchone()[0],
             message="the server to be up for 3 s")
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '5 seconds'")
    assert reap(admin, q, max_crashes=3).dead_runners == (fast,)
    assert admin.execute(f'SELECT state FROM "{schema}".runners WHERE id = %s', (slow,)).fetchone() == ("running",)


def test_a_poison_pill_fails_after_the_crash_budget_and_workers_survive(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    supervisor = start_worker(*FAST, "--processes", "2", "--concurrency", "1")
    job = wapp.tasks["kill_self"].enqueue()
    with pytest.raises(pgqueue.JobFailed, match="runner died 3 times running this job"):
        job.result(timeout=90)
    row = job.info()
    assert (row["status"], row["crashes"], row["failures"]) == ("failed", 3, 0)
    assert row["error"]["type"] == "RunnerDied"
    history = events(admin, schema, job.id)
    assert history[-1][4].startswith("runner died 3 times running this job")
    assert sum(1 for e in history if "declared dead" in e[4]) == 2
    # The supervisor restarted the killed processes: work goes on.
    assert supervisor.proc.poll() is None
    assert wapp.tasks["add"].enqueue(20, 22).result(timeout=30) == 42
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0, supervisor.log()


def test_recovery_with_default_settings_is_under_15_seconds(wapp, start_worker, admin) -> None:
    first = start_worker()
    first.runner_id()
    job = wapp.tasks["sleep"].enqueue(1.0)
    wait_for(lambda: job.status() == "running", message="the job to start")
    second = start_worker()
    second.runner_id()
    killed = time.monotonic()
    first.signal(signal.SIGKILL)
    job.result(timeout=30)
    elapsed = time.monotonic() - killed
    # heartbeat 2 s, dead after 10 s, reaper tick 1 s, plus the job's own second.
    assert elapsed < 15, f"kill to complete took {elapsed:.1f} s with default settings"


def test_a_runner_that_cannot_heartbeat_loses_its_lease(app, admin) -> None:
    lost: list[tuple[int, str]] = []
    heartbeat = Heartbeat(
        connection=ServiceConnection("postgresql://nobody@127.0.0.1:1/none", "heartbeat", 2),
        queries=app.queries, interval=0.5, dead_after=2.0, outage=OutageLog(),
        on_lease_lost=lambda runner, reason: lost.append((runner, reason)),
        on_cancel_requested=lambda ids: None,
    )
    heartbeat.follow(7)
    assert heartbeat.run_once() is True  # cut off, but the lease still runs
    heartbeat._last_ok -= 3.0  # as if 3 s had passed without a successful beat
    assert heartbeat.run_once() is False
    assert lost and lost[0][0] == 7 and lost[0][1].startswith("no successful heartbeat for ")


def test_an_expired_lease_is_renewed_when_the_row_is_still_alive(app, admin, database_dsn) -> None:
    q = app.queries
    runner = admin.execute(q.runner_register, {"host": "h", "pid": 1, "queues": None, "concurrency": 1,
                                               "version": "test", "heartbeat_interval": 1,
                                               "dead_after": 10}).fetchone()[0]
    seen: list[tuple] = []
    heartbeat = Heartbeat(
        connection=ServiceConnection(database_dsn, "heartbeat", 2), queries=q, interval=0.5,
        dead_after=2.0, outage=OutageLog(), on_lease_lost=lambda r, why: seen.append(("lost", r)),
        on_cancel_requested=lambda ids: None,
        on_lease_expired=lambda r, why: seen.append(("expired", r)),
        on_lease_renewed=lambda r, silent: seen.append(("renewed", r)),
    )
    heartbeat.follow(runner)
    heartbeat._last_ok -= 3.0  # as if the process had been paused for 3 s
    assert heartbeat.expired()
    assert heartbeat.run_once() is True
    assert seen == [("expired", runner), ("renewed", runner)]
    assert not heartbeat.expired()


def test_a_runner_declared_dead_hears_it_from_its_heartbeat(app, admin, database_dsn) -> None:
    q = app.queries
    runner = admin.execute(q.runner_register, {"host": "h", "pid": 1, "queues": None, "concurrency": 1,
                                               "version": "test",
                                             "heartbeat_interval": 1, "dead_after": 10}).fetchone()[0]
    lost: list[tuple[int, str]] = []
    heartbeat = Heartbeat(
        connection=ServiceConnection(database_dsn, "heartbeat", 2), queries=q, interval=0.5,
        dead_after=2.0, outage=OutageLog(), on_lease_lost=lambda r, why: lost.append((r, why)),
        on_cancel_requested=lambda ids: None,
    )
    heartbeat.follow(runner)
    assert heartbeat.run_once() is True
    reap(admin, q, max_crashes=3, runner_id=runner, reason="test")
    assert heartbeat.run_once() is False
    assert lost == [(runner, "declared dead by the reaper")]


def test_attempts_a_runner_does_not_know_are_handed_back(wapp, start_worker, admin) -> None:
    """A claim whose reply never reached the runner leaves a job running under its id; the
    heartbeat's view of the database reveals it and the runner hands it back."""
    schema = wapp.settings.schema
    worker = start_worker(*FAST, "--queues", "default")
    runner = worker.runner_id()
    job = wapp.tasks["add"].options(queue="elsewhere").enqueue(1, 2)
    # Claimed in the worker's name by someone else: the worker never heard of it.
    admin.execute(wapp.queries.job_claim, {"runner_id": runner, "limit": 1, "queues": ["elsewhere"],
                                           "can_wait": False})
    assert job.status() == "running"
    wait_for(lambda: job.status() == "queued", timeout=20, message="the unknown attempt to be handed back")
    last = events(admin, schema, job.id)[-1]
    assert last[:4] == ("running", "queued", 1, runner)
    assert last[4] == f"handed back: runner {runner} did not hold this attempt any more"
    assert job.info()["crashes"] == 0 and job.info()["failures"] == 0


def test_an_idle_wait_with_every_slot_busy_does_not_spin(wapp, start_worker) -> None:
    worker = start_worker("--concurrency", "1")
    worker.runner_id()
    job = wapp.tasks["sleep"].enqueue(4)
    wait_for(lambda: job.status() == "running", message="the job to start")

    def cpu_seconds() -> float:
        fields = open(f"/proc/{worker.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, started = cpu_seconds(), time.monotonic()
    wait_for(lambda: time.monotonic() - started >= 2.0, message="two seconds")
    used = cpu_seconds() - before
    assert used < 0.5, f"the worker used {used:.2f} s of CPU in 2 s while waiting on a busy slot"


def test_stopping_while_the_database_is_down_ends_in_bounded_time(private_server, start_worker) -> None:
    server, dsn, app = private_server
    worker = start_worker(*FAST, "--shutdown-timeout", "1", dsn=dsn)
    worker.runner_id()
    job = app.tasks["sleep"].enqueue(60)
    wait_for(lambda: job.status() == "running", message="the job to start")
    server.stop()
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=40)
    assert code == 1, worker.log()
    assert "could not mark runner" in worker.log()


def test_a_long_outage_during_a_restart_does_not_rerun_the_work(private_server, start_worker) -> None:
    """The lease expires while the server is down; back up, the runner finds its row alive
    (nobody took its jobs): it resumes, and the job runs once, with no crash counted."""
    server, dsn, app = private_server
    worker = start_worker(*FAST, dsn=dsn)
    runner = worker.runner_id()
    job = app.tasks["recorded_sleep"].enqueue(5.0)
    wait_for(lambda: job.status() == "running", message="the job to start")
    server.stop()
    wait_for(lambda: "its lease has expired" in worker.log(), timeout=20, message="the lease to expire")
    server.ensure_running()
    assert job.result(timeout=40) == "slept 5.0"
    row = job.info()
    assert (row["attempts"], row["crashes"]) == (1, 0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        runs = conn.execute(f'SELECT runner_id, note FROM "{app.settings.schema}".executions ORDER BY at').fetchall()
    assert runs == [(runner, "start"), (runner, "end")]
    assert "still alive, resuming" in worker.log()
