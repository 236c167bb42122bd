"""What a running task can know about itself, and log records that carry it.

``pgqueue.current_job()`` returns the :class:`JobContext` of the job the calling
thread (or asyncio task) runs, or None outside a job. Its ``attempt`` is the job's
fencing token: task code can guard its own writes with it (``... WHERE
processed_attempt < %(attempt)s``), so a stale attempt cannot overwrite a newer one.

:class:`JobLogFilter` copies the job's id, task and attempt onto every log record
emitted while the job runs, so a worker's log can be filtered by job.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from dataclasses import dataclass, field

_current: contextvars.ContextVar["JobContext | None"] = contextvars.ContextVar(
    "pgqueue_current_job", default=None
)


@dataclass
class JobContext:
    """The running job, as its task sees it (``pgqueue.current_job()``)."""

    id: int
    task: str
    #: The attempt number: the job's fencing token (see the module docstring).
    attempt: int
    queue: str
    runner_id: int
    # Set (never cleared) by the runner's control thread; a plain attribute is enough.
    _cancel: bool = False
    #: The job's metadata (set at enqueue: a trace context, tags).
    meta: dict = field(default_factory=dict)
    #: Seconds the job waited between becoming runnable and this attempt's claim.
    waited: float = 0.0

    @property
    def schedule(self) -> str | None:
        """The id of the cron schedule that enqueued this job, or None."""
        value = self.meta.get("schedule")
        return value if isinstance(value, str) else None

    @property
    def scheduled_for(self) -> dt.datetime | None:
        """The tick this job runs for (an aware datetime in UTC) when a schedule enqueued it
        (for a manual trigger: when it was triggered); None otherwise."""
        value = self.meta.get("scheduled_for") if self.schedule else None
        try:
            return dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc) if value else None
        except (TypeError, ValueError):
            return None

    @property
    def late(self) -> bool:
        """True when its schedule fired it late: a catch-up of a tick missed while no runner
        fired (more than 10 s after its time)."""
        return bool(self.schedule and self.meta.get("late") is True)

    @property
    def cancel_requested(self) -> bool:
        """True once ``job.cancel()`` was called for this running job. Sync tasks that run
        long should check it and stop; async tasks are cancelled for them."""
        return self._cancel


def current_job() -> JobContext | None:
    """The job the caller is running inside, or None."""
    return _current.get()


def set_current(context: JobContext | None) -> contextvars.Token:
    return _current.set(context)


def reset_current(token: contextvars.Token) -> None:
    _current.reset(token)


class JobLogFilter(logging.Filter):
    """Adds ``job_id``, ``job_task``, ``job_attempt`` (and ``job``, a short label) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            ctx = _current.get()
            if ctx is not None:
                record.job_id = ctx.id
                record.job_task = ctx.task
                record.job_attempt = ctx.attempt
            else:
                record.job_id = record.job_task = record.job_attempt = None
        parts = [f"job {record.job_id}"] if record.job_id is not None else []
        if parts and getattr(record, "job_task", None):
            parts.append(str(record.job_task))
        if parts and getattr(record, "job_attempt", None) is not None:
            parts.append(f"attempt {record.job_attempt}")
        record.job = f" [{' '.join(parts)}]" if parts else ""
        return True


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s:%(job)s %(message)s"


def install_job_logging(level: str | int) -> None:
    """Configure the root logger for a worker: job-aware format on stderr."""
    root = logging.getLogger()
    if not any(getattr(h, "_pgqueue", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(JobLogFilter())
        handler._pgqueue = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
