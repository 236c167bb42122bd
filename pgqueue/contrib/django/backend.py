"""``PgQueueBackend``: a ``django.tasks`` backend whose jobs live in PostgreSQL, run by
pgqueue's self-healing workers (``manage.py pgqueue work``).

::

    TASKS = {
        "default": {
            "BACKEND": "pgqueue.contrib.django.backend.PgQueueBackend",
            "QUEUES": ["default", "emails"],        # [] accepts any queue name
        }
    }

Transactional guarantee: ``enqueue()`` inserts the job on Django's connection of
``PGQUEUE_DATABASE_ALIAS``, inside the caller's transaction. Inside ``transaction.atomic()``
the job exists exactly when the block commits, and a rollback (or the rollback of a savepoint
around the enqueue) leaves no job; Django's ``transaction.on_commit`` recipe is not needed.
``task_enqueued`` is sent when the transaction commits (at once outside ``atomic()``).

Every ``supports_*`` flag is true: priorities (-100..100, larger runs sooner), ``run_after``
as an aware datetime or a ``timedelta`` (counted on the database's clock), queues, async
tasks, ``takes_context``, and results from any process (``get_result``, ``refresh()``).
pgqueue's own options go through :class:`PgQueueTask`: ``@task(max_attempts=5,
timeout=30)`` on Django 6.1 and the backport, ``task.using_pgqueue(key=..., max_attempts=...)``
everywhere.

Building the backend (which ``@task`` does at import time) touches no database and imports
no model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any

from django.utils import timezone

from . import compat
from .compat import InvalidTask, TaskResultDoesNotExist

_UNSET: Any = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PgQueueTask(compat.Task):
    """A ``django.tasks`` Task with pgqueue's options.

    ``key``: at most one queued or running job holds a key; enqueueing again while it does
    returns that job's result instead of a new one. ``max_attempts``: failed attempts before
    the job fails for good (default ``PGQUEUE_MAX_ATTEMPTS``). ``retry_backoff``: seconds before
    the first retry, doubling. ``timeout``: seconds an attempt may run. ``retry_backoff`` and
    ``timeout`` belong to the task where it is defined (the worker reads them there);
    ``key`` and ``max_attempts`` may change per enqueue.
    """

    key: str | None = None
    max_attempts: int | None = None
    retry_backoff: float | None = None
    timeout: float | None = None

    def using_pgqueue(self, *, key: Any = _UNSET, max_attempts: Any = _UNSET,
                      retry_backoff: Any = _UNSET, timeout: Any = _UNSET) -> "PgQueueTask":
        """A copy with pgqueue's options changed (what ``using()`` is for Django's own)."""
        changes = {name: value for name, value in (
            ("key", key), ("max_attempts", max_attempts), ("retry_backoff", retry_backoff),
            ("timeout", timeout)) if value is not _UNSET}
        return dataclasses.replace(self, **changes)


class _Validated:
    """What Django's own validate_task reads of a task, with a timedelta run_after hidden
    (Django checks it is an aware datetime)."""

    def __init__(self, task: Any) -> None:
        self._task = task

    def __getattr__(self, name: str) -> Any:
        if name == "run_after" and isinstance(self._task.run_after, dt.timedelta):
            return None
        return getattr(self._task, name)


class PgQueueBackend(compat.BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True
    task_class = PgQueueTask

    #: OPTIONS this backend understands (none yet: pgqueue's settings are PGQUEUE_*).
    KNOWN_OPTIONS: frozenset[str] = frozenset()

    # ----------------------------------------------------------- validation

    def validate_task(self, task: Any) -> None:
        super().validate_task(_Validated(task))
        if isinstance(task.run_after, dt.timedelta) and task.run_after < dt.timedelta(0):
            raise InvalidTask(f"run_after must not be a negative timedelta, not {task.run_after!r}")
        module = getattr(task.func, "__module__", "") or ""
        if module == "__main__" or module.startswith("__main__."):
            raise InvalidTask(
                f"task {task.func.__qualname__} is defined in __main__ (a script run directly): "
                "workers find tasks by module path; define it in an importable module")
        from ... import errors
        from ...tasks import _validate_seconds, validate_key, validate_max_attempts

        try:
            if getattr(task, "key", None) is not None:
                validate_key(task.key)
            if getattr(task, "max_attempts", None) is not None:
                validate_max_attempts(task.max_attempts)
            if getattr(task, "retry_backoff", None) is not None:
                _validate_seconds("retry_backoff", task.retry_backoff)
            if getattr(task, "timeout", None) is not None:
                _validate_seconds("timeout", task.timeout, allow_zero=False)
        except errors.ConfigurationError as exc:
            raise InvalidTask(str(exc)) from None

    # -------------------------------------------------------------- enqueue

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        from ... import errors
        from . import results
        from .runtime import _send, adapt

        self.validate_task(task)
        base = _module_level(task)
        if getattr(task, "timeout", None) != getattr(base, "timeout", None) \
                or getattr(task, "retry_backoff", None) != getattr(base, "retry_backoff", None):
            raise InvalidTask(
                f"timeout and retry_backoff of {task.module_path} are read by the worker where the "
                "task is defined: set them in @task(...) (Django 6.1, or the backport) or on the "
                "module-level task, not per enqueue")
        pg_app = app_module_app()
        adapter = adapt(pg_app, base)
        run_at, delay = _when(task.run_after)
        options: dict[str, Any] = {
            "queue": task.queue_name, "priority": task.priority, "meta": results.job_meta(self.alias),
            "conn": pg_app.database_alias,
        }
        if run_at is not None:
            options["run_at"] = run_at
        if delay is not None:
            options["delay"] = delay
        if getattr(task, "key", None) is not None:
            options["key"] = task.key
        if getattr(task, "max_attempts", None) is not None:
            options["max_attempts"] = task.max_attempts
        try:
            job = adapter.options(**options).enqueue(*args, **kwargs)
        except errors.ConfigurationError as exc:
            raise InvalidTask(str(exc)) from exc
        if not job.created:  # a job holding the key: its own result
            return self.get_result(str(job.id))
        result = compat.TaskResult(
            task=task, id=str(job.id), status=compat.TaskResultStatus.READY,
            enqueued_at=timezone.now(), started_at=None, last_attempted_at=None, finished_at=None,
            args=list(args), kwargs=dict(kwargs), backend=self.alias, errors=[], worker_ids=[],
        )
        from django.db import transaction

        transaction.on_commit(lambda: _send(compat.task_enqueued, type(self), result),
                              using=pg_app.database_alias)
        return result

    # -------------------------------------------------------------- results

    def get_result(self, result_id: Any) -> Any:
        from ... import errors
        from . import dbconn, results

        try:
            job_id = int(str(result_id))
            if not 0 < job_id < 2**63:
                raise ValueError
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(
                f"{result_id!r} is not the id of a pgqueue job (ids are whole numbers)") from None
        pg_app = app_module_app()
        schema = pg_app.settings.schema
        try:
            fetch = dbconn.DjangoFetch(dbconn.connection_for(pg_app.database_alias), schema)
            row = results.fetch_row(fetch, schema, job_id)
        except errors.JobNotFound:
            row = None
        if row is None:
            raise TaskResultDoesNotExist(f"there is no job {job_id} in schema {schema!r}")
        if results.backend_of(row["meta"]) != self.alias:
            raise TaskResultDoesNotExist(
                f"job {job_id} is not a task of the django.tasks backend {self.alias!r}")
        task = results.resolve_task(row["task"])
        if task is None:
            raise TaskResultDoesNotExist(
                f"job {job_id} runs {row['task']!r}, which is not an importable django.tasks task "
                "here")
        return results.build(row, task, self.alias)

    # --------------------------------------------------------------- checks

    def check(self, **kwargs: Any) -> list[Any]:
        from . import checks

        return checks.backend_messages(self)


def app_module_app() -> Any:
    """``pgqueue.contrib.django.app``."""
    from . import app

    return app


def _when(run_after: Any) -> tuple[dt.datetime | None, float | None]:
    if run_after is None:
        return None, None
    if isinstance(run_after, dt.timedelta):
        return None, run_after.total_seconds()
    if timezone.is_naive(run_after):  # USE_TZ = False: Django's own time zone
        run_after = timezone.make_aware(run_after)
    return run_after, None


@functools.lru_cache(maxsize=1024)
def _module_level_cached(path: str, func: Any) -> Any:
    from . import results

    found = results.resolve_task(path)
    if found is None or found.func is not func:
        raise InvalidTask(
            f"the worker finds a task by its module path, and {path} is not this task: define "
            "tasks with @task at a module's top level, under the function's own name")
    return found


def _module_level(task: Any) -> Any:
    return _module_level_cached(task.module_path, task.func)
