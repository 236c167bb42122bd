"""Tasks and how they are enqueued: ``@app.task``, ``task.enqueue``, ``task.options(...)``.

Transactional guarantee: ``task.options(conn=c).enqueue(...)`` runs the INSERT on the
caller's connection ``c`` and never commits or rolls it back. The job exists exactly
when the caller's transaction commits, and vanishes with it on rollback. Workers are
woken by a NOTIFY that PostgreSQL delivers only at that commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Mapping, ParamSpec, TypeVar

from . import errors, serialization
from .jobs import Job

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class TaskConfig:
    """What ``@app.task(...)`` fixes for a task; enqueue options can override some of it."""

    name: str
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int | None = None  # None: the App's max_attempts setting
    retry_backoff: float | None = None  # None: the App's retry_backoff setting
    timeout: float | None = None
    no_retry: tuple[type[BaseException], ...] = ()


def validate_queue(queue: Any) -> str:
    if not isinstance(queue, str) or not queue.strip() or queue != queue.strip():
        raise errors.ConfigurationError(f"queue must be a non-empty name without surrounding spaces, not {queue!r}")
    return queue


def validate_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not _INT32[0] <= priority <= _INT32[1]:
        raise errors.ConfigurationError(f"priority must be a whole number (32-bit), not {priority!r}")
    return priority


def validate_max_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.ConfigurationError(f"max_attempts must be a whole number >= 1, not {value!r}")
    return value


def _validate_seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise errors.ConfigurationError(f"{name} must be a number of seconds {bound}, not {value!r}")
    return float(value)


class Task(Generic[P, R]):
    """A function registered with ``@app.task``. Calling it runs it here and now."""

    def __init__(self, app: "App", func: Callable[P, R], config: TaskConfig) -> None:
        self.app = app
        self.func = func
        self.config = config
        self.is_async = asyncio.iscoroutinefunction(func)
        self.check_call = serialization.CallCheck(func, config.name)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.config.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def options(self, **options: Any) -> "EnqueueOptions":
        """Options for the next enqueue: delay, run_at, priority, queue, key, max_attempts, conn."""
        return EnqueueOptions(self).options(**options)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Store a job that runs this task with these (JSON-serialisable) arguments."""
        return EnqueueOptions(self).enqueue(*args, **kwargs)

    def max_attempts(self) -> int:
        return self.config.max_attempts or self.app.settings.max_attempts

    def retry_backoff(self) -> float:
        if self.config.retry_backoff is not None:
            return self.config.retry_backoff
        return self.app.settings.retry_backoff


_OPTION_NAMES = ("delay", "run_at", "priority", "queue", "key", "max_attempts", "conn")


@dataclass(frozen=True)
class EnqueueOptions:
    """Immutable enqueue options bound to a task; ``.options()`` returns a new one."""

    task: Task[..., Any]
    delay: float | None = None
    run_at: dt.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    key: str | None = None
    max_attempts: int | None = None
    conn: Any = field(default=None, compare=False)

    def options(self, **options: Any) -> "EnqueueOptions":
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise errors.ConfigurationError(
                f"unknown enqueue option {unknown[0]!r}; options are: {', '.join(_OPTION_NAMES)} "
                "(task arguments go to .enqueue())"
            )
        new = dataclasses.replace(self, **options)
        new._validate()
        return new

    def _validate(self) -> None:
        if self.delay is not None:
            _validate_seconds("delay", self.delay)
        if self.run_at is not None:
            if not isinstance(self.run_at, dt.datetime) or self.run_at.tzinfo is None \
                    or self.run_at.utcoffset() is None:
                raise errors.ConfigurationError(
                    f"run_at must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), "
                    f"not {self.run_at!r}"
                )
        if self.delay is not None and self.run_at is not None:
            raise errors.ConfigurationError("give delay or run_at, not both")
        if self.priority is not None:
            validate_priority(self.priority)
        if self.queue is not None:
            validate_queue(self.queue)
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise errors.ConfigurationError(f"key must be a non-empty string, not {self.key!r}")
        if self.max_attempts is not None:
            validate_max_attempts(self.max_attempts)

    def _params(self) -> dict[str, Any]:
        config = self.task.config
        return {
            "queue": self.queue or config.queue,
            "task": config.name,
            "priority": config.priority if self.priority is None else self.priority,
            "run_at": self.run_at,
            "delay": self.delay or 0.0,
            "max_attempts": self.max_attempts or self.task.max_attempts(),
            "key": self.key,
        }

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        task = self.task
        task.check_call(args, kwargs)
        args_json, kwargs_json = serialization.encode_call(task.func, task.name, args, kwargs)
        params = self._params()
        params["args"], params["kwargs"] = args_json, kwargs_json
        return task.app._insert_job(params, conn=self.conn)

    def enqueue_many(self, calls: Iterable[Any]) -> list[Job]:
        """Enqueue one job per item, in one statement: a tuple/list of positional arguments,
        or a dict of keyword arguments, per item."""
        if self.key is not None:
            raise errors.ConfigurationError(
                "key= names one job; enqueue jobs with keys one at a time with .enqueue()"
            )
        task = self.task
        all_args: list[Any] = []
        all_kwargs: list[Any] = []
        for index, call in enumerate(calls):
            if isinstance(call, (tuple, list)):
                args, kwargs = call, {}
            elif isinstance(call, Mapping):
                args, kwargs = (), call if isinstance(call, dict) else dict(call)
            else:
                raise errors.InvalidArguments(
                    f"item {index} of enqueue_many for task {task.name!r} is of type "
                    f"{type(call).__name__}: give a tuple of positional arguments or a dict of "
                    "keyword arguments per job (wrap a single argument: (value,))"
                )
            try:
                task.check_call(args, kwargs)
            except errors.InvalidArguments as exc:
                raise errors.InvalidArguments(f"item {index}: {exc}") from None
            all_args.append(args)
            all_kwargs.append(kwargs)
        # One JSON document per column: one encoder call here, one parse in PostgreSQL.
        try:
            args_json = serialization.dumps(all_args)
            kwargs_json = serialization.dumps(all_kwargs) if any(all_kwargs) else None
            if serialization.has_non_string_keys(all_args) or serialization.has_non_string_keys(all_kwargs):
                raise ValueError("a dict key is not a string")
        except (TypeError, ValueError):
            for index, (args, kwargs) in enumerate(zip(all_args, all_kwargs)):
                try:
                    serialization.encode_call(task.func, task.name, args, kwargs)
                except errors.ArgumentNotSerializable as exc:
                    raise errors.ArgumentNotSerializable(f"item {index}: {exc}") from None
            raise
        serialization.check_encodable(args_json, f"an argument of task {task.name!r}")
        if kwargs_json is not None:
            serialization.check_encodable(kwargs_json, f"a keyword argument of task {task.name!r}")
        params = self._params()
        params["args"], params["kwargs"], params["count"] = args_json, kwargs_json, len(all_args)
        return task.app._insert_jobs(params, conn=self.conn)
