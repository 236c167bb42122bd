"""The job store: every statement the application side runs about jobs, in one place.

``App``, ``Task``, ``Job`` and the operator functions go through a :class:`JobStore`; none of
them holds SQL. Each operation is written once, as a generator that yields ``(query,
params)`` and receives the rows (a "sans-I/O" operation): :meth:`JobStore.run` drives it on
the App's pool or on the caller's own connection, and an async driver can drive the very
same generator on an async connection. So statements, argument checks and retry rules have
one definition whatever the caller's I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator, TypeVar

from . import db, errors, sqlfiles

if TYPE_CHECKING:
    from .app import App

T = TypeVar("T")
Rows = list[dict[str, Any]]
Operation = Generator[tuple[str, dict[str, Any]], Rows, T]


def drive(operation: Operation[T], fetch: Callable[[str, dict[str, Any]], Rows]) -> T:
    """Run a sans-I/O operation with a blocking ``fetch(query, params) -> rows``."""
    try:
        query, params = next(operation)
        while True:
            query, params = operation.send(fetch(query, params))
    except StopIteration as stop:
        return stop.value


# ----------------------------------------------------------------- operations

def enqueue_op(q: sqlfiles.Queries, params: dict[str, Any]) -> Operation[tuple[int | None, bool, bool]]:
    """One job: (id, created, replaced), through the database's enqueue_job (id None: the key
    was taken and on_conflict is 'skip')."""
    rows = yield q.job_enqueue, params
    row = rows[0]
    return row["id"], row["created"], row["replaced"]


def enqueue_many_op(q: sqlfiles.Queries, params: dict[str, Any]) -> Operation[list[int]]:
    if not params["count"]:
        return []
    rows = yield q.job_enqueue_many, params
    return list(rows[0]["ids"])


def _one(rows: Rows, job_id: int, schema: str) -> dict[str, Any]:
    if not rows:
        raise errors.JobNotFound(f"there is no job {job_id} in schema {schema!r}")
    return rows[0]


def info_op(q: sqlfiles.Queries, job_id: int) -> Operation[dict[str, Any]]:
    rows = yield q.job_get, {"id": job_id}
    return _one(rows, job_id, q.schema)


def status_op(q: sqlfiles.Queries, job_id: int) -> Operation[str]:
    rows = yield q.job_status, {"id": job_id}
    return _one(rows, job_id, q.schema)["status"]


def outcome_op(q: sqlfiles.Queries, job_id: int) -> Operation[tuple[bool, Any]]:
    """(True, result) once finished, raising JobFailed or JobCancelled; (False, None) before."""
    rows = yield q.job_outcome, {"id": job_id}
    row = _one(rows, job_id, q.schema)
    status, result, error = row["status"], row["result"], row["error"]
    if status == "succeeded":
        return True, result
    if status == "failed":
        raise errors.JobFailed(job_id, error)
    if status == "cancelled":
        raise errors.JobCancelled(job_id)
    return False, None


def wait_register_op(q: sqlfiles.Queries, job_id: int) -> Operation[int]:
    """Register a waiter of ``job_id`` (on the App's own connections: autocommit)."""
    rows = yield q.job_wait_register, {"id": job_id}
    return rows[0]["id"]


def wait_unregister_op(q: sqlfiles.Queries, waiter: int) -> Operation[None]:
    yield q.job_wait_unregister, {"waiter": waiter}


def cancel_op(q: sqlfiles.Queries, job_id: int, reason: str) -> Operation[str]:
    rows = yield q.job_cancel, {"id": job_id, "reason": reason}
    if rows:
        return rows[0]["status"]
    status = yield from status_op(q, job_id)
    if status in ("cancelled", "running"):
        return status  # already cancelled, or cancellation already requested
    raise errors.JobStateError(f"job {job_id} already {status}: it cannot be cancelled")


# ------------------------------------------------------------------- the store

class JobStore:
    """The App's jobs, through its pool (or the caller's connection, where given)."""

    def __init__(self, app: "App") -> None:
        self._app = app

    @property
    def queries(self) -> sqlfiles.Queries:
        return self._app.queries

    def run(self, operation: Operation[T], *, conn: Any = None) -> T:
        """Drive ``operation`` on the caller's connection ``conn`` (inside its transaction,
        never committed or rolled back here) or on the App's pool."""
        if conn is not None:
            schema = self._app.settings.schema
            return drive(operation, lambda query, params: db.fetch_external(conn, query, params,
                                                                             schema=schema))
        database = self._app.database
        return drive(operation, database.fetch)

    def enqueue(self, params: dict[str, Any], *, conn: Any = None) -> tuple[int | None, bool, bool]:
        return self.run(enqueue_op(self.queries, params), conn=conn)

    def enqueue_many(self, params: dict[str, Any], *, conn: Any = None) -> list[int]:
        return self.run(enqueue_many_op(self.queries, params), conn=conn)

    def info(self, job_id: int) -> dict[str, Any]:
        return self.run(info_op(self.queries, job_id))

    def status(self, job_id: int) -> str:
        return self.run(status_op(self.queries, job_id))

    def outcome(self, job_id: int) -> tuple[bool, Any]:
        return self.run(outcome_op(self.queries, job_id))

    def cancel(self, job_id: int, reason: str) -> str:
        return self.run(cancel_op(self.queries, job_id, reason))

    def register_waiter(self, job_id: int) -> int:
        return drive(wait_register_op(self.queries, job_id), self._app.database.fetch)

    def unregister_waiter(self, waiter: int) -> None:
        drive(wait_unregister_op(self.queries, waiter), self._app.database.fetch)
