"""A job, read from the database, as a ``django.tasks`` ``TaskResult``.

Status mapping (pgqueue -> Django):

==========================  ==========
queued (new, or a retry)    READY
running                     RUNNING
succeeded                   SUCCESSFUL
failed                      FAILED
cancelled                   FAILED, its last error ``pgqueue.errors.JobCancelled``
==========================  ==========

``errors`` has one ``TaskError`` per attempt that ended with an error, oldest first (a
worker that died mid-task is one too, ``pgqueue.errors.RunnerDied``); ``worker_ids`` one
runner id per attempt started, so ``attempts`` and ``TaskContext.attempt`` count from 1.
"""

from __future__ import annotations

import builtins
import functools
from typing import Any

from django.utils.module_loading import import_string

from . import compat
from .errors import RECORDED_TYPES, UNKNOWN_ERROR
from .queries import for_schema

MARKER = "django_tasks"

_STATUS = {
    "queued": compat.TaskResultStatus.READY,
    "running": compat.TaskResultStatus.RUNNING,
    "succeeded": compat.TaskResultStatus.SUCCESSFUL,
    "failed": compat.TaskResultStatus.FAILED,
    "cancelled": compat.TaskResultStatus.FAILED,
}


def job_meta(alias: str) -> dict[str, Any]:
    """What a job of the backend ``alias`` carries in its meta."""
    return {MARKER: {"backend": alias}}


def backend_of(meta: Any) -> str | None:
    """The django.tasks backend alias of a job's meta; None for a job of the classic App."""
    marker = meta.get(MARKER) if isinstance(meta, dict) else None
    backend = marker.get("backend") if isinstance(marker, dict) else None
    return backend if isinstance(backend, str) else None


@functools.lru_cache(maxsize=512)
def exception_path(recorded: str) -> str:
    """An importable class path for an error type as pgqueue records it (``module.Qualname``,
    or ``Qualname`` for builtins and for pgqueue's own types)."""
    if recorded in RECORDED_TYPES:
        return RECORDED_TYPES[recorded]
    if "." not in recorded:
        found = getattr(builtins, recorded, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return f"builtins.{recorded}"
        return UNKNOWN_ERROR
    try:
        found = import_string(recorded)
    except ImportError:
        return UNKNOWN_ERROR
    if isinstance(found, type) and issubclass(found, BaseException):
        return recorded
    return UNKNOWN_ERROR


def _error(error: Any) -> Any:
    if not isinstance(error, dict):
        error = {"type": "UnknownError", "message": str(error), "traceback": ""}
    kind = str(error.get("type") or "UnknownError")
    traceback = error.get("traceback") or f"{kind}: {error.get('message', '')}\n"
    return compat.TaskError(exception_class_path=exception_path(kind), traceback=str(traceback))


def fetch_row(fetch: Any, schema: str, job_id: int) -> dict[str, Any] | None:
    rows = fetch(for_schema(schema)["django_task_result"], {"id": job_id})
    return rows[0] if rows else None


def resolve_task(path: str) -> Any:
    """The django.tasks Task at ``path`` (a job's task name), or None."""
    try:
        found = import_string(path)
    except ImportError:
        return None
    return found if isinstance(found, compat.TASK_CLASSES) else None


def build(row: dict[str, Any], task: Any, alias: str) -> Any:
    """The TaskResult of ``row`` (a ``django_task_result`` row) for ``task``."""
    try:  # the job's own queue and priority, where the backend still accepts them
        task = task.using(priority=row["priority"], queue_name=row["queue"], backend=alias)
    except Exception:
        pass
    errors = [_error(e) for e in row["errors"] or []]
    if row["status"] == "cancelled":
        errors.append(compat.TaskError(exception_class_path="pgqueue.errors.JobCancelled",
                                       traceback=f"JobCancelled: {row['last_reason'] or 'cancelled'}\n"))
    result = compat.TaskResult(
        task=task,
        id=str(row["id"]),
        status=_STATUS[row["status"]],
        enqueued_at=row["enqueued_at"],
        started_at=row["first_started_at"],
        finished_at=row["finished_at"],
        last_attempted_at=row["last_started_at"],
        args=list(row["args"] or []),
        kwargs=dict(row["kwargs"] or {}),
        backend=alias,
        errors=errors,
        worker_ids=[str(r) for r in row["worker_ids"] or []],
    )
    if row["status"] == "succeeded":
        object.__setattr__(result, "_return_value", row["result"])
    return result
