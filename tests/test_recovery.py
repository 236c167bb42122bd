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
from pgqueue.worker.control import Control
from pgqueue.worker.lease import EXPIRED, LOST, VALID, Lease
from sqlrunner import claim, maintain, register

FAST = ("--heartbeat-interval", "0.5", "--runner-dead-after", "2")


def runner_state(admin: psycopg.Connection, schema: str, runner_id: int) -> tuple:
    return admin.execute(f'SELECT state, reason FROM "{schema}".runners WHERE id = %s', (runner_id,)).fetchone()


def test_sigkill_mid_job_another_worker_finishes(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    first = start_worker(*FAST, "--concurrency", "3")
    dead_runner = first.runner_id()
    jobs = [wapp.tasks["recorded_sleep"].enqueue(4.0) for _ in range(3)]
    wait_for(lambda: all(j.status() == "running" for j in jobs), message="all jobs running on worker 1")
    second = start_worker(*FAST)
    survivor = second.runner_id()
    assert all(j.status() == "running" for j in jobs), "the jobs must still run when worker 1 is killed"
    first.signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    for job in jobs:
        assert job.result(timeout=30) == "slept 4.0"
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
        # Its sessions ended with the process: declared dead at once, not after the lease.
        assert history[2][4].startswith(f"runner {dead_runner} declared dead: process gone")
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
    task = app.task(name="t")(lambda: None)
    jobs = app.enqueue_many(task, [()] * 50)
    dead = register(app, admin, concurrency=50)
    claim(app, admin, dead, limit=50)
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '1 hour', dead_after = 0.5 "
                  "WHERE id = %s", (dead,))
    barrier = threading.Barrier(6)
    results: list[object] = []

    def one() -> None:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            barrier.wait()
            try:
                results.append(maintain(app, conn))
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


def test_a_pass_after_a_gap_gives_every_runner_a_fresh_lease(app, admin) -> None:
    """Nothing could heartbeat while no pass could run (a lock, a failover, a paused VM): the
    first pass after the gap counts every heartbeat as no older than itself."""
    schema = app.settings.schema
    runner = register(app, admin, dead_after=10)
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
                  (runner,))
    admin.execute(f"UPDATE \"{schema}\".maintenance SET last_pass_at = now() - interval '1 minute'")
    assert maintain(app, admin, steady=False).dead_runners == ()
    resumed = admin.execute(f'SELECT now() - resumed_at < interval \'5 s\' FROM "{schema}".maintenance').fetchone()
    assert resumed == (True,)
    assert maintain(app, admin, steady=False).dead_runners == ()  # still within the new lease
    admin.execute(f"UPDATE \"{schema}\".maintenance SET resumed_at = now() - interval '11 s'")
    assert maintain(app, admin, steady=False).dead_runners == (runner,)


def test_after_a_crash_restart_or_failover_every_runner_gets_a_lease(app, admin) -> None:
    """The unlogged server_epoch row is gone after a crash restart and on a promoted standby:
    the pass that finds it gone grants every runner a lease from then, and does not trust
    liveness locks (which vanished with the old server) before they had a lease to come back."""
    schema = app.settings.schema
    runner = register(app, admin, dead_after=10, liveness=True)  # its lock is on `admin`
    other = register(app, admin, dead_after=10)
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '1 hour'")
    admin.execute(f'DELETE FROM "{schema}".server_epoch')  # what a crash restart leaves
    admin.execute(f"SELECT pg_advisory_unlock_all()")  # ...and the locks are gone
    assert maintain(app, admin).dead_runners == ()
    admin.execute(f"UPDATE \"{schema}\".server_epoch SET noticed_at = now() - interval '11 s'")
    result = maintain(app, admin)
    assert result.dead_runners == (runner, other)
    assert result.reasons[0].startswith("process gone") and result.reasons[1].startswith("no heartbeat")


def test_the_reaper_uses_each_runners_own_lease(app, admin) -> None:
    schema = app.settings.schema
    slow = register(app, admin, heartbeat_interval=20, dead_after=60)
    fast = register(app, admin, heartbeat_interval=0.5, dead_after=2)
    # The server must have been up longer than the fast lease (a younger server grants a full one).
    wait_for(lambda: admin.execute("SELECT now() - pg_postmaster_start_time() > interval '3 s'").fetchone()[0],
             message="the server to be up for 3 s")
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '5 seconds'")
    assert maintain(app, admin).dead_runners == (fast,)
    assert admin.execute(f'SELECT state FROM "{schema}".runners WHERE id = %s', (slow,)).fetchone() == ("running",)


def test_a_process_whose_sessions_ended_is_declared_dead_at_once(app, admin, database_dsn) -> None:
    """The liveness lock: held by the runner's sessions, gone the moment they end."""
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    job = task.enqueue()
    with psycopg.connect(database_dsn, autocommit=True) as session:
        runner = register(app, session, liveness=True)
        claim(app, session, runner)
        admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '1 s'")
        assert maintain(app, admin).dead_runners == ()  # its session still holds the lock
    result = maintain(app, admin)  # the session ended: the process is gone
    assert result.dead_runners == (runner,) and result.requeued == 1
    assert result.reasons[0].startswith("process gone")
    last = events(admin, schema, job.id)[-1]
    assert last[4].startswith(f"runner {runner} declared dead: process gone")
    row = admin.execute(f'SELECT lost_reason FROM "{schema}".runners WHERE id = %s', (runner,)).fetchone()
    assert row == ("process gone",)


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_lease_expires_renews_and_is_lost() -> None:
    clock = FakeClock()
    lease = Lease(2.0, clock=clock)
    changes: list[tuple[str, str]] = []
    lease.on_change(lambda c: changes.append((c.state, c.reason)))
    assert lease.runner_id is None and not lease.may_claim()
    lease.registered(7)
    assert lease.may_claim() and lease.runner_id == 7
    sent = lease.beat_sent()
    clock.now += 1.0
    lease.beat_ok(7, sent)
    clock.now += 2.5  # 3.5 s since the beat was sent
    assert not lease.may_claim() and lease.state == EXPIRED and lease.runner_id == 7
    assert changes[-1][0] == EXPIRED and changes[-1][1].startswith("no successful heartbeat for 3.5 s")
    lease.beat_ok(7, lease.beat_sent())  # the row was still alive: nobody took our jobs
    assert lease.may_claim() and changes[-1] == (VALID, "renewed")
    lease.beat_ok(6, lease.beat_sent())  # an earlier incarnation's beat changes nothing
    lease.beat_found_dead(7)
    assert lease.state == LOST and lease.lost_incarnation == (7, "declared dead by the reaper")
    assert lease.runner_id is None and not lease.may_claim()
    lease.lost(7, "again")  # no second loss
    lease.registered(8)
    assert lease.may_claim() and lease.lost_incarnation is None


def control_for(app: pgqueue.App, dsn: str, lease: Lease) -> Control:
    return Control(
        connection=ServiceConnection(dsn, "control", 2), queries=app.queries, lease=lease,
        interval=0.5, listen=False, queues=None, outage=OutageLog(), use_liveness=lambda: True,
        on_work=lambda: None, on_cancel_requested=lambda ids: None, known_attempts=lambda: set(),
        claims_done=lambda: 0, on_maintenance_hint=lambda rank, age: None,
        release=lambda runner, keys: None)


def test_a_runner_that_cannot_heartbeat_has_its_lease_expire(app) -> None:
    clock = FakeClock()
    lease = Lease(2.0, clock=clock)
    lease.registered(7)
    control = control_for(app, "postgresql://nobody@127.0.0.1:1/none", lease)
    with pytest.raises(Exception):
        control.run_once()  # cut off: the beat cannot be sent
    assert lease.state == VALID  # but the lease still runs
    clock.now += 3.0
    lease.check()
    assert lease.state == EXPIRED


def test_an_expired_lease_is_renewed_when_the_row_is_still_alive(app, admin, database_dsn) -> None:
    runner = register(app, admin)
    clock = FakeClock()
    lease = Lease(2.0, clock=clock)
    seen: list[str] = []
    lease.on_change(lambda c: seen.append(c.state if c.reason != "renewed" else "renewed"))
    lease.registered(runner)
    clock.now += 3.0  # as if the process had been paused for 3 s
    control = control_for(app, database_dsn, lease)
    assert control.run_once() is True
    assert seen == [VALID, EXPIRED, "renewed"]
    assert lease.may_claim()
    control.connection.discard()


def test_a_runner_declared_dead_hears_it_from_its_heartbeat(app, admin, database_dsn) -> None:
    schema = app.settings.schema
    runner = register(app, admin)
    lease = Lease(2.0)
    lease.registered(runner)
    control = control_for(app, database_dsn, lease)
    assert control.run_once() is True
    admin.execute(f"UPDATE \"{schema}\".runners SET state = 'dead' WHERE id = %s", (runner,))
    assert control.run_once() is False
    assert lease.lost_incarnation == (runner, "declared dead by the reaper")
    control.connection.discard()


def test_heartbeats_go_on_while_the_jobs_table_is_locked(app, admin, database_dsn) -> None:
    """The beat touches only the runners table: LOCK TABLE jobs (VACUUM FULL, REINDEX, an ALTER
    queued behind a reader) does not stop it; reading the runner's attempts gives up quickly."""
    schema = app.settings.schema
    runner = register(app, admin)
    lease = Lease(2.0)
    lease.registered(runner)
    control = control_for(app, database_dsn, lease)
    with psycopg.connect(database_dsn) as locker:
        locker.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')
        before = admin.execute(f'SELECT heartbeat_at FROM "{schema}".runners WHERE id = %s', (runner,)).fetchone()[0]
        started = time.monotonic()
        assert control.run_once() is True
        assert time.monotonic() - started < 2.0
        after = admin.execute(f'SELECT heartbeat_at FROM "{schema}".runners WHERE id = %s', (runner,)).fetchone()[0]
        assert after > before
        locker.rollback()
    control.connection.discard()


def test_attempts_a_runner_does_not_know_are_handed_back(wapp, start_worker, admin) -> None:
    """A claim whose reply never reached the runner leaves a job running under its id; the
    heartbeat's view of the database reveals it and the runner hands it back."""
    schema = wapp.settings.schema
    worker = start_worker(*FAST, "--queues", "default")
    runner = worker.runner_id()
    job = wapp.tasks["add"].options(queue="elsewhere").enqueue(1, 2)
    # Claimed in the worker's name by someone else: the worker never heard of it.
    claim(wapp, admin, runner, queues=["elsewhere"])
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
