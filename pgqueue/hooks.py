"""Hooks: callbacks around enqueue and around each job run, for tracing, metrics and the
framework integrations (a Flask app context around each task, Django's stale-connection
cleanup). A kind of hook nobody registered costs nothing but one truthiness check.

::

    @app.hooks.around_enqueue
    def trace_enqueue(call: pgqueue.EnqueueCall):      # may return a context manager
        call.meta["traceparent"] = current_traceparent()   # stored with the job(s)

    @app.hooks.around_job
    def app_context(job: pgqueue.JobContext):          # entered on the task's own thread
        return flask_app.app_context()

    @app.hooks.on_job_end
    def count(end: pgqueue.JobEnd): ...                # status, seconds, error type

    @app.hooks.on_worker_event
    def observe(event: pgqueue.WorkerEvent): ...       # claims, heartbeats, reaping

``around_enqueue`` wraps the insert: it may add keys to ``call.meta`` (a JSON object stored
with every job of the call, readable in the task as ``current_job().meta``) and, once the
insert ran, finds the new ids in ``call.job_ids``. ``around_job`` wraps the task function's
call, on the thread that runs it (for an ``async def`` task: inside its coroutine), and sees
the exception the task raised, if any. ``on_job_end`` runs when an attempt's outcome is
known. A hook that raises is logged and otherwise ignored: it never fails a job or an
enqueue.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

if TYPE_CHECKING:
    from .context import JobContext

logger = logging.getLogger(__name__)


@dataclass
class EnqueueCall:
    """One enqueue call (one job, or a bulk ``enqueue_many``), as ``around_enqueue`` sees it."""

    task: str
    queue: str
    count: int
    meta: dict[str, Any] = field(default_factory=dict)
    #: The ids of the jobs, once inserted (empty inside the hook before the insert ran).
    job_ids: list[int] = field(default_factory=list)
    #: Whether the insert ran on the caller's own connection (its transaction decides).
    transactional: bool = False


@dataclass(frozen=True)
class JobEnd:
    """How one attempt ended, as ``on_job_end`` sees it."""

    job: "JobContext"
    #: succeeded | retry | failed | cancelled
    status: str
    seconds: float
    #: Seconds the job waited between becoming runnable and starting.
    waited: float
    error_type: str | None = None


@dataclass(frozen=True)
class WorkerEvent:
    """Something a worker did: ``claim`` (jobs, seconds), ``heartbeat`` (ok), ``runner_dead``
    (runner_id, reason, silent_for), ``jobs_recovered`` (requeued, failed), ``maintenance``
    (seconds), ``lease`` (state), ``outcomes_written`` (written: (job id, attempt, status)
    triples, fenced_out: (job id, attempt) pairs; sent on the completer thread once the
    outcomes are committed, so a listener must be quick)."""

    name: str
    fields: dict[str, Any]


class Hooks:
    def __init__(self) -> None:
        self.enqueue_wrappers: list[Callable[[EnqueueCall], ContextManager[Any] | None]] = []
        self.job_wrappers: list[Callable[["JobContext"], ContextManager[Any] | None]] = []
        self.job_end_listeners: list[Callable[[JobEnd], None]] = []
        self.worker_listeners: list[Callable[[WorkerEvent], None]] = []

    # ----------------------------------------------------------- registering

    def around_enqueue(self, fn: Callable[[EnqueueCall], ContextManager[Any] | None]) -> Callable[..., Any]:
        self.enqueue_wrappers.append(fn)
        return fn

    def around_job(self, fn: Callable[["JobContext"], ContextManager[Any] | None]) -> Callable[..., Any]:
        self.job_wrappers.append(fn)
        return fn

    def on_job_end(self, fn: Callable[[JobEnd], None]) -> Callable[..., Any]:
        self.job_end_listeners.append(fn)
        return fn

    def on_worker_event(self, fn: Callable[[WorkerEvent], None]) -> Callable[..., Any]:
        self.worker_listeners.append(fn)
        return fn

    # --------------------------------------------------------------- running

    @contextlib.contextmanager
    def wrapping(self, wrappers: list[Callable[[Any], ContextManager[Any] | None]],
                 subject: Any) -> Iterator[None]:
        """Enter every wrapper's context manager around the block (in registration order).
        A wrapper that fails to produce or enter one is logged and skipped."""
        with contextlib.ExitStack() as stack:
            for wrapper in wrappers:
                try:
                    manager = wrapper(subject)
                    if manager is not None:
                        stack.enter_context(manager)
                except Exception:
                    logger.exception("hook %r failed; going on without it", wrapper)
            yield

    def job_ended(self, end: JobEnd) -> None:
        for listener in self.job_end_listeners:
            try:
                listener(end)
            except Exception:
                logger.exception("on_job_end hook %r failed", listener)

    def emit(self, name: str, **fields: Any) -> None:
        if not self.worker_listeners:
            return
        event = WorkerEvent(name, fields)
        for listener in self.worker_listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("on_worker_event hook %r failed", listener)
