"""``@pgq.task``: a task of the extension, bound at each call to the queue of ``current_app``.

A :class:`FlaskTask` is what ``@pgq.task`` returns. It is registered, under one name, on the
``pgqueue.App`` of every Flask app the extension serves; ``.enqueue()``, ``.options()``,
``.aenqueue()`` find the one of ``current_app`` and hand over to its ``pgqueue.Task`` (so
every argument check, option and statement is the core's). ``task.bound(app)`` is that
``pgqueue.Task``, for code that runs without an app context. Calling the task runs the
function here and now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import eager

if TYPE_CHECKING:
    import flask

    from ...app import App
    from ...jobs import Job
    from ...tasks import EnqueueOptions, Task
    from .extension import AppState, PgQueue


class FlaskTask:
    def __init__(self, extension: "PgQueue", func: Callable[..., Any], name: str,
                 options: dict[str, Any]) -> None:
        self.extension = extension
        self.func = func
        self.name = name
        self._options = options
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<FlaskTask {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def _register_on(self, app: "App") -> None:
        app.task(name=self.name, **self._options)(self.func)

    def bound(self, app: "flask.Flask | None" = None) -> "Task[..., Any]":
        """This task on the queue of ``app`` (default: ``current_app``): a ``pgqueue.Task``."""
        return self.extension.get_app(app).tasks[self.name]

    def options(self, **options: Any) -> "FlaskEnqueueOptions":
        """As ``pgqueue.Task.options``: delay, run_at, priority, queue, key, max_attempts, meta,
        conn (``db.session``, an SQLAlchemy ``Connection``, a psycopg connection...)."""
        state = self.extension.state()
        return FlaskEnqueueOptions(state, state.app.tasks[self.name].options(**options))

    def enqueue(self, *args: Any, **kwargs: Any) -> "Job":
        return self.options().enqueue(*args, **kwargs)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> "Job":
        return await self.options().aenqueue(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any]) -> list["Job"]:
        return self.options().enqueue_many(calls)

    async def aenqueue_many(self, calls: Iterable[Any]) -> list["Job"]:
        return await self.options().aenqueue_many(calls)


class FlaskEnqueueOptions:
    """The core's ``EnqueueOptions`` for the current app, plus the eager mode."""

    def __init__(self, state: "AppState", options: "EnqueueOptions") -> None:
        self._state = state
        self.core = options

    def __repr__(self) -> str:
        return f"<FlaskEnqueueOptions {self.core!r}>"

    def options(self, **options: Any) -> "FlaskEnqueueOptions":
        return FlaskEnqueueOptions(self._state, self.core.options(**options))

    def enqueue(self, *args: Any, **kwargs: Any) -> "Job":
        job = self.core.enqueue(*args, **kwargs)
        eager.enqueued(self._state, self.core.conn)
        return job

    async def aenqueue(self, *args: Any, **kwargs: Any) -> "Job":
        job = await self.core.aenqueue(*args, **kwargs)
        await eager.aenqueued(self._state, self.core.conn)
        return job

    def enqueue_many(self, calls: Iterable[Any]) -> list["Job"]:
        jobs = self.core.enqueue_many(calls)
        eager.enqueued(self._state, self.core.conn)
        return jobs

    async def aenqueue_many(self, calls: Iterable[Any]) -> list["Job"]:
        jobs = await self.core.aenqueue_many(calls)
        await eager.aenqueued(self._state, self.core.conn)
        return jobs
