"""Tasks and how they are enqueued: ``@app.task``, ``task.enqueue``, ``task.options(...)``.

Transactional guarantee: ``task.options(conn=c).enqueue(...)`` runs the INSERT on the
caller's connection ``c`` and never commits or rolls it back. The job exists exactly
when the caller's transaction commits, and vanishes with it on rollback. Workers are
woken by a NOTIFY that PostgreSQL delivers only at that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, Mapping, ParamSpec, TypeVar

from . import errors, serialization
from .hooks import EnqueueCall
from .jobs import Job

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
_INT32 = (-(2**31), 2**31 - 1)
# Longest names the schema accepts (CHECK constraints of the jobs table): longer ones would not
# fit a btree index entry.
MAX_QUEUE_LENGTH = 128
MAX_TASK_NAME_LENGTH = 255
MAX_KEY_LENGTH = 512


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
    #: Per-key serial execution: a lock key, or a function of the task's arguments giving one.
    lock: str | Callable[..., str | None] | None = None
    lock_limit: int = 1


KEY_SCOPES = ("active", "queued", "period")
ON_CONFLICT = ("return", "replace", "skip")


def validate_lock(lock: Any) -> str | Callable[..., Any]:
    if callable(lock):
        return lock
    try:
        return validate_key(lock)
    except errors.ConfigurationError:
        raise errors.ConfigurationError(
            f"lock must be a non-empty string of at most {MAX_KEY_LENGTH} characters (e.g. "
            f"'customer:42'), or a function of the task's arguments returning one, not {lock!r}") from None


def validate_lock_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _INT32[1]:
        raise errors.ConfigurationError(f"lock_limit must be a whole number >= 1, not {value!r}")
    return value


def validate_queue(queue: Any) -> str:
    if not isinstance(queue, str) or not queue.strip() or queue != queue.strip():
        raise errors.ConfigurationError(f"queue must be a non-empty name without surrounding spaces, not {queue!r}")
    if len(queue) > MAX_QUEUE_LENGTH or "\x00" in queue:
        raise errors.ConfigurationError(
            f"queue names are at most {MAX_QUEUE_LENGTH} characters, without NUL characters; "
            f"{queue[:40]!r}... has {len(queue)}")
    return queue


def validate_task_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise errors.ConfigurationError(f"task name must be a non-empty string, not {name!r}")
    if len(name) > MAX_TASK_NAME_LENGTH or "\x00" in name:
        raise errors.ConfigurationError(
            f"task names are at most {MAX_TASK_NAME_LENGTH} characters, without NUL characters; "
            f"{name[:40]!r}... has {len(name)}: give @app.task(name=...)")
    return name


def validate_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise errors.ConfigurationError(f"key must be a non-empty string, not {key!r}")
    if len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise errors.ConfigurationError(
            f"keys are at most {MAX_KEY_LENGTH} characters, without NUL characters; "
            f"{key[:40]!r}... has {len(key)}: hash a long key (e.g. hashlib.sha256(...).hexdigest())")
    return key


def seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """A number of seconds, or a timedelta."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    return _validate_seconds(name, value, allow_zero=allow_zero)


def validate_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not _INT32[0] <= priority <= _INT32[1]:
        raise errors.ConfigurationError(f"priority must be a whole number (32-bit), not {priority!r}")
    return priority


def validate_max_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.ConfigurationError(f"max_attempts must be a whole number >= 1, not {value!r}")
    return value


# Ten years: a delay or timeout beyond it is a mistake (and would not fit an interval).
MAX_SECONDS = 10 * 365 * 86400


def _validate_seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero) or value > MAX_SECONDS:
        bound = ">= 0" if allow_zero else "> 0"
        raise errors.ConfigurationError(
            f"{name} must be a number of seconds {bound} and at most ten years (or a timedelta), "
            f"not {value!r}")
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
        """Options for the next enqueue: delay, run_at, priority, queue, key (with key_scope,
        key_period, on_conflict, debounce, debounce_max), lock, lock_limit, max_attempts,
        meta, conn."""
        return EnqueueOptions(self).options(**options)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Store a job that runs this task with these (JSON-serialisable) arguments."""
        return EnqueueOptions(self).enqueue(*args, **kwargs)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job | None:
        """``enqueue`` for asyncio code: on the App's async pool, never blocking the loop."""
        return await EnqueueOptions(self).aenqueue(*args, **kwargs)

    def max_attempts(self) -> int:
        return self.config.max_attempts or self.app.settings.max_attempts

    def retry_backoff(self) -> float:
        if self.config.retry_backoff is not None:
            return self.config.retry_backoff
        return self.app.settings.retry_backoff


_OPTION_NAMES = ("delay", "run_at", "priority", "queue", "key", "key_scope", "key_period", "on_conflict",
                 "debounce", "debounce_max", "lock", "lock_limit", "max_attempts", "meta", "conn")
_DURATIONS = ("delay", "key_period", "debounce", "debounce_max")


@dataclass(frozen=True)
class EnqueueOptions:
    """Immutable enqueue options bound to a task; ``.options()`` returns a new one."""

    task: Task[..., Any]
    delay: float | None = None
    run_at: dt.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    key: str | None = None
    key_scope: str | None = None
    key_period: float | None = None
    on_conflict: str | None = None
    debounce: float | None = None
    debounce_max: float | None = None
    lock: str | Callable[..., Any] | None = None
    lock_limit: int | None = None
    max_attempts: int | None = None
    meta: Mapping[str, Any] | None = None
    conn: Any = field(default=None, compare=False)

    def options(self, **options: Any) -> "EnqueueOptions":
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], _OPTION_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise errors.ConfigurationError(
                f"unknown enqueue option {unknown[0]!r}{hint} Options are: {', '.join(_OPTION_NAMES)} "
                "(task arguments go to .enqueue())"
            )
        for name in _DURATIONS:
            if isinstance(options.get(name), dt.timedelta):
                options[name] = seconds(name, options[name])
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
        if self.key is not None:
            validate_key(self.key)
        if self.max_attempts is not None:
            validate_max_attempts(self.max_attempts)
        self._validate_flow_control()
        if self.meta is not None:
            if not isinstance(self.meta, Mapping):
                raise errors.ConfigurationError(f"meta must be a dict (a JSON object), not {self.meta!r}")
            serialization.encode_meta(self.meta)

    def _validate_flow_control(self) -> None:
        scope = self.key_scope
        if scope is not None and scope not in KEY_SCOPES:
            raise errors.ConfigurationError(f"key_scope must be one of {', '.join(KEY_SCOPES)}, not {scope!r}")
        if self.on_conflict is not None and self.on_conflict not in ON_CONFLICT:
            raise errors.ConfigurationError(
                f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {self.on_conflict!r}")
        if self.key_period is not None:
            _validate_seconds("key_period", self.key_period, allow_zero=False)
        if self.debounce is not None:
            _validate_seconds("debounce", self.debounce, allow_zero=False)
        if self.debounce_max is not None:
            _validate_seconds("debounce_max", self.debounce_max, allow_zero=False)
        if self.lock is not None:
            validate_lock(self.lock)
        if self.lock_limit is not None:
            validate_lock_limit(self.lock_limit)

    def _check_combination(self) -> None:
        """Options that only make sense together; checked at enqueue (``options()`` may be
        chained in any order)."""
        scope = self.key_scope or "active"
        if self.key is None:
            for name in ("key_scope", "key_period", "on_conflict", "debounce"):
                if getattr(self, name) is not None and not (name == "key_scope" and scope == "active"):
                    raise errors.ConfigurationError(f"{name}= needs a key= (it is about the jobs sharing a key)")
        if scope == "period" and self.key_period is None:
            raise errors.ConfigurationError(
                "key_scope='period' needs key_period= (e.g. timedelta(hours=1): one job per key per hour)")
        if self.key_period is not None and scope != "period":
            raise errors.ConfigurationError("key_period= goes with key_scope='period'")
        if scope == "period" and self.on_conflict == "replace":
            raise errors.ConfigurationError(
                "on_conflict='replace' does not go with key_scope='period' (the period's job may "
                "have run already); use 'return' or 'skip'")
        if self.debounce is not None:
            if scope not in ("active", "queued") or self.key_scope == "active" \
                    or self.on_conflict not in (None, "replace"):
                raise errors.ConfigurationError(
                    "debounce= collapses the enqueues of a key into its queued job (key_scope "
                    "'queued', on_conflict 'replace'): leave key_scope and on_conflict out")
            if self.delay is not None or self.run_at is not None:
                raise errors.ConfigurationError("debounce= sets the run time itself: leave delay and run_at out")
        if self.debounce_max is not None:
            if self.debounce is None:
                raise errors.ConfigurationError("debounce_max= goes with debounce=")
            if self.debounce_max < self.debounce:
                raise errors.ConfigurationError(
                    f"debounce_max ({self.debounce_max:g} s) must be at least debounce ({self.debounce:g} s)")

    def _lock_key(self, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> str | None:
        lock = self.lock if self.lock is not None else self.task.config.lock
        if lock is None or isinstance(lock, str):
            return lock
        try:
            value = lock(*args, **kwargs)
        except Exception as exc:
            raise errors.ConfigurationError(
                f"the lock function of task {self.task.name!r} failed on these arguments: "
                f"{type(exc).__name__}: {exc}") from exc
        if value is None:
            return None
        try:
            return validate_key(value)
        except errors.ConfigurationError:
            raise errors.ConfigurationError(
                f"the lock function of task {self.task.name!r} returned {value!r}: it must return a "
                f"non-empty string of at most {MAX_KEY_LENGTH} characters, or None for no lock") from None

    def _params(self) -> dict[str, Any]:
        config = self.task.config
        return {
            "queue": self.queue or config.queue,
            "task": config.name,
            "priority": config.priority if self.priority is None else self.priority,
            "run_at": self.run_at,
            "delay": self.delay,
            "max_attempts": self.max_attempts or self.task.max_attempts(),
            "key": self.key,
            "key_scope": "queued" if self.debounce is not None else (self.key_scope or "active"),
            "key_period": self.key_period,
            "on_conflict": "replace" if self.debounce is not None else (self.on_conflict or "return"),
            "debounce": self.debounce,
            "debounce_max": self.debounce_max,
            "lock": None,
            "lock_limit": self.lock_limit or config.lock_limit,
            "meta": serialization.encode_meta(self.meta) if self.meta else None,
        }

    def _insert(self, params: dict[str, Any], count: int,
                insert: Callable[[dict[str, Any]], list[int]]) -> list[int]:
        """Run ``insert`` inside the App's ``around_enqueue`` hooks, if any."""
        with self._around_enqueue(params, count) as call:
            ids = insert(params)
            if call is not None:
                call.job_ids = ids
        return ids

    @contextlib.contextmanager
    def _around_enqueue(self, params: dict[str, Any], count: int) -> Iterator[EnqueueCall | None]:
        """The App's ``around_enqueue`` hooks around an insert (sync or async): yields the
        call (None when no hook is registered), whose ``job_ids`` the caller sets."""
        app = self.task.app
        if not app.hooks.enqueue_wrappers:
            yield None
            return
        call = EnqueueCall(self.task.name, params["queue"], count, dict(self.meta or {}),
                           transactional=self.conn is not None)
        with app.hooks.wrapping(app.hooks.enqueue_wrappers, call):
            params["meta"] = serialization.encode_meta(call.meta) if call.meta else None
            yield call

    def _check_size(self, *texts: str | None) -> None:
        limit = self.task.app.settings.max_args_bytes
        total = sum(len(t) for t in texts if t)
        if total * 4 <= limit:  # a character takes at most 4 bytes: no need to encode
            return
        size = sum(len(t.encode("utf-8")) for t in texts if t)
        if size > limit:
            raise errors.ArgumentNotSerializable(
                f"the arguments of task {self.task.name!r} take {size} bytes as JSON, over "
                f"max_args_bytes ({limit}): pass a reference (an id, a path, a URL) instead of the "
                "data, or raise the setting")

    def enqueue(self, *args: Any, **kwargs: Any) -> Job | None:
        """Store the job; returns its handle. With a key another job holds: that job
        (``job.created`` is False; ``job.replaced`` says whether its arguments were replaced),
        or None with ``on_conflict='skip'``."""
        task = self.task
        params = self._call_params(args, kwargs)
        outcome: list[tuple[bool, bool]] = []

        def insert(p: dict[str, Any]) -> list[int]:
            job_id, was_created, replaced = task.app.store.enqueue(p, conn=self.conn)
            outcome.append((was_created, replaced))
            return [] if job_id is None else [job_id]

        ids = self._insert(params, 1, insert)
        if not ids:
            return None  # on_conflict='skip': the key is taken
        return Job(task.app, ids[0], created=outcome[0][0], replaced=outcome[0][1])

    async def aenqueue(self, *args: Any, **kwargs: Any) -> Job | None:
        """``enqueue`` for asyncio code, on the App's async pool or on ``conn`` (a psycopg
        ``AsyncConnection``, an SQLAlchemy ``AsyncConnection``/``AsyncSession``): same checks,
        same statement, same transactional guarantee (see ``pgqueue.aio``)."""
        from . import aio

        return await aio.enqueue(self, args, kwargs)

    def _call_params(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """The checked parameters of one job's insert (the sync and async paths share them)."""
        task = self.task
        task.check_call(args, kwargs)
        self._check_combination()
        args_json, kwargs_json = serialization.encode_call(task.func, task.name, args, kwargs)
        self._check_size(args_json, kwargs_json)
        params = self._params()
        params["lock"] = self._lock_key(args, kwargs)
        params["args"], params["kwargs"] = args_json, kwargs_json
        return params

    def enqueue_many(self, calls: Iterable[Any]) -> list[Job]:
        """Enqueue one job per item, in one statement: a tuple/list of positional arguments,
        or a dict of keyword arguments, per item."""
        task = self.task
        params = self._many_params(calls)
        ids = self._insert(params, params["count"],
                           lambda p: task.app.store.enqueue_many(p, conn=self.conn))
        return [Job(task.app, job_id) for job_id in ids]

    async def aenqueue_many(self, calls: Iterable[Any]) -> list[Job]:
        """``enqueue_many`` for asyncio code (see ``aenqueue``)."""
        from . import aio

        return await aio.enqueue_many(self, calls)

    def _many_params(self, calls: Iterable[Any]) -> dict[str, Any]:
        """The checked parameters of a bulk insert (the sync and async paths share them)."""
        for name in ("key", "debounce", "lock"):
            if getattr(self, name) is not None:
                raise errors.ConfigurationError(
                    f"{name}= is about one job at a time; enqueue such jobs one by one with .enqueue()")
        if self.task.config.lock is not None:
            raise errors.ConfigurationError(
                f"task {self.task.name!r} has a lock: enqueue its jobs one by one with .enqueue() "
                "(each takes its place in its lock's order)")
        task = self.task
        all_args: list[Any] = []
        all_kwargs: list[Any] = []
        calls = calls if isinstance(calls, list) else list(calls)
        if all(type(call) is tuple for call in calls):
            # The common bulk form, positional arguments only: whether a call binds depends
            # on its number of arguments alone, so one check per length covers them all.
            by_length = {len(call): index for index, call in enumerate(calls)}
            for length, index in sorted(by_length.items()):
                try:
                    task.check_call(calls[index], {})
                except errors.InvalidArguments as exc:
                    first = next(i for i, call in enumerate(calls) if len(call) == length)
                    raise errors.InvalidArguments(f"item {first}: {exc}") from None
            all_args, all_kwargs, calls = calls, [{}] * len(calls), []
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
            # Only a dict can hide a non-string key: without one in the JSON (no "{" beyond the
            # keyword dicts themselves, whose keys the signature check saw) there is none.
            if ("{" in args_json and serialization.has_non_string_keys(all_args)) or (
                    kwargs_json is not None and kwargs_json.count("{") > len(all_kwargs)
                    and serialization.has_non_string_keys(all_kwargs)):
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
        if serialization.has_nul(args_json) or (kwargs_json is not None and serialization.has_nul(kwargs_json)):
            for index, (args, kwargs) in enumerate(zip(all_args, all_kwargs)):
                try:
                    serialization.encode_call(task.func, task.name, args, kwargs)
                except errors.ArgumentNotSerializable as exc:
                    raise errors.ArgumentNotSerializable(f"item {index}: {exc}") from None
        limit = task.app.settings.max_args_bytes
        if (len(args_json) + len(kwargs_json or "")) * 4 > limit:
            # The whole batch could hold one job over the limit: look at each.
            for index, (args, kwargs) in enumerate(zip(all_args, all_kwargs)):
                try:
                    self._check_size(serialization.dumps(list(args)), serialization.dumps(dict(kwargs)))
                except errors.ArgumentNotSerializable as exc:
                    raise errors.ArgumentNotSerializable(f"item {index}: {exc}") from None
        params = self._params()
        params["args"], params["kwargs"], params["count"] = args_json, kwargs_json, len(all_args)
        return params
