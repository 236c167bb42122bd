"""Flow control: unique-key scopes and debounce, per-key serial execution (locks), queue pause,
concurrency and rate limits. Race tests run real worker processes; every check reads the
history (job_events) or the ledger the tasks write (executions)."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections import defaultdict

import psycopg
import pytest

import pgqueue
from helpers import wait_for


def statuses(admin: psycopg.Connection, schema: str, where: str = "TRUE", params=()) -> dict[int, str]:
    return dict(admin.execute(f'SELECT id, status FROM "{schema}".jobs WHERE {where} ORDER BY id',
                              params).fetchall())


def kinds(admin: psycopg.Connection, schema: str, job_id: int) -> list[str]:
    return [r[0] for r in admin.execute(
        f'SELECT kind FROM "{schema}".job_events WHERE job_id = %s ORDER BY id', (job_id,)).fetchall()]


def executions(admin: psycopg.Connection, schema: str) -> list[tuple]:
    return admin.execute(f'SELECT job_id, attempt, note, at FROM "{schema}".executions ORDER BY at').fetchall()


def max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


# ------------------------------------------------------------------ unique scopes

@pytest.mark.parametrize("scope", ["active", "queued", "period"])
def test_fifty_concurrent_enqueues_with_one_key_make_one_job(app, admin, database_dsn, scope) -> None:
    task = app.task(name="once")(lambda n: n)
    options = {"key": "customer:7", "key_scope": scope}
    if scope == "period":
        options["key_period"] = dt.timedelta(hours=1)
    barrier = threading.Barrier(50)
    results: list[tuple[int, bool]] = []
    failures: list[BaseException] = []

    def enqueue(n: int) -> None:
        try:
            with psycopg.connect(database_dsn) as conn:  # each in its own transaction
                barrier.wait()
                job = task.options(conn=conn, **options).enqueue(n)
                conn.commit()
                results.append((job.id, job.created))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    schema = app.settings.schema
    assert admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 1


def test_a_conflict_never_aborts_the_callers_transaction(app, admin, database_dsn) -> None:
    task = app.task(name="keyed")(lambda n: n)
    first = task.options(key="k").enqueue(1)
    with psycopg.connect(database_dsn) as conn:
        again = task.options(conn=conn, key="k").enqueue(2)
        skipped = task.options(conn=conn, key="k", on_conflict="skip").enqueue(3)
        other = task.options(conn=conn).enqueue(4)  # the transaction still works
        conn.commit()
    assert (again.id, again.created) == (first.id, False)
    assert skipped is None
    assert other.created and other.info()["status"] == "queued"


def test_replace_takes_the_new_arguments_while_queued_and_not_once_running(app, admin, wapp) -> None:
    task = wapp.tasks["echo"]
    first = task.options(key="report", on_conflict="replace", delay=60).enqueue("v1")
    second = task.options(key="report", on_conflict="replace").enqueue("v2")
    assert second.id == first.id and not second.created and second.replaced
    info = first.info()
    assert info["args"] == ["v2"]
    assert info["run_at"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=50)  # kept
    third = task.options(key="report", on_conflict="replace", delay=0).enqueue("v3")
    assert third.replaced and third.info()["run_at"] <= dt.datetime.now(dt.timezone.utc)
    assert kinds(admin, wapp.settings.schema, first.id).count("replaced") == 2
    # Once it runs, replace returns the running job unchanged.
    admin.execute(f'''INSERT INTO "{wapp.settings.schema}".runners (host, pid, concurrency, heartbeat_interval,
                                  dead_after, version) VALUES ('h', 1, 1, 2, 10, 'test')''')
    admin.execute(f'''UPDATE "{wapp.settings.schema}".jobs SET status = 'running', attempts = 1,
                      runner_id = (SELECT max(id) FROM "{wapp.settings.schema}".runners) WHERE id = %s''',
                  (first.id,))
    fourth = task.options(key="report", on_conflict="replace").enqueue("v4")
    assert fourth.id == first.id and not fourth.replaced
    assert first.info()["args"] == ["v3"]


def test_queued_scope_lets_one_wait_while_one_runs(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["cancellable"]
    running = task.options(key="sync:1", key_scope="queued").enqueue(30)
    start_worker()
    wait_for(lambda: running.status() == "running", message="the first job to run")
    waiting = task.options(key="sync:1", key_scope="queued").enqueue(0)
    assert waiting.created and waiting.id != running.id
    again = task.options(key="sync:1", key_scope="queued").enqueue(0)
    assert (again.id, again.created) == (waiting.id, False)
    # The active scope (the default) would have refused the second job.
    active = task.options(key="sync:1").enqueue(0)
    assert active.created  # a different scope: keys of different scopes never meet
    running.cancel()
    assert running.wait(20) == "cancelled"
    assert waiting.wait(20) == "succeeded"
    assert statuses(admin, schema)[waiting.id] == "succeeded"


def test_period_scope_survives_the_job_finishing_and_pruning(wapp, start_worker, admin) -> None:
    task = wapp.tasks["noop"]
    hourly = task.options(key="digest", key_scope="period", key_period=dt.timedelta(hours=1))
    job = hourly.enqueue()
    start_worker()
    assert job.wait(20) == "succeeded"
    again = hourly.enqueue()
    assert (again.id, again.created) == (job.id, False)
    from pgqueue import admin as operator

    operator.prune(wapp, older_than=0.0)
    assert job.status() == "succeeded"  # kept: its key holds until the hour ends
    assert hourly.enqueue().id == job.id
    other_key = task.options(key="digest:other", key_scope="period", key_period=3600).enqueue()
    assert other_key.created


def test_bad_flow_control_options_are_refused_with_the_reason(app) -> None:
    task = app.task(name="t")(lambda: None)
    cases = [
        (dict(key_scope="queued"), "needs a key"),
        (dict(key="k", key_scope="period"), "needs key_period"),
        (dict(key="k", key_period=60), "goes with key_scope='period'"),
        (dict(key="k", key_scope="period", key_period=60, on_conflict="replace"), "does not go with"),
        (dict(debounce=5), "needs a key"),
        (dict(key="k", debounce=5, key_scope="active"), "leave key_scope and on_conflict out"),
        (dict(key="k", debounce=5, delay=1), "sets the run time itself"),
        (dict(key="k", debounce=5, debounce_max=1), "at least debounce"),
        (dict(key="k", debounce_max=5), "goes with debounce"),
    ]
    for options, message in cases:
        with pytest.raises(pgqueue.ConfigurationError, match=message):
            task.options(**options).enqueue()
    for options, message in [(dict(key_scope="forever"), "key_scope must be one of"),
                             (dict(on_conflict="ignore"), "on_conflict must be one of"),
                             (dict(lock=""), "lock must be"), (dict(lock_limit=0), "lock_limit must be"),
                             (dict(debounce=-1), "debounce must be")]:
        with pytest.raises(pgqueue.ConfigurationError, match=message):
            task.options(**options)
    with pytest.raises(pgqueue.ConfigurationError, match="one by one"):
        task.options(lock="x").enqueue_many([(), ()])
    with pytest.raises(pgqueue.ConfigurationError, match="lock_limit must be"):
        app.task(name="t2", lock="x", lock_limit=0)(lambda: None)
    bad_lock = app.task(name="t3", lock=lambda n: n)(lambda n: n)
    with pytest.raises(pgqueue.ConfigurationError, match="lock function of task 't3' returned 5"):
        bad_lock.enqueue(5)


def test_debounce_collapses_ten_enqueues_a_second_apart_into_one_run(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["keyed_work"]
    start_worker()
    ids = set()
    for n in range(10):
        job = task.options(key="reindex", debounce=dt.timedelta(seconds=2.5)).enqueue(f"run {n}")
        ids.add(job.id)
        assert job.status() == "queued", f"enqueue {n}: the debounced job ran early"
        if n < 9:
            time.sleep(1.0)  # the scenario itself: enqueues a second apart
    assert len(ids) == 1
    (job_id,) = ids
    assert wapp.job(job_id).wait(20) == "succeeded"
    assert wapp.job(job_id).info()["args"] == ["run 9"]  # the latest arguments
    runs = [e for e in executions(admin, schema) if e[2].startswith("start")]
    assert len(runs) == 1


def test_debounce_max_bounds_the_wait_since_the_first_enqueue(wapp, start_worker, admin) -> None:
    task = wapp.tasks["keyed_work"]
    start_worker()
    first = task.options(key="k", debounce=1.0, debounce_max=1.5).enqueue("a")
    enqueued = first.info()["enqueued_at"]
    seen = {first.id}
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and len(seen) < 2:
        seen.add(task.options(key="k", debounce=1.0, debounce_max=1.5).enqueue("b").id)
        time.sleep(0.2)
    assert len(seen) == 2, "enqueues every 0.2 s kept pushing the job back past debounce_max"
    started = first.info()["started_at"]
    assert first.wait(10) == "succeeded"
    assert dt.timedelta(seconds=1.4) <= started - enqueued <= dt.timedelta(seconds=4)


# ------------------------------------------------------- re-queue meets a queued sibling

def test_a_retry_that_meets_a_queued_sibling_is_superseded(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["fail_once"]
    first = task.options(key="sync:9", key_scope="queued").enqueue("first", 1.0)
    start_worker()
    wait_for(lambda: first.status() == "running", message="the first attempt to run")
    # Queued, not yet due: it cannot start before the first attempt's end.
    sibling = task.options(key="sync:9", key_scope="queued", delay=3).enqueue("sibling", 0.0)
    assert sibling.created
    # The first attempt fails and would go back to the queue: its sibling is queued already.
    assert first.wait(20) == "cancelled"
    info = first.info()
    assert info["status"] == "cancelled"
    assert admin.execute(f'SELECT superseded_by FROM "{schema}".jobs WHERE id = %s',
                         (first.id,)).fetchone()[0] == sibling.id
    reason = admin.execute(f"""SELECT reason FROM "{schema}".job_events WHERE job_id = %s AND kind = 'superseded'""",
                           (first.id,)).fetchone()[0]
    assert f"superseded by job {sibling.id}" in reason
    assert sibling.wait(20) == "succeeded"
    assert admin.execute(f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'running'""").fetchone()[0] == 0


def test_a_crash_requeue_that_meets_a_queued_sibling_is_superseded(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["cancellable"]
    victim = start_worker()
    first = task.options(key="sync:3", key_scope="queued").enqueue(60)
    wait_for(lambda: first.status() == "running", message="the first job to run")
    sibling = task.options(key="sync:3", key_scope="queued", delay=3).enqueue(0)
    victim.signal(signal.SIGKILL)
    victim.wait()
    # Nothing claims until a new worker comes; the reaper of the new worker re-queues the
    # dead one's job, which meets its sibling.
    start_worker()
    assert first.wait(30) == "cancelled"
    assert kinds(admin, schema, first.id)[-1] == "superseded"
    assert sibling.wait(20) == "succeeded"
    assert admin.execute(f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'running'""").fetchone()[0] == 0


# ------------------------------------------------------------------------ locks

def test_jobs_of_one_lock_key_never_overlap_and_keep_their_order(wapp, start_worker, admin) -> None:
    """1,000 jobs over 10 lock keys, 8 runners claiming in batches."""
    schema = wapp.settings.schema
    task = wapp.tasks["locked_work"]
    enqueued = defaultdict(list)
    with wapp.database.connection() as conn:
        with conn.transaction():
            for n in range(1000):
                key = f"k{n % 10}"
                enqueued[key].append(task.options(conn=conn).enqueue(key).id)
    blocked = admin.execute(f'SELECT count(*) FROM "{schema}".jobs WHERE blocked').fetchone()[0]
    assert blocked == 990  # one holder per key, the others wait
    for _ in range(8):
        start_worker("--concurrency", "8")
    wait_for(lambda: admin.execute(f"""SELECT count(*) FROM "{schema}".jobs WHERE status = 'succeeded'""").fetchone()[0] == 1000,
             timeout=240, interval=0.2, message="1,000 locked jobs to finish")
    # From the history: a job's claim is written by a statement that saw its predecessor's end
    # committed, so its event comes later in the events' sequence. (Event ids, not times: an
    # event's time is its transaction's start, and a claim's transaction may start a moment
    # before the end it then sees committed.)
    rows = admin.execute(f"""
        SELECT j.lock_key, j.id, c.id, f.id, c.runner_id
        FROM "{schema}".jobs AS j
        JOIN "{schema}".job_events AS c ON c.job_id = j.id AND c.kind = 'claimed'
        JOIN "{schema}".job_events AS f ON f.job_id = j.id AND f.kind = 'succeeded'
        ORDER BY j.lock_key, c.id""").fetchall()
    by_key = defaultdict(list)
    for key, job_id, claimed, finished, runner in rows:
        by_key[key].append((job_id, claimed, finished, runner))
    runners = set()
    for key, runs in by_key.items():
        assert [r[0] for r in runs] == enqueued[key.removeprefix("lock:")], f"{key}: not in enqueue order"
        for (_, _, finished, _), (job_id, claimed, _, _) in zip(runs, runs[1:]):
            assert claimed >= finished, f"{key}: job {job_id} was claimed before its predecessor finished"
        runners |= {r[3] for r in runs}
    assert len(runners) >= 4  # the work really was spread over the runners
    # The ledger the tasks wrote agrees: no two executions of one key overlap.
    spans = defaultdict(dict)
    for job_id, _attempt, note, at in executions(admin, schema):
        what, key = note.split()
        spans[key].setdefault(job_id, {})[what] = at
    for key, jobs in spans.items():
        assert max_overlap([(s["start"], s["end"]) for s in jobs.values()]) == 1, key


def test_lock_limit_allows_that_many_at_once(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["keyed_work"]
    jobs = [task.options(lock="api", lock_limit=3).enqueue("api", 0.3) for _ in range(12)]
    for _ in range(3):
        start_worker("--concurrency", "4")
    for job in jobs:
        assert job.wait(60) == "succeeded"
    spans = defaultdict(dict)
    for job_id, _attempt, note, at in executions(admin, schema):
        spans[job_id][note.split()[0]] = at
    assert max_overlap([(s["start"], s["end"]) for s in spans.values()]) == 3


def test_a_job_for_later_never_holds_the_slot_against_runnable_ones(wapp, start_worker, admin) -> None:
    task = wapp.tasks["keyed_work"]
    later = task.options(lock="one", delay=3600).enqueue("later")
    now = task.options(lock="one").enqueue("now")
    assert now.info()["blocked"] is False
    start_worker()
    assert now.wait(20) == "succeeded"
    assert later.status() == "queued"


def test_a_retry_with_backoff_gives_its_slot_to_the_next_job(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["fail_once"]
    first = task.options(lock="seq").enqueue("first", 0.0)
    second = task.options(lock="seq").enqueue("second", 0.0)
    start_worker()
    assert first.wait(20) == "succeeded" and second.wait(20) == "succeeded"
    # The first failed, waited its backoff without the slot (the second ran meanwhile), and
    # took the slot back when its time came.
    attempts = [(r[0], r[2]) for r in executions(admin, schema)]
    assert attempts[0] == (first.id, "attempt 1")
    assert set(attempts) == {(first.id, "attempt 1"), (first.id, "attempt 2"),
                             (second.id, "attempt 1"), (second.id, "attempt 2")}


def test_a_sigkilled_holder_frees_its_lock_within_the_lease(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["locked_work"]
    holder = task.enqueue("acct", 0.0, 60.0)  # its first attempt would hold the lock a minute
    waiter = task.enqueue("acct", 0.0)
    victim = start_worker()
    wait_for(lambda: holder.status() == "running", message="the holder to run")
    assert waiter.info()["blocked"]
    start_worker()
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    assert holder.wait(30) == "succeeded"  # run again, its second attempt is quick
    assert waiter.wait(30) == "succeeded"
    assert time.monotonic() - killed < wapp.settings.runner_dead_after + 5
    assert kinds(admin, schema, holder.id).count("crashed") == 1


def test_cancelling_the_holder_of_a_lock_frees_it(app, admin) -> None:
    task = app.task(name="locked", lock="L")(lambda: None)
    holder, waiter = task.enqueue(), task.enqueue()
    assert waiter.info()["blocked"]
    assert holder.cancel() == "cancelled"
    info = waiter.info()
    assert not info["blocked"] and info["status"] == "queued"
    assert "unblocked" in kinds(admin, app.settings.schema, waiter.id)


# ------------------------------------------------------------------- queue controls

def test_a_concurrency_limit_of_five_with_eight_runners_is_never_exceeded(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    wapp.queues.limit("capped", concurrency=5)
    task = wapp.tasks["keyed_work"]
    workers = [start_worker("--concurrency", "4") for _ in range(8)]
    for worker in workers:  # all eight compete from the first job on
        worker.runner_id()
    jobs = [task.options(queue="capped").enqueue("c", 0.3) for _ in range(60)]
    for job in jobs:
        assert job.wait(120) == "succeeded"
    spans = defaultdict(dict)
    for job_id, _attempt, note, at in executions(admin, schema):
        spans[job_id][note.split()[0]] = at
    # Never more than five at once (the ledger: when each task really started and ended), and
    # five were reached.
    assert max_overlap([(s["start"], s["end"]) for s in spans.values()]) == 5
    runners = admin.execute(f"""SELECT count(DISTINCT runner_id) FROM "{schema}".job_events
                                WHERE kind = 'claimed'""").fetchone()[0]
    # Five at once with four slots per runner already needs two runners; how the work spreads
    # beyond that depends on which runners the scheduler wakes first on this busy machine.
    assert runners >= 2


def test_a_rate_of_ten_per_second_is_never_exceeded_in_any_window(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    wapp.queues.limit("metered", rate=10, per=1.0)
    task = wapp.tasks["noop"]
    jobs = task.options(queue="metered").enqueue_many([()] * 45)
    for _ in range(4):
        start_worker()
    for job in jobs:
        assert job.wait(60) == "succeeded"
    starts = [r[0] for r in admin.execute(
        f"""SELECT at FROM "{schema}".job_events WHERE kind = 'claimed' ORDER BY at""").fetchall()]
    assert len(starts) == 45
    for i, start in enumerate(starts):
        in_window = sum(1 for s in starts[i:] if s < start + dt.timedelta(seconds=1))
        assert in_window <= 10, f"{in_window} starts in the second from {start}"
    assert starts[-1] - starts[0] >= dt.timedelta(seconds=3.5)  # 45 at 10 a second


def test_no_claim_commits_after_a_pause(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    task = wapp.tasks["noop"]
    for _ in range(4):
        start_worker("--concurrency", "4")

    def claims(queue: str) -> int:
        return admin.execute(f"""SELECT count(*) FROM "{schema}".job_events AS e
                                 JOIN "{schema}".jobs AS j ON j.id = e.job_id
                                 WHERE e.kind = 'claimed' AND j.queue = %s""", (queue,)).fetchone()[0]

    for round_ in range(5):
        task.options(queue="mail").enqueue_many([()] * 300)
        wait_for(lambda: claims("mail") > 300 * round_ + 20, message="workers to be busy on mail")
        wapp.queues.pause("mail", reason=f"round {round_}")
        seen = claims("mail")
        # The workers go on claiming other queues; still no claim of mail may appear.
        marker = task.options(queue="other").enqueue_many([()] * 50)
        for job in marker:
            assert job.wait(30) == "succeeded"
        assert claims("mail") == seen, f"round {round_}: a claim of a paused queue committed after the pause"
        wapp.queues.resume("mail")
        wait_for(lambda: claims("mail") == 300 * (round_ + 1), timeout=60,
                 message="the rest of mail to run after the resume")


def test_queue_controls_from_python_keep_who_and_why(app, admin) -> None:
    app.queues.pause("mail", reason="provider down", by="ops@example")
    app.queues.limit("payments", rate=100, per=dt.timedelta(minutes=1), concurrency=4)
    app.task(name="t", queue="mail")(lambda: None).enqueue()  # enqueues are accepted
    listed = {q.name: q for q in app.queues.list()}
    assert listed["mail"].paused and listed["mail"].paused_by == "ops@example"
    assert listed["mail"].pause_reason == "provider down" and listed["mail"].queued == 1
    assert (listed["payments"].rate_limit, listed["payments"].rate_period,
            listed["payments"].concurrency_limit) == (100, 60.0, 4)
    app.queues.resume("mail")
    assert not app.queues.get("mail").paused
    history = app.queues.history("mail")
    assert [h["action"] for h in history] == ["resumed", "paused"]
    assert history[1]["reason"] == "provider down"
    app.queues.limit("payments")
    assert app.queues.get("payments").rate_limit is None
    for call, message in [(lambda: app.queues.limit("x", rate=5), "rate and per together"),
                          (lambda: app.queues.limit("x", concurrency=0), "concurrency must be"),
                          (lambda: app.queues.pause(" "), "queue must be")]:
        with pytest.raises(pgqueue.ConfigurationError, match=message):
            call()


def test_cancel_wait_returns_the_final_status(wapp, start_worker) -> None:
    job = wapp.tasks["cancellable"].enqueue(60)
    start_worker()
    wait_for(lambda: job.status() == "running", message="the job to run")
    # The task sees the request and returns early: the job ends cancelled, its result kept.
    assert job.cancel(wait=20) == "cancelled"
    assert job.info()["result"] == "stopped early"
    queued = wapp.tasks["cancellable"].options(delay=60).enqueue(1)
    assert queued.cancel(wait=20) == "cancelled"  # at once


def test_a_worker_with_too_many_stuck_threads_restarts_in_place(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    worker = start_worker(env={"PGQUEUE_MAX_STUCK_THREADS": "1"})
    first_runner = worker.runner_id()
    jobs = [wapp.tasks["slow_sync"].enqueue(120) for _ in range(2)]  # timeout 0.5 s, sleeps 2 min
    for job in jobs:
        assert job.wait(20) == "failed"
    new_runner = wait_for(lambda: (r := worker.runner_id()) != first_runner and r, timeout=30,
                          message="the worker to restart in place")
    assert worker.proc.poll() is None  # same process, started afresh
    row = admin.execute(f'SELECT state, pid FROM "{schema}".runners WHERE id = %s', (first_runner,)).fetchone()
    assert row == ("stopped", worker.pid)
    assert admin.execute(f'SELECT pid FROM "{schema}".runners WHERE id = %s', (new_runner,)).fetchone()[0] == worker.pid
    assert "restarting this worker process" in worker.log()
    # It works afresh.
    assert wapp.tasks["add"].enqueue(2, 3).result(timeout=20) == 5


def test_under_a_supervisor_a_process_with_stuck_threads_is_replaced(wapp, start_worker, admin) -> None:
    schema = wapp.settings.schema
    supervisor = start_worker("--processes", "2", env={"PGQUEUE_MAX_STUCK_THREADS": "1"})

    def children() -> set[int]:
        return {r[0] for r in admin.execute(
            f"""SELECT pid FROM "{schema}".runners WHERE state = 'running'""").fetchall()}

    first = wait_for(lambda: c if len(c := children()) == 2 else None, timeout=30,
                     message="two worker processes to register")
    # Four jobs over two processes: one of them gets at least two, each stuck past its timeout.
    jobs = [wapp.tasks["slow_sync"].enqueue(120) for _ in range(4)]
    for job in jobs:
        assert job.wait(30) == "failed"
    fresh = wait_for(lambda: (c := children()) - first, timeout=60,
                     message="the supervisor to start a fresh process")
    assert fresh and supervisor.proc.poll() is None
    assert "asked to be restarted (stuck task threads)" in supervisor.log()
    assert wapp.tasks["add"].enqueue(1, 2).result(timeout=30) == 3
