"""``Job``: the handle ``enqueue`` returns, to ask about one job, wait for it or cancel it."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from .app import App

FINISHED = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", *FINISHED)


class Job:
    """One job, known by its id. Cheap to create: every method asks the database."""

    __slots__ = ("app", "id", "created", "replaced")

    def __init__(self, app: "App", id: int, *, created: bool = True, replaced: bool = False) -> None:
        self.app = app
        self.id = int(id)
        #: False when enqueue with a key found a job holding it (this is that job).
        self.created = created
        #: True when that job was still queued and took the new arguments (on_conflict='replace',
        #: debounce).
        self.replaced = replaced

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    def info(self) -> dict[str, Any]:
        """The job's row as a dict (args, status, attempts, result, error, times...)."""
        return self.app.store.info(self.id)

    def status(self) -> str:
        """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        return self.app.store.status(self.id)

    def cancel(self, reason: str = "cancelled by user", *, wait: float | None = None) -> str:
        """Cancel the job: a queued job becomes ``cancelled`` at once (returned); for a running
        job cancellation is requested (``running`` is returned): async tasks are cancelled,
        sync tasks can check ``pgqueue.current_job().cancel_requested`` and return or raise
        (the job then ends ``cancelled``). A finished job
        cannot be cancelled (JobStateError), except that cancelling twice is harmless.

        ``wait``: for a running job, wait up to that many seconds for it to end and return its
        final status (``cancelled``, or ``succeeded``/``failed`` if it ended otherwise first);
        ``running`` if it is still running then.
        """
        status = self.app.store.cancel(self.id, reason)
        if status != "running" or not wait:
            return status
        return self.wait(wait)

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the job to finish, up to ``timeout`` seconds; return its status then
        (never raises for a failed or cancelled job: see ``result()`` for that)."""
        try:
            self.result(timeout)
        except errors.ResultTimeout:
            pass
        except (errors.JobFailed, errors.JobCancelled):
            pass
        return self.status()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its result.

        Raises JobFailed (with the error) or JobCancelled, and ResultTimeout (a
        TimeoutError) when ``timeout`` seconds pass first. The wait sleeps until the
        statement that finishes the job notifies it (one LISTEN connection per App serves
        every waiter; see ``pgqueue.waiting``), looking at the job again after growing
        pauses as a safety net. It holds no pooled connection while it sleeps. With
        ``listen`` off (behind a transaction-mode pooler) it only looks again, after pauses
        growing to one second, and registers nothing for the finishing statement to do.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        store = self.app.store
        if not self.app.settings.listen:
            return self._poll(deadline, timeout)
        waiters = self.app.result_waiters
        event = waiters.subscribe(self.id)
        try:
            generation = waiters.generation
            waiter = store.register_waiter(self.id)
            try:
                pause = 0.05
                while True:
                    event.clear()
                    if waiters.generation != generation:
                        # The listener reconnected: after a crash restart our row is gone.
                        generation = waiters.generation
                        store.unregister_waiter(waiter)
                        waiter = store.register_waiter(self.id)
                    finished, value = store.outcome(self.id)
                    if finished:
                        return value
                    remaining = self._remaining(deadline, timeout)
                    event.wait(pause if remaining is None else min(pause, remaining))
                    pause = min(pause * 2, 10.0)
            finally:
                with contextlib.suppress(errors.PgQueueError):
                    store.unregister_waiter(waiter)
        finally:
            waiters.unsubscribe(self.id, event)

    # asyncio (pgqueue.aio): the same statements on the App's async pool, never blocking the loop.

    async def ainfo(self) -> dict[str, Any]:
        """``info()`` for asyncio code."""
        from . import aio

        return await aio.info(self)

    async def astatus(self) -> str:
        """``status()`` for asyncio code."""
        from . import aio

        return await aio.status(self)

    async def acancel(self, reason: str = "cancelled by user") -> str:
        """``cancel()`` for asyncio code."""
        from . import aio

        return await aio.cancel(self, reason)

    async def aresult(self, timeout: float | None = None) -> Any:
        """``result()`` for asyncio code: sleeps on the notification of the statement that
        finishes the job (the App's one LISTEN connection serves every waiter, blocking or
        async), holding no pooled connection while it waits."""
        from . import aio

        return await aio.result(self, timeout)

    def _poll(self, deadline: float | None, timeout: float | None) -> Any:
        pause = 0.05
        while True:
            finished, value = self.app.store.outcome(self.id)
            if finished:
                return value
            remaining = self._remaining(deadline, timeout)
            time.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, 1.0)

    def _remaining(self, deadline: float | None, timeout: float | None) -> float | None:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise errors.ResultTimeout(
                f"job {self.id} did not finish within {timeout} s (it is "
                f"{self.status()}); call result() again to keep waiting"
            )
        return remaining
