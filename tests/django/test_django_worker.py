"""Real ``manage.py pgqueue work`` processes running both kinds of tasks: results, retries,
errors, context, async tasks, signals (once each, in order), a worker SIGKILLed mid-task,
hygiene of Django's connections and a flat memory with DEBUG=True."""

from __future__ import annotations

import os

import psycopg
import pytest
from django.test import Client

from djhelpers import wait_for
from pgqueue.contrib.django.compat import TaskResultStatus
from testapp import tasks
from testapp.models import Note, Seen

SUCCESSFUL, FAILED, READY, RUNNING = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED,
                                      TaskResultStatus.READY, TaskResultStatus.RUNNING)


def finished(result, timeout: float = 30.0):
    def done():
        result.refresh()
        return result.is_finished
    wait_for(done, timeout=timeout, message=f"task result {result.id} to finish")
    return result


def signals_of(job_id: int) -> list[tuple[str, str, int]]:
    return [(s.what, s.detail["status"], s.pid) for s in
            Seen.objects.filter(job_id=job_id, what__startswith="task_").order_by("id")]


def test_request_commit_worker_result_both_ways(start_worker, dsn) -> None:
    """The request writes a note and enqueues both ways in one transaction; the worker runs
    both once the request's transaction commits."""
    worker = start_worker("--concurrency", "4")
    response = Client().post("/note/", {"text": "e2e"}, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    from pgqueue.contrib.django import app

    assert app.job(body["job"]).result(timeout=30) == body["note"] + 1
    result = tasks.dj_add.get_result(body["result"])
    finished(result)
    assert result.status == SUCCESSFUL, result.errors
    assert result.return_value == body["note"] + 2
    assert result.attempts == 1 and result.worker_ids == [str(worker.runner_id(dsn))]
    assert result.started_at is not None and result.finished_at >= result.started_at
    assert result.errors == []


def test_refresh_goes_ready_running_successful(start_worker) -> None:
    result = tasks.dj_sleep.enqueue(1.5)
    assert result.status == READY and result.attempts == 0
    start_worker()
    wait_for(lambda: (result.refresh(), result.status)[1] == RUNNING, message="RUNNING")
    assert result.attempts == 1 and result.started_at is not None
    finished(result)
    assert result.status == SUCCESSFUL and result.return_value == 1.5


def test_signals_fire_once_each_and_in_order(start_worker) -> None:
    worker = start_worker()
    ok = tasks.dj_add.enqueue(1, 1)  # autocommit: task_enqueued is sent at once
    flaky = tasks.dj_flaky.enqueue(2)
    finished(ok)
    finished(flaky)
    wait_for(lambda: len(signals_of(int(flaky.id))) == 7, message="every signal of the flaky task")
    me = os.getpid()
    assert signals_of(int(ok.id)) == [("task_enqueued", "READY", me),
                                      ("task_started", "RUNNING", worker.pid),
                                      ("task_finished", "SUCCESSFUL", worker.pid)]
    # One started/finished pair per attempt; a failed attempt that will be retried finishes READY.
    assert signals_of(int(flaky.id)) == [("task_enqueued", "READY", me)] + [
        ("task_started", "RUNNING", worker.pid), ("task_finished", "READY", worker.pid)] * 2 + [
        ("task_started", "RUNNING", worker.pid), ("task_finished", "SUCCESSFUL", worker.pid)]
    finished_rows = Seen.objects.filter(job_id=int(flaky.id), what="task_finished").order_by("id")
    assert [s.detail["attempts"] for s in finished_rows] == [1, 2, 3]
    assert all(s.detail["sender"] == "PgQueueBackend" for s in finished_rows)


def test_retries_and_errors(start_worker) -> None:
    start_worker()
    flaky = finished(tasks.dj_flaky.enqueue(2))
    assert flaky.status == SUCCESSFUL and flaky.return_value == 3 and flaky.attempts == 3
    assert [e.exception_class for e in flaky.errors] == [ValueError, ValueError]
    assert "attempt 1 fails" in flaky.errors[0].traceback

    failed = finished(tasks.dj_fail.enqueue())
    assert failed.status == FAILED and failed.attempts == 1
    assert [e.exception_class_path for e in failed.errors] == ["builtins.LookupError"]
    with pytest.raises(ValueError):
        failed.return_value  # noqa: B018

    bad = finished(tasks.dj_bad_result.enqueue())
    assert bad.status == FAILED
    from pgqueue.contrib.django.errors import ResultNotSerializable

    assert bad.errors[0].exception_class is ResultNotSerializable


def test_context_async_task_and_other_queue(start_worker) -> None:
    start_worker()
    context = finished(tasks.dj_context.enqueue("v"))
    assert context.return_value == {"attempt": 1, "id": context.id, "status": "RUNNING",
                                    "value": "v"}
    coroutine = finished(tasks.dj_async.enqueue(2, 3))
    assert coroutine.status == SUCCESSFUL and coroutine.return_value == 5
    other = finished(tasks.dj_other.enqueue("x"))
    assert other.return_value == "X" and other.task.queue_name == "other"
    assert other.task.priority == 5
    from pgqueue.contrib.django import app

    assert app.job(tasks.async_add.enqueue(1, 2).id).result(timeout=30) == 3


def test_aenqueue_from_an_async_view(start_worker) -> None:
    response = Client().get("/async/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "READY"
    start_worker()
    first = finished(tasks.dj_add.get_result(body["result"]))
    second = finished(tasks.dj_add.get_result(body["second"]))
    assert first.return_value == 42 and second.return_value == body["note"]


def test_worker_sigkilled_mid_task_is_finished_by_another(start_worker, dsn) -> None:
    """A worker dies under a task (SIGKILL); another worker runs it again; the crash is one of
    the result's errors, as pgqueue.errors.RunnerDied."""
    first = start_worker()
    first_runner = first.runner_id(dsn)
    result = tasks.dj_crash_once.enqueue(60)
    wait_for(lambda: Seen.objects.filter(what="dj_crash_once", job_id=int(result.id)).exists(),
             message="the first attempt to start")
    first.kill()
    second = start_worker()
    finished(result, timeout=60)
    assert result.status == SUCCESSFUL, (result.errors, second.log())
    assert result.return_value == "finished on attempt 2"
    assert result.worker_ids == [str(first_runner), str(second.runner_id(dsn))]
    assert result.attempts == 2
    assert [e.exception_class_path for e in result.errors] == ["pgqueue.errors.RunnerDied"]
    from pgqueue.errors import RunnerDied

    assert result.errors[0].exception_class is RunnerDied
    # started twice (once per attempt), finished once (the dead worker never finished).
    wait_for(lambda: len(signals_of(int(result.id))) >= 4, message="task_finished")
    whats = [w for w, _, _ in signals_of(int(result.id))]
    assert whats == ["task_enqueued", "task_started", "task_started", "task_finished"]


def test_classic_task_sigkilled_is_run_again(start_worker, dsn) -> None:
    from pgqueue.contrib.django import app

    first = start_worker()
    first.runner_id(dsn)
    job = tasks.sleep_unless_retried.enqueue(60)
    wait_for(lambda: Seen.objects.filter(what="running", job_id=job.id).exists(),
             message="the first attempt to start")
    first.kill()
    start_worker()
    assert job.result(timeout=60) == "done"
    assert app.job(job.id).info()["crashes"] == 1


def test_sigterm_stops_cleanly(start_worker, dsn) -> None:
    worker = start_worker()
    worker.runner_id(dsn)
    assert worker.terminate() == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT state FROM pgqueue.runners").fetchall() == [("stopped",)]


def test_debug_true_keeps_the_query_log_empty_and_memory_flat(start_worker, dsn) -> None:
    """With DEBUG=True Django logs every query of a connection; the worker resets the log
    around each task, so a long-running worker's memory does not grow with the tasks."""
    from pgqueue.contrib.django import app

    Note.objects.create(text="n")
    worker = start_worker("--concurrency", "4", env={"PGQ_DJANGO_DEBUG": "1"})
    jobs = app.enqueue_many(tasks.count_notes, [("n",)] * 300)
    assert jobs[-1].result(timeout=60) == 1
    wait_for(lambda: all(j.status() == "succeeded" for j in jobs[::50]), message="warm-up")
    before = worker.rss_kib()
    jobs = app.enqueue_many(tasks.count_notes, [("n",)] * 1500)
    wait_for(lambda: jobs[-1].status() == "succeeded", timeout=120, message="1500 tasks")
    after = worker.rss_kib()
    print(f"worker RSS {before} KiB after 300 tasks, {after} KiB after 1800 (DEBUG=True)")
    logged = app.job(tasks.queries_logged.enqueue().id).result(timeout=30)
    assert logged <= 1, f"{logged} queries in the log of a worker thread: reset_queries() missing"
    assert after - before < 8 * 1024, f"RSS grew from {before} KiB to {after} KiB over 1500 tasks"


def test_persistent_connection_killed_while_idle_is_replaced(start_worker, pg) -> None:
    """CONN_MAX_AGE > 0 (with CONN_HEALTH_CHECKS): the server ends the worker's idle Django
    connection; the next task gets a fresh one instead of failing."""
    from pgqueue.contrib.django import app

    start_worker("--concurrency", "1", env={"PGQ_DJANGO_CONN_MAX_AGE": "600"})
    assert app.job(tasks.count_notes.enqueue("x").id).result(timeout=30) == 0
    killed = pg.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE query LIKE '%%testapp_note%%' AND pid <> pg_backend_pid()").fetchone()
    assert killed == (1,)
    job = tasks.count_notes.enqueue("x")
    assert app.job(job.id).result(timeout=30) == 0
    assert app.job(job.id).info()["attempts"] == 1


def test_processes_runs_supervised_workers(start_worker, pg) -> None:
    from pgqueue.contrib.django import app

    supervisor = start_worker("--processes", "2", "--concurrency", "2")
    wait_for(lambda: pg.execute("SELECT count(*) FROM pgqueue.runners WHERE state = 'running'")
             .fetchone()[0] == 2, message="two worker processes", timeout=60)
    jobs = app.enqueue_many(tasks.add, [(i, i) for i in range(20)])
    assert [j.result(timeout=30) for j in jobs] == [2 * i for i in range(20)]
    assert supervisor.terminate() == 0
    assert pg.execute("SELECT array_agg(DISTINCT state) FROM pgqueue.runners").fetchone() == (["stopped"],)
