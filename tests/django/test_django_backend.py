"""The django.tasks backend without a worker: flags, validation, results, ids, checks."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings
from django.utils import timezone

from pgqueue.contrib.django import app
from pgqueue.contrib.django.backend import PgQueueBackend, PgQueueTask
from pgqueue.contrib.django.compat import (InvalidTask, TaskResultDoesNotExist, TaskResultStatus,
                                           task, task_backends)
from testapp import tasks


def test_every_supports_flag_is_true_and_tasks_are_pgqueue_tasks() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, PgQueueBackend)
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result,
            backend.supports_priority) == (True, True, True, True)
    assert isinstance(tasks.dj_add, PgQueueTask)


def test_enqueue_stores_queue_priority_args_and_pgqueue_options(pg) -> None:
    result = tasks.dj_other.enqueue("x")
    row = pg.execute("SELECT task, queue, priority, args, max_attempts, meta FROM pgqueue.jobs "
                     "WHERE id = %s", (int(result.id),)).fetchone()
    assert row == ("testapp.tasks.dj_other", "other", 5, ["x"], 3,
                   {"django_tasks": {"backend": "default"}})
    flaky = tasks.dj_flaky.using(priority=-7).enqueue(0)
    assert pg.execute("SELECT priority, max_attempts FROM pgqueue.jobs WHERE id = %s",
                      (int(flaky.id),)).fetchone() == (-7, 3)
    assert result.status == TaskResultStatus.READY and result.args == ["x"]
    assert result.backend == "default" and len(result.id) < 64


def test_run_after_datetime_and_timedelta_use_the_database_clock(pg) -> None:
    later = timezone.now() + dt.timedelta(hours=1)
    at = tasks.dj_add.using(run_after=later).enqueue(1, 1)
    delayed = tasks.dj_add.using(run_after=dt.timedelta(minutes=10)).enqueue(1, 1)
    rows = dict(pg.execute("SELECT id, run_at - enqueued_at FROM pgqueue.jobs").fetchall())
    assert abs(rows[int(delayed.id)] - dt.timedelta(minutes=10)) < dt.timedelta(seconds=5)
    assert pg.execute("SELECT run_at FROM pgqueue.jobs WHERE id = %s",
                      (int(at.id),)).fetchone()[0] == later


@pytest.mark.parametrize("make, message", [
    (lambda: tasks.dj_add.using(run_after=dt.datetime(2030, 1, 1)), "aware"),
    (lambda: tasks.dj_add.using(run_after=dt.timedelta(seconds=-1)), "negative"),
    (lambda: tasks.dj_add.using(queue_name="nope"), "nope"),
    (lambda: tasks.dj_add.using(priority=101), "priority"),
    (lambda: tasks.dj_add.using_pgqueue(key="k" * 600), "512"),
    (lambda: tasks.dj_add.using_pgqueue(max_attempts=0), "max_attempts"),
    (lambda: tasks.dj_add.using_pgqueue(timeout=-1), "timeout"),
])
def test_invalid_tasks_are_refused_with_a_reason(make, message) -> None:
    with pytest.raises(InvalidTask, match=message):
        make()


def test_per_enqueue_timeout_is_refused_and_main_module_tasks_too() -> None:
    with pytest.raises(InvalidTask, match="where the task is defined"):
        tasks.dj_add.using_pgqueue(timeout=5).enqueue(1, 1)

    def inner() -> None: ...

    inner.__module__ = "__main__"
    inner.__qualname__ = "inner"
    with pytest.raises(InvalidTask, match="__main__"):
        task(inner)


def test_arguments_that_are_not_json_are_refused_at_enqueue() -> None:
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        tasks.dj_add.enqueue(object(), 1)
    with pytest.raises(TypeError, match="cannot be called"):
        tasks.dj_add.enqueue(1)


def test_get_result_of_unknown_malformed_and_foreign_ids() -> None:
    backend = task_backends["default"]
    for bad in ("abc", "-1", "", "99999999999999999999"):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(bad)
    with pytest.raises(TaskResultDoesNotExist, match="no job"):
        backend.get_result("123456789")
    classic = tasks.add.enqueue(1, 2)
    with pytest.raises(TaskResultDoesNotExist, match="not a task of"):
        backend.get_result(str(classic.id))


def test_get_result_mismatch_and_key_dedupe() -> None:
    from pgqueue.contrib.django.compat import Task

    other = tasks.dj_other.enqueue("x")
    with pytest.raises(Exception) as raised:
        tasks.dj_add.get_result(other.id)
    assert type(raised.value).__name__ == "TaskResultMismatch"
    assert isinstance(tasks.dj_other.get_result(other.id).task, Task)
    keyed = tasks.dj_add.using_pgqueue(key="same")
    assert keyed.enqueue(1, 1).id == keyed.enqueue(2, 2).id


def test_a_result_of_another_backend_alias_is_not_ours() -> None:
    settings = {"default": {"BACKEND": "pgqueue.contrib.django.backend.PgQueueBackend",
                            "QUEUES": ["default", "other"]},
                "emails": {"BACKEND": "pgqueue.contrib.django.backend.PgQueueBackend",
                           "QUEUES": []}}
    with override_settings(TASKS=settings):
        result = tasks.dj_add.using(backend="emails", queue_name="anything").enqueue(1, 1)
        assert result.backend == "emails"
        assert task_backends["emails"].get_result(result.id).task.queue_name == "anything"
        with pytest.raises(TaskResultDoesNotExist):
            task_backends["default"].get_result(result.id)


def test_cancelled_job_is_failed_with_jobcancelled() -> None:
    result = tasks.dj_add.enqueue(1, 1)
    app.job(int(result.id)).cancel()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    from pgqueue.errors import JobCancelled

    assert [e.exception_class for e in result.errors] == [JobCancelled]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_backend_checks() -> None:
    assert task_backends["default"].check() == []
    with override_settings(TASKS={"default": {
            "BACKEND": "pgqueue.contrib.django.backend.PgQueueBackend",
            "OPTIONS": {"database": "default"}}}):
        ids = [m.id for m in task_backends["default"].check()]
        assert ids == ["pgqueue.tasks.E004"]
    with override_settings(PGQUEUE_DATABASE_ALIAS="missing"):
        messages = task_backends["default"].check()
        assert [m.id for m in messages] == ["pgqueue.tasks.E001"]
        assert "missing" in messages[0].msg
    databases = {"default": dict(__import__("django.conf").conf.settings.DATABASES["default"]),
                 "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    with override_settings(DATABASES=databases, PGQUEUE_DATABASE_ALIAS="lite"):
        from django.db import connections

        connections.__dict__.pop("settings", None)
        connections._settings = connections.configure_settings(databases)
        try:
            assert [m.id for m in task_backends["default"].check()] == ["pgqueue.tasks.E002"]
        finally:
            connections._settings = None
            connections.__dict__.pop("settings", None)


def test_pgqueue_options_in_the_decorator_where_django_passes_them_on() -> None:
    """Django 6.1 and the backport pass @task(**kwargs) to the backend's task class; 6.0 does
    not (there, `task = task.using_pgqueue(...)` at module level does the same)."""
    import inspect

    from pgqueue.contrib.django.compat import task as decorator

    def module_level(x: int) -> int:
        return x

    module_level.__module__ = "testapp.tasks"
    module_level.__qualname__ = "module_level"
    if "kwargs" not in inspect.signature(decorator).parameters:
        with pytest.raises(TypeError):
            decorator(max_attempts=4)(module_level)
        return
    made = decorator(max_attempts=4, timeout=30)(module_level)
    assert (made.max_attempts, made.timeout) == (4, 30)
    with pytest.raises(InvalidTask, match="max_attempts"):
        decorator(max_attempts=0)(module_level)


def test_check_reports_psycopg3_missing_for_the_worker(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    messages = task_backends["default"].check()
    assert [m.id for m in messages] == ["pgqueue.tasks.E003"]
    assert "psycopg[binary]" in messages[0].hint
