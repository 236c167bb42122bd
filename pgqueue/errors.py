"""Exceptions raised by pgqueue. Every one says what went wrong and what to do next.

All derive from :class:`PgQueueError`. A subclass exists only where a caller
has a reason to catch it on its own.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "PgQueueError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "SchemaNotMigrated",
    "InvalidArguments",
    "ArgumentNotSerializable",
    "UnknownTask",
    "JobNotFound",
    "ScheduleNotFound",
    "JobStateError",
    "JobFailed",
    "JobCancelled",
    "ResultTimeout",
    "RunnerDied",
    "EmbeddedServerError",
    "Retry",
    "NoRetry",
]


class PgQueueError(Exception):
    """Base class of every pgqueue error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(PgQueueError, ValueError):
    """A setting, DSN or option has a value pgqueue cannot use."""


class DatabaseUnavailable(PgQueueError):
    """The PostgreSQL server could not be reached."""


class SchemaNotMigrated(PgQueueError):
    """The pgqueue schema is missing or out of date: run `pgqueue migrate`."""


class InvalidArguments(PgQueueError, TypeError):
    """The arguments do not fit the task's signature."""


class ArgumentNotSerializable(InvalidArguments):
    """A task argument cannot be stored as JSON."""


class UnknownTask(PgQueueError, LookupError):
    """No task is registered under this name."""


class JobNotFound(PgQueueError, LookupError):
    """No job has this id."""


class ScheduleNotFound(PgQueueError, LookupError):
    """No schedule has this id."""


class JobStateError(PgQueueError):
    """The job is not in a state that allows this operation."""


class JobFailed(PgQueueError):
    """The job failed for good; ``error`` holds the last error (type, message, traceback)."""

    def __init__(self, job_id: int, error: Any) -> None:
        self.job_id = job_id
        # A row written by hand may hold any JSON here: never fail on it.
        if error is not None and not isinstance(error, dict):
            error = {"type": "error", "message": str(error)}
        self.error = error or {}
        kind = self.error.get("type", "error")
        message = self.error.get("message", "")
        super().__init__(f"job {job_id} failed: {kind}: {message}".rstrip(": "))


class JobCancelled(PgQueueError):
    """The job was cancelled before it could finish."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was cancelled")


class ResultTimeout(PgQueueError, TimeoutError):
    """The job did not finish within the time given to ``job.result()``."""


class RunnerDied(PgQueueError):
    """The worker process running the job died (its error type "RunnerDied" in the job's
    history): declared dead by the reaper, its attempt was lost."""


class EmbeddedServerError(PgQueueError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


class NoRetry(Exception):
    """Raise (or subclass) to fail a job at once, whatever attempts it has left."""


class Retry(Exception):
    """Raise inside a task to ask for another attempt.

    ``delay`` (seconds) overrides the task's backoff for this retry. The retry
    counts against ``max_attempts`` like any failure.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if hasattr(delay, "total_seconds"):  # a timedelta
            delay = delay.total_seconds()  # type: ignore[union-attr]
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))
                                  or not math.isfinite(delay) or delay < 0):
            raise ValueError(f"Retry(delay=...) must be a finite number of seconds >= 0 (or a "
                             f"timedelta), not {delay!r}")
        self.delay = delay
        self.reason = reason
        super().__init__(reason or (f"retry requested in {delay} s" if delay is not None else "retry requested"))


for _cls in (
    PgQueueError,
    ConfigurationError,
    DatabaseUnavailable,
    SchemaNotMigrated,
    InvalidArguments,
    ArgumentNotSerializable,
    UnknownTask,
    JobNotFound,
    ScheduleNotFound,
    JobStateError,
    JobFailed,
    JobCancelled,
    ResultTimeout,
    RunnerDied,
    EmbeddedServerError,
    Retry,
    NoRetry,
):
    _cls.__module__ = "pgqueue.errors"
del _cls
