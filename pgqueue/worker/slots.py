"""The runner's slots: the attempts it runs now, how each one ends, and nothing else.

An attempt holds a slot from the moment it is started until it *settles*: the task
returns or raises, its timeout passes, or it is abandoned (the runner lost its
lease, or is stopping). An attempt settles once; whatever comes second is ignored
(a task that returns after its timeout, say). Settling hands the outcome to the
completer, unless the attempt was abandoned, and wakes the claim loop.

Attempts are keyed by (job id, attempt): after a lost lease the same job can come
back under a new attempt while the old one's thread still runs.

Sync tasks run on an elastic thread pool, async tasks on one event loop thread. A
sync task past its timeout keeps its thread (Python cannot stop a thread) but gives
its slot back, and its late result is dropped (the outcome was written at the timeout);
``stuck`` counts such threads still running, and the runner restarts its process when they
pass ``max_stuck_threads``. An async task past its timeout is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import errors
from ..context import JobContext, reset_current, set_current
from ..hooks import JobEnd
from ..tasks import Task
from . import outcomes
from .executor import AsyncLoop, ElasticThreadPool

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger(__name__)

Key = tuple[int, int]  # (job id, attempt)
_END_STATUS = {"queued": "retry"}


def _error_type(error_json: str | None) -> str | None:
    if not error_json:
        return None
    try:
        return json.loads(error_json).get("type")
    except (ValueError, AttributeError):
        return None


@dataclass(eq=False)
class Attempt:
    job: outcomes.Claimed
    task: Task[..., Any] | None
    context: JobContext
    started: float
    deadline: float | None
    future: Any = None  # the concurrent.futures.Future of an async task
    settled: bool = False
    abandoned: bool = False
    stuck: bool = False  # a sync task past its timeout, its thread still running

    @property
    def key(self) -> Key:
        return (self.job.id, self.job.attempt)


def log_extra(job: outcomes.Claimed) -> dict[str, Any]:
    return {"job_id": job.id, "job_task": job.task, "job_attempt": job.attempt}


class Slots:
    def __init__(self, app: "App", *, concurrency: int, on_outcome: Callable[[outcomes.Outcome], None],
                 on_change: Callable[[], None]) -> None:
        self.app = app
        self.concurrency = concurrency
        self._on_outcome = on_outcome
        self._on_change = on_change
        self._lock = threading.Lock()
        self._attempts: dict[Key, Attempt] = {}
        self._pool = ElasticThreadPool()
        self._loop = AsyncLoop()
        self.stray_threads = 0  # sync tasks that ran past their timeout, in all
        self.stuck = 0  # ... whose thread still runs
        self.timed_out = 0

    # ------------------------------------------------------------ questions

    def free(self) -> int:
        with self._lock:
            return max(self.concurrency - len(self._attempts), 0)

    def busy(self) -> int:
        with self._lock:
            return len(self._attempts)

    def keys(self) -> set[Key]:
        with self._lock:
            return set(self._attempts)

    def next_deadline(self) -> float | None:
        with self._lock:
            deadlines = [a.deadline for a in self._attempts.values() if a.deadline is not None]
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------- starting

    def start(self, job: outcomes.Claimed, *, current_runner: Callable[[], int | None]) -> None:
        """Run a claimed attempt. If the runner's identity changed since the claim (lease
        lost meanwhile), the attempt starts abandoned: the reaper hands the job on."""
        task = self.app.tasks.get(job.task)
        timeout = task.config.timeout if task is not None else None
        now = time.monotonic()
        attempt = Attempt(job, task, JobContext(job.id, job.task, job.attempt, job.queue, job.runner_id,
                                                job.cancel_requested, job.meta, job.waited),
                          now, now + timeout if timeout else None)
        with self._lock:
            if current_runner() != job.runner_id:
                logger.warning("job %s: claimed just before this runner lost its lease; not run here",
                               job.id, extra=log_extra(job))
                return
            if attempt.key in self._attempts:
                # This very attempt runs here already: a server crash forgot its claim (claims
                # commit asynchronously) and this runner claimed the job again under the same
                # attempt number. The running one's outcome is this claim's: not run twice.
                logger.warning("job %s attempt %s: claimed again after a server crash forgot its "
                               "claim; it is running here already", job.id, job.attempt,
                               extra=log_extra(job))
                return
            self._attempts[attempt.key] = attempt
        if task is None:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            exc = errors.UnknownTask(f"task {job.task!r} is not registered in this worker's app "
                                     f"(known: {known}); deploy it, or fix the job's task name")
            self.settle(attempt, self._failure(attempt, exc))
        elif task.is_async:
            attempt.future = self._loop.submit(lambda: self._run_async(attempt))
            if attempt.context.cancel_requested:  # asked for while the future was being made
                attempt.future.cancel()
        else:
            self._pool.submit(lambda: self._run_sync(attempt))

    def _run_sync(self, attempt: Attempt) -> None:
        job = attempt.job
        token = set_current(attempt.context)
        hooks = self.app.hooks
        try:
            if hooks.job_wrappers:
                with hooks.wrapping(hooks.job_wrappers, attempt.context):
                    value = attempt.task.func(*job.args, **job.kwargs)  # type: ignore[union-attr]
            else:
                value = attempt.task.func(*job.args, **job.kwargs)  # type: ignore[union-attr]
        except BaseException as exc:
            outcome = self._failure(attempt, exc)
        else:
            outcome = self._success(attempt, value)
        finally:
            reset_current(token)
        if not self.settle(attempt, outcome):
            with self._lock:
                if attempt.stuck:
                    attempt.stuck = False
                    self.stuck -= 1
            logger.info("job %s: its thread returned after the attempt had ended (a timeout); its "
                        "outcome is dropped", job.id, extra=log_extra(job))

    async def _run_async(self, attempt: Attempt) -> None:
        job = attempt.job
        token = set_current(attempt.context)
        try:
            if attempt.context.cancel_requested:
                raise asyncio.CancelledError
            hooks = self.app.hooks
            if hooks.job_wrappers:
                with hooks.wrapping(hooks.job_wrappers, attempt.context):
                    value = await attempt.task.func(*job.args, **job.kwargs)  # type: ignore[union-attr]
            else:
                value = await attempt.task.func(*job.args, **job.kwargs)  # type: ignore[union-attr]
        except asyncio.CancelledError as exc:
            if attempt.context.cancel_requested:
                outcome = outcomes.cancelled(job, "cancelled while running (async task cancelled)")
            else:  # cancelled by its timeout or a shutdown, which settled it already
                outcome = self._failure(attempt, exc)
        except BaseException as exc:
            outcome = self._failure(attempt, exc)
        else:
            outcome = self._success(attempt, value)
        finally:
            reset_current(token)
        self.settle(attempt, outcome)

    # -------------------------------------------------------------- endings

    def _success(self, attempt: Attempt, value: Any) -> outcomes.Outcome:
        try:
            outcome = outcomes.succeeded(attempt.job, value, self.app.settings.max_result_bytes)
        except BaseException as exc:  # e.g. RecursionError on a deeply nested result
            return self._failure(attempt, exc)
        if attempt.context.cancel_requested and outcome.status == "succeeded":
            # Asked to stop, it returned (early, presumably): the job ends cancelled, and
            # what it returned is kept in `result`.
            return outcomes.Outcome(outcome.job_id, outcome.runner_id, outcome.attempt, "cancelled",
                                    result=outcome.result,
                                    reason="cancelled while running (the task returned after "
                                           "cancellation was requested)")
        return outcome

    def _failure(self, attempt: Attempt, exc: BaseException) -> outcomes.Outcome:
        task, job = attempt.task, attempt.job
        settings = self.app.settings
        try:
            outcome = outcomes.failed(
                job, exc,
                no_retry=task.config.no_retry if task is not None else (),
                retry_backoff=task.retry_backoff() if task is not None else settings.retry_backoff,
                retry_backoff_max=settings.retry_backoff_max,
                cancel_requested=attempt.context.cancel_requested,
            )
        except BaseException:  # describing the error failed (a broken __str__, say)
            try:
                outcome = outcomes.failed(
                    job, RuntimeError(f"task raised {type(exc).__qualname__}, which could not be described"),
                    no_retry=(), retry_backoff=settings.retry_backoff,
                    retry_backoff_max=settings.retry_backoff_max,
                    cancel_requested=attempt.context.cancel_requested,
                )
            except BaseException:  # never leave an attempt without an outcome (its slot would leak)
                outcome = outcomes.Outcome(job.id, job.runner_id, job.attempt, "failed",
                                           error='{"type": "RuntimeError", "message": "the task '
                                                 'failed and its error could not be described", '
                                                 '"traceback": ""}',
                                           failed=True, reason="failed: undescribable error")
        log = logger.warning if outcome.status == "queued" else logger.error
        log("job %s: %s", job.id, outcome.reason, extra=log_extra(job))
        return outcome

    def settle(self, attempt: Attempt, outcome: outcomes.Outcome | None) -> bool:
        """Record how an attempt ended; only the first call for an attempt counts."""
        with self._lock:
            if attempt.settled:
                return False
            attempt.settled = True
            if self._attempts.get(attempt.key) is attempt:
                del self._attempts[attempt.key]
            abandoned = attempt.abandoned
        if outcome is not None and not abandoned:
            self._on_outcome(outcome)
            if self.app.hooks.job_end_listeners:
                self.app.hooks.job_ended(JobEnd(
                    attempt.context, _END_STATUS.get(outcome.status, outcome.status),
                    time.monotonic() - attempt.started, attempt.job.waited,
                    _error_type(outcome.error)))
        self._on_change()
        return True

    def expire(self) -> None:
        """Settle attempts whose timeout has passed (run by the claim loop)."""
        now = time.monotonic()
        with self._lock:
            expired = [a for a in self._attempts.values()
                       if a.deadline is not None and a.deadline <= now and not a.settled]
        for attempt in expired:
            timeout = attempt.task.config.timeout  # type: ignore[union-attr]
            exc = TimeoutError(f"task {attempt.job.task!r} timed out after {timeout:g} s")
            if not self.settle(attempt, self._failure(attempt, exc)):
                continue
            self.timed_out += 1
            if attempt.future is not None:
                attempt.future.cancel()
            else:
                with self._lock:
                    self.stray_threads += 1
                    self.stuck += 1
                    attempt.stuck = True
                logger.warning("job %s timed out: its slot is given back, but its thread keeps running "
                               "until the task returns (its result will be discarded)", attempt.job.id,
                               extra=log_extra(attempt.job))

    def request_cancel(self, job_ids: list[int]) -> None:
        """job.cancel() was called for these running jobs: tell them."""
        wanted = set(job_ids)
        with self._lock:
            targets = [a for a in self._attempts.values()
                       if a.job.id in wanted and not a.context.cancel_requested]
            for attempt in targets:
                attempt.context._cancel = True
        for attempt in targets:
            logger.info("cancellation requested for job %s", attempt.job.id, extra=log_extra(attempt.job))
            if attempt.future is not None:
                attempt.future.cancel()

    def abandon(self, runner_id: int | None = None) -> int:
        """Stop caring about attempts (of ``runner_id``, or all): their outcomes will be dropped.
        Async ones are cancelled; sync ones run on and keep their slot until they return."""
        with self._lock:
            chosen = [a for a in self._attempts.values()
                      if not a.settled and (runner_id is None or a.job.runner_id == runner_id)]
            for attempt in chosen:
                attempt.abandoned = True
        for attempt in chosen:
            if attempt.future is not None:
                attempt.future.cancel()
        return len(chosen)

    def shutdown(self) -> None:
        self._pool.shutdown()
        self._loop.shutdown()
