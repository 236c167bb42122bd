"""Running ``django.tasks`` tasks in pgqueue's worker, and Django's hygiene around every task.

A ``django.tasks`` job is stored under its task's module path (``myapp.tasks.send_email``);
the worker finds the task there (:func:`resolve_django_task`) and runs it through an adapter,
a pgqueue task whose function:

1. reads the job's ``TaskResult`` (status RUNNING, this attempt's runner in ``worker_ids``) on
   Django's connection and sends ``task_started``;
2. calls the task's function, with a ``TaskContext`` first when the task ``takes_context``;
3. leaves ``task_finished`` to :class:`FinishedSignals`, sent once the attempt's outcome is
   committed (the ``outcomes_written`` worker event), with the ``TaskResult`` read back: a
   receiver that looks the result up finds what it was told.

Every task, of either kind, runs between two ``close_old_connections()`` (and a
``reset_queries()``, so ``DEBUG=True`` does not grow memory): a connection the server closed
while the worker sat idle, or one past ``CONN_MAX_AGE``, is replaced before the task uses it.
Sync tasks get that from an ``around_job`` hook on their own thread; async tasks through
``sync_to_async(thread_sensitive=True)``, on the thread where their ORM calls run.

Signals are sent with ``send_robust``: a receiver that raises is logged, and fails no task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ...context import current_job
from ...tasks import Task, TaskConfig

if TYPE_CHECKING:
    from ...context import JobContext
    from ...hooks import WorkerEvent
    from .application import DjangoApp

logger = logging.getLogger(__name__)

_adapting = threading.Lock()


def resolve_django_task(app: "DjangoApp", name: str) -> Task[..., Any] | None:
    """The adapter of the ``django.tasks`` task at module path ``name``, or None."""
    if "." not in name:
        return None
    try:
        from . import compat, results
    except ImportError:  # no django.tasks here
        return None
    try:
        found = results.resolve_task(name)
    except Exception:  # the module raised while being imported
        logger.exception("importing the task %r failed", name)
        return None
    if found is None or not isinstance(found, compat.TASK_CLASSES):
        return None
    return adapt(app, found)


def adapt(app: "DjangoApp", django_task: Any) -> Task[..., Any]:
    """The pgqueue task that runs ``django_task`` (one per module path, made once)."""
    name = django_task.module_path
    with _adapting:
        existing = dict.get(app.tasks, name)
        if existing is not None:
            if getattr(existing, "django_task", None) is None:
                from ... import errors

                raise errors.ConfigurationError(
                    f"{name} names both a pgqueue task (@app.task) and a django.tasks task: "
                    "give the pgqueue one another name, @app.task(name=...)")
            return existing
        from . import results

        base = results.resolve_task(name) or django_task  # the module-level task
        config = TaskConfig(
            name=name, queue=base.queue_name, priority=base.priority,
            max_attempts=getattr(base, "max_attempts", None),
            retry_backoff=getattr(base, "retry_backoff", None),
            timeout=getattr(base, "timeout", None),
        )
        adapter: Task[..., Any] = Task(app, _runner(app, base), config)
        adapter.django_task = base  # type: ignore[attr-defined]
        dict.__setitem__(app.tasks, name, adapter)
        return adapter


def _call_signature(django_task: Any) -> inspect.Signature | None:
    """The task's signature as callers see it (without ``context``)."""
    try:
        signature = inspect.signature(django_task.func)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    if django_task.takes_context and params:
        params = params[1:]
    return signature.replace(parameters=params)


def _runner(app: "DjangoApp", django_task: Any) -> Callable[..., Any]:
    func = django_task.func
    takes_context = django_task.takes_context

    if inspect.iscoroutinefunction(func):
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            from asgiref.sync import sync_to_async

            result = await sync_to_async(_start, thread_sensitive=True)(app, django_task, True)
            try:
                if takes_context:
                    from .compat import TaskContext

                    return await func(TaskContext(task_result=result), *args, **kwargs)
                return await func(*args, **kwargs)
            finally:
                await sync_to_async(_close_old_connections, thread_sensitive=True)()

        runner: Callable[..., Any] = run_async
    else:
        def run(*args: Any, **kwargs: Any) -> Any:
            result = _start(app, django_task, False)  # the around_job hook cleaned up already
            if takes_context:
                from .compat import TaskContext

                return func(TaskContext(task_result=result), *args, **kwargs)
            return func(*args, **kwargs)

        runner = run
    runner.__name__ = getattr(func, "__name__", "task")
    runner.__qualname__ = getattr(func, "__qualname__", runner.__name__)
    runner.__module__ = getattr(func, "__module__", None)  # type: ignore[assignment]
    runner.__doc__ = func.__doc__
    signature = _call_signature(django_task)
    if signature is not None:
        runner.__signature__ = signature  # type: ignore[attr-defined]
    return runner


def _backend_for(django_task: Any, alias: str) -> Any:
    if alias == django_task.backend:
        return django_task.get_backend()
    from .compat import task_backends

    return task_backends[alias]


def _start(app: "DjangoApp", django_task: Any, cleanup: bool) -> Any:
    """This attempt's TaskResult (RUNNING), after sending ``task_started``."""
    from . import compat, dbconn, results

    if cleanup:
        _close_old_connections()
        _reset_queries()
    job = current_job()
    if job is None:  # called outside the worker (a test calling task.func directly, say)
        raise RuntimeError(f"{django_task.module_path} is run by pgqueue's worker")
    alias = results.backend_of(job.meta) or django_task.backend
    backend = _backend_for(django_task, alias)
    schema = app.settings.schema
    fetch = dbconn.DjangoFetch(dbconn.connection_for(app.database_alias), schema)
    row = results.fetch_row(fetch, schema, job.id)
    if row is None:
        raise RuntimeError(f"job {job.id} is gone from the database")
    result = results.build(row, django_task, alias)
    app.finished_signals.expect(job.id, job.attempt, django_task, alias, type(backend))
    _send(compat.task_started, type(backend), result)
    return result


def _send(signal: Any, sender: type, result: Any) -> None:
    for receiver, response in signal.send_robust(sender=sender, task_result=result):
        if isinstance(response, BaseException):
            logger.error("a %s receiver (%r) raised for task result %s", _signal_name(signal),
                         receiver, result.id, exc_info=response)


def _signal_name(signal: Any) -> str:
    from . import compat

    for name in ("task_enqueued", "task_started", "task_finished"):
        if getattr(compat, name) is signal:
            return name
    return "signal"


def _close_old_connections() -> None:
    from django.db import close_old_connections

    close_old_connections()


def _reset_queries() -> None:
    from django.db import reset_queries

    reset_queries()


# ------------------------------------------------------------- hygiene hook

def job_scope(job: "JobContext") -> contextlib.AbstractContextManager[None] | None:
    """``around_job``: fresh Django connections and an empty query log around a sync task.
    (An async task's own wrapper does it, on the thread its ORM calls use.)"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _sync_scope()
    return None


@contextlib.contextmanager
def _sync_scope() -> Iterator[None]:
    _close_old_connections()
    _reset_queries()
    try:
        yield
    finally:
        _reset_queries()
        _close_old_connections()


def with_async_hygiene(func: Callable[..., Any]) -> Callable[..., Any]:
    """An ``async def`` task of the App, between two ``close_old_connections()``."""

    @functools.wraps(func)
    async def task(*args: Any, **kwargs: Any) -> Any:
        from asgiref.sync import sync_to_async

        await sync_to_async(_close_old_connections, thread_sensitive=True)()
        try:
            return await func(*args, **kwargs)
        finally:
            await sync_to_async(_close_old_connections, thread_sensitive=True)()

    return task


# ---------------------------------------------------------------- finished

_STOP = object()


class FinishedSignals:
    """Sends ``task_finished`` for django.tasks attempts once their outcome is committed, on a
    thread of its own (receivers never hold up the worker's writes), in the order written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected: dict[tuple[int, int], tuple[Any, str, type]] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._unsent = 0
        self.app: "DjangoApp | None" = None

    def expect(self, job_id: int, attempt: int, django_task: Any, alias: str, sender: type) -> None:
        with self._lock:
            self._expected[(job_id, attempt)] = (django_task, alias, sender)

    def on_worker_event(self, event: "WorkerEvent") -> None:
        """The ``on_worker_event`` hook (on the completer thread: quick)."""
        if event.name != "outcomes_written":
            return
        ready = []
        with self._lock:
            for job_id, attempt, _status in event.fields.get("written", ()):
                found = self._expected.pop((job_id, attempt), None)
                if found is not None:
                    ready.append((job_id, *found))
            for key in event.fields.get("fenced_out", ()):
                self._expected.pop(tuple(key), None)  # reclaimed: the next attempt says
            if not ready:
                return
            self._unsent += len(ready)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="pgqueue-django-signals",
                                                daemon=True)
                self._thread.start()
        for item in ready:
            self._queue.put(item)

    def drain(self, timeout: float) -> bool:
        """Wait until every signal due so far was sent (a stopping worker); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unsent == 0, timeout)

    def _loop(self) -> None:
        from . import compat, dbconn, results

        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job_id, django_task, alias, sender = item
            try:
                _close_old_connections()
                app = self.app
                assert app is not None
                schema = app.settings.schema
                fetch = dbconn.DjangoFetch(dbconn.connection_for(app.database_alias), schema)
                row = results.fetch_row(fetch, schema, job_id)
                if row is not None:
                    _send(compat.task_finished, sender, results.build(row, django_task, alias))
            except Exception:
                logger.exception("could not send task_finished for job %s", job_id,
                                 extra={"job_id": job_id})
            finally:
                with self._idle:
                    self._unsent -= 1
                    self._idle.notify_all()
