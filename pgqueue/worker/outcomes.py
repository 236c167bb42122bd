"""What an attempt's ending means for its job: succeeded, retried later, failed, cancelled.

Pure functions, no database: the runner builds an :class:`Outcome` and the hot path
writes batches of them with one fenced statement (``job_finish``).

Retry policy: an attempt that raises counts one failure; the job is retried while
``failures < max_attempts``, after ``retry_backoff * 2**(failures-1)`` seconds (capped at
``retry_backoff_max``) with ±50 % jitter so retries of a burst do not return together.
``pgqueue.Retry(delay=...)`` chooses the delay; ``pgqueue.NoRetry`` (raised or
subclassed) and the task's ``no_retry`` types fail the job at once. A crash (the
runner died) is not a failure: the reaper counts those apart (``crashes``).
"""

from __future__ import annotations

import json
import random
import traceback
from dataclasses import dataclass, field
from typing import Any

from .. import errors, serialization

MAX_TRACEBACK = 64 * 1024
MAX_MESSAGE = 4 * 1024
# The longest retry delay anyone can ask for (Retry(delay=...) included): 10 years.
MAX_DELAY = 10 * 365 * 86400.0


@dataclass(frozen=True)
class Claimed:
    """A job as the claim statement returned it."""

    id: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    attempt: int
    failures: int
    max_attempts: int
    cancel_requested: bool
    runner_id: int
    meta: dict[str, Any] = field(default_factory=dict)
    waited: float = 0.0  # seconds between becoming runnable and this claim
    locked: bool = False  # it holds a slot of a lock key: its end releases the slot


@dataclass(frozen=True)
class Outcome:
    job_id: int
    runner_id: int
    attempt: int
    status: str  # succeeded | queued (retry) | failed | cancelled
    result: str | None = None  # JSON text
    error: str | None = None  # JSON text
    delay: float = 0.0
    failed: bool = False  # counts one failure
    reason: str = ""


def clean_text(text: str) -> str:
    """Text PostgreSQL can store: lone surrogates (undecodable bytes, e.g. from os.listdir)
    become backslash escapes instead of making the whole write fail; NUL characters go."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def storable_json(value: Any) -> str:
    """JSON text for a result; escapes what the server's UTF-8 encoding could not carry."""
    text = serialization.dumps(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


def describe_error(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    message = clean_text(str(exc))
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "... (truncated)"
    tb = clean_text("".join(traceback.format_exception(exc)))
    if len(tb) > MAX_TRACEBACK:
        tb = "... (truncated)\n" + tb[-MAX_TRACEBACK:]
    return {"type": name, "message": message, "traceback": tb}


def _short(error: dict[str, str]) -> str:
    message = error["message"].splitlines()[0] if error["message"] else ""
    text = f"{error['type']}: {message}" if message else error["type"]
    return text if len(text) <= 200 else text[:197] + "..."


def backoff(failures: int, base: float, maximum: float, rng: random.Random | None = None) -> float:
    """Delay before the retry that follows the ``failures``-th failure. The exponent is capped:
    ``max_attempts=100000`` (retry forever) must not overflow a float at the 1025th failure."""
    if base <= 0:
        return 0.0
    delay = min(base * (2.0 ** min(max(failures - 1, 0), 62)), maximum)
    return min(delay * (rng or random).uniform(0.5, 1.5), maximum, MAX_DELAY)


def _failure(job: Claimed, kind: str, message: str, *, short: str | None = None) -> Outcome:
    error = {"type": kind, "message": message, "traceback": ""}
    return Outcome(job.id, job.runner_id, job.attempt, "failed", error=serialization.dumps(error),
                   failed=True, reason=f"failed, not retryable: {short or _short(error)}")


def not_runnable(job: Claimed, kind: str, message: str) -> Outcome:
    """The attempt of a job that cannot run at all (its arguments cannot be decoded): failed at
    once, not retried (no later attempt would decode them either)."""
    return _failure(job, kind, message)


def succeeded(job: Claimed, value: Any, max_bytes: int | None = None) -> Outcome:
    try:
        result = storable_json(value)
    except (TypeError, ValueError) as exc:
        error = {
            "type": "ResultNotSerializable",
            "message": f"the return value of task {job.task!r} cannot be stored as JSON: {exc}; "
                       "return JSON-compatible values",
            "traceback": "",
        }
        return Outcome(job.id, job.runner_id, job.attempt, "failed",
                       error=serialization.dumps(error), failed=True,
                       reason=f"failed: {_short(error)}")
    if max_bytes is not None and len(result) * 4 > max_bytes and len(result.encode("utf-8")) > max_bytes:
        return _failure(job, "ResultTooLarge",
                        f"the return value of task {job.task!r} takes {len(result.encode('utf-8'))} "
                        f"bytes as JSON, over max_result_bytes ({max_bytes}): store large data "
                        "elsewhere and return a reference")
    return Outcome(job.id, job.runner_id, job.attempt, "succeeded", result=result, reason="succeeded")


def failed(job: Claimed, exc: BaseException, *, no_retry: tuple[type[BaseException], ...],
           retry_backoff: float, retry_backoff_max: float, cancel_requested: bool) -> Outcome:
    """The outcome of an attempt that raised ``exc``."""
    error = describe_error(exc)
    error_json = serialization.dumps(error)
    short = _short(error)
    if cancel_requested:
        return Outcome(job.id, job.runner_id, job.attempt, "cancelled", error=error_json,
                       reason=f"cancelled while running: {short}")
    failures = job.failures + 1
    if isinstance(exc, errors.NoRetry) or (no_retry and isinstance(exc, no_retry)):
        return Outcome(job.id, job.runner_id, job.attempt, "failed", error=error_json, failed=True,
                       reason=f"failed, not retryable: {short}")
    if failures >= job.max_attempts:
        return Outcome(job.id, job.runner_id, job.attempt, "failed", error=error_json, failed=True,
                       reason=f"failed after {failures} failed attempt{'s' if failures > 1 else ''}: {short}")
    if isinstance(exc, errors.Retry) and exc.delay is not None:
        delay = min(float(exc.delay), MAX_DELAY)
    else:
        delay = backoff(failures, retry_backoff, retry_backoff_max)
    return Outcome(job.id, job.runner_id, job.attempt, "queued", error=error_json, delay=delay,
                   failed=True, reason=f"retry in {delay:.1f} s: {short}")


def cancelled(job: Claimed, reason: str) -> Outcome:
    return Outcome(job.id, job.runner_id, job.attempt, "cancelled", reason=reason)
