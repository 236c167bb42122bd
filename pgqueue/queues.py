"""Queue controls: ``app.queues.pause("mail", reason=...)``, ``resume``, ``limit``, ``list``.

Each is one call of a SQL function of the schema (``pause_queue``, ``resume_queue``,
``limit_queue``), the same ones ``psql`` users and the CLI call, and each leaves a row in
``queue_events`` saying who did what and why. A queue needs no row to work: a row exists only
while it is (or was) under control.

* **Pause**: from the commit on, no runner claims the queue's jobs (claims in flight commit
  before it, never after); running jobs finish; enqueues are accepted and wait.
* **Concurrency limit**: at most N of its jobs run at once over every runner.
* **Rate limit**: at most N of its jobs start per period (a sliding window; retries count).

Limits are exact across runners: the claims of a limited queue take its advisory lock in
turn. Queues without limits are claimed as before and pay nothing for them.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .tasks import _validate_seconds, seconds, validate_queue

if TYPE_CHECKING:
    from .app import App

MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class QueueInfo:
    """One queue as ``app.queues.list()`` shows it."""

    name: str
    queued: int
    scheduled: int
    running: int
    blocked: int  # waiting for a lock's slot
    oldest_queued_age: dt.timedelta | None
    succeeded_last_hour: int
    failed_last_hour: int
    paused_at: dt.datetime | None
    paused_by: str | None
    pause_reason: str | None
    concurrency_limit: int | None
    rate_limit: int | None
    rate_period: float | None  # seconds

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


def default_actor() -> str:
    """Who is acting, for the history: ``user@host``."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise errors.ConfigurationError(f"{name} must be a whole number >= 1 (or None: no limit), not {value!r}")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > MAX_REASON_LENGTH:
        raise errors.ConfigurationError(
            f"{name} must be text of at most {MAX_REASON_LENGTH} characters, not {value!r:.60}")
    return value


class QueueControls:
    """``app.queues``: pause, resume and limit queues, and list them."""

    def __init__(self, app: "App") -> None:
        self._app = app

    def pause(self, queue: str, *, reason: str | None = None, by: str | None = None) -> None:
        """Pause ``queue`` cluster wide: no claim takes its jobs once this returns."""
        self._call("queue_pause", {"queue": validate_queue(queue), "reason": _text(reason, "reason"),
                                   "by": _text(by, "by") or default_actor()})

    def resume(self, queue: str, *, by: str | None = None) -> None:
        """Resume a paused queue (and wake the runners that serve it)."""
        self._call("queue_resume", {"queue": validate_queue(queue), "by": _text(by, "by") or default_actor()})

    def limit(self, queue: str, *, concurrency: int | None = None, rate: int | None = None,
              per: float | dt.timedelta | None = None, by: str | None = None) -> None:
        """Limit ``queue`` cluster wide: at most ``concurrency`` of its jobs running at once,
        at most ``rate`` starts per ``per`` (seconds or a timedelta). None removes a limit;
        ``limit(queue)`` removes both."""
        concurrency = _count(concurrency, "concurrency")
        rate = _count(rate, "rate")
        if (rate is None) != (per is None):
            raise errors.ConfigurationError(
                "give rate and per together, e.g. limit('payments', rate=100, per=60) for 100 starts a minute")
        period = None if per is None else seconds("per", per, allow_zero=False)
        if period is not None:
            _validate_seconds("per", period, allow_zero=False)
        self._call("queue_limit", {"queue": validate_queue(queue), "concurrency": concurrency,
                                   "rate": rate, "per": period, "by": _text(by, "by") or default_actor()})

    def list(self) -> list[QueueInfo]:
        """Every queue that holds jobs or has controls, by name."""
        rows = self._app.database.fetch(self._app.queries.queue_list)
        return [QueueInfo(
            name=r["queue"], queued=r["queued"], scheduled=r["scheduled"], running=r["running"],
            blocked=r["blocked"], oldest_queued_age=r["oldest_queued_age"],
            succeeded_last_hour=r["succeeded_last_hour"], failed_last_hour=r["failed_last_hour"],
            paused_at=r["paused_at"], paused_by=r["paused_by"], pause_reason=r["pause_reason"],
            concurrency_limit=r["concurrency_limit"], rate_limit=r["rate_limit"],
            rate_period=r["rate_period"]) for r in rows]

    def get(self, queue: str) -> QueueInfo | None:
        validate_queue(queue)
        return next((q for q in self.list() if q.name == queue), None)

    def history(self, queue: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The latest pauses, resumes and limit changes of ``queue``, newest first."""
        return self._app.database.fetch(self._app.queries.queue_history,
                                        {"queue": validate_queue(queue), "limit": limit})

    def _call(self, query: str, params: dict[str, Any]) -> None:
        try:
            self._app.database.fetch(self._app.queries[query], params)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "22023":
                raise errors.ConfigurationError(str(exc).splitlines()[0]) from None
            raise
