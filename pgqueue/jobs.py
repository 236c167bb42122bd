"""``Job``: the handle ``enqueue`` returns, to ask about one job, wait for it or cancel it."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from . import errors, sqlfiles

if TYPE_CHECKING:
    from .app import App

FINISHED = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", *FINISHED)


class Job:
    """One job, known by its id. Cheap to create: every method asks the database."""

    __slots__ = ("app", "id", "created")

    def __init__(self, app: "App", id: int, *, created: bool = True) -> None:
        self.app = app
        self.id = int(id)
        #: False when enqueue with a key found an unfinished job holding it (this is that job).
        self.created = created

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    def _queries(self) -> sqlfiles.Queries:
        return self.app.queries

    def info(self) -> dict[str, Any]:
        """The job's row as a dict (args, status, attempts, result, error, times...)."""
        rows = self.app.database.fetch(self._queries().job_get, {"id": self.id})
        if not rows:
            raise errors.JobNotFound(f"there is no job {self.id} in schema {self.app.settings.schema!r}")
        return rows[0]

    def status(self) -> str:
        """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        rows = self.app.database.fetch(self._queries().job_status, {"id": self.id})
        if not rows:
            raise errors.JobNotFound(f"there is no job {self.id} in schema {self.app.settings.schema!r}")
        return rows[0]["status"]

    def cancel(self, reason: str = "cancelled by user") -> str:
        """Cancel the job: a queued job becomes ``cancelled`` at once (returned); for a running
        job cancellation is requested (``running`` is returned): async tasks are cancelled,
        sync tasks can check ``pgqueue.current_job().cancel_requested`` and return or raise
        (the job then ends ``cancelled``). A finished job
        cannot be cancelled (JobStateError), except that cancelling twice is harmless.
        """
        rows = self.app.database.fetch(self._queries().job_cancel, {"id": self.id, "reason": reason})
        if rows:
            return rows[0]["status"]
        status = self.status()
        if status in ("cancelled", "running"):
            return status  # already cancelled, or cancellation already requested
        raise errors.JobStateError(f"job {self.id} already {status}: it cannot be cancelled")

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its result.

        Raises JobFailed (with the error) or JobCancelled, and ResultTimeout (a
        TimeoutError) when ``timeout`` seconds pass first. The wait sleeps until the
        statement that finishes the job notifies it (one LISTEN connection per App serves
        every waiter; see ``pgqueue.waiting``), looking at the job again after growing
        pauses as a safety net. It holds no pooled connection while it sleeps.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        queries = self._queries()
        database = self.app.database
        waiters = self.app.result_waiters
        event = waiters.subscribe(self.id)
        try:
            generation = waiters.generation
            waiter = database.fetch(queries.job_wait_register, {"id": self.id})[0]["id"]
            try:
                pause = 0.05
                while True:
                    event.clear()
                    if waiters.generation != generation:
                        # The listener reconnected: after a crash restart our row is gone.
                        generation = waiters.generation
                        database.fetch(queries.job_wait_unregister, {"waiter": waiter})
                        waiter = database.fetch(queries.job_wait_register, {"id": self.id})[0]["id"]
                    finished, value = self._outcome()
                    if finished:
                        return value
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise errors.ResultTimeout(
                            f"job {self.id} did not finish within {timeout} s (it is "
                            f"{self.status()}); call result() again to keep waiting"
                        )
                    event.wait(pause if remaining is None else min(pause, remaining))
                    pause = min(pause * 2, 10.0)
            finally:
                with contextlib.suppress(errors.PgQueueError):
                    database.fetch(queries.job_wait_unregister, {"waiter": waiter})
        finally:
            waiters.unsubscribe(self.id, event)

    def _outcome(self) -> tuple[bool, Any]:
        """(True, result) once finished (raising for failed or cancelled); (False, None) before."""
        rows = self.app.database.fetch(self._queries().job_outcome, {"id": self.id})
        if not rows:
            raise errors.JobNotFound(f"there is no job {self.id} in schema {self.app.settings.schema!r}")
        status, result, error = rows[0]["status"], rows[0]["result"], rows[0]["error"]
        if status == "succeeded":
            return True, result
        if status == "failed":
            raise errors.JobFailed(self.id, error)
        if status == "cancelled":
            raise errors.JobCancelled(self.id)
        return False, None
