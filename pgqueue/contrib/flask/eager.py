"""The eager mode, for tests: ``app.config["PGQUEUE_EAGER"] = True`` (default False).

An eager enqueue is still a real enqueue (the row, its event, every check); then, as soon as
the job is committed, the queue is drained in this process by
``pgqueue.testing.run_pending(with_scheduled=True)``: the worker's own code (claim, slots,
fenced outcomes, history), so a test sees what production would do, only sooner. When is "as
soon as the job is committed":

* no ``conn=``: the insert committed by itself, so inside the ``enqueue()`` call;
* ``conn=db.session`` (any SQLAlchemy ``Session``, or an ``AsyncSession``): inside that
  session's ``commit()`` (an ``after_commit`` hook); a rollback, or a teardown without a
  commit, drops the job, and nothing runs, exactly as with a worker;
* any other ``conn=`` (an SQLAlchemy ``Connection``, a psycopg connection): pgqueue cannot
  see its commit, so the drain comes when the app context ends (after the request).

Tasks run on the drain's threads, each in an app context of its own (a Flask-SQLAlchemy
session of its own: the view's uncommitted rows are not visible to it, as in production).
Jobs scheduled for later and retries run at once, so a failing task has used all its
attempts when the enqueue returns: ``job.result()`` raises ``JobFailed`` with its error. A
task that enqueues joins the drain that runs it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extension import AppState

_PENDING = "_pgqueue_eager_pending"
_HOOKED = "pgqueue_eager_hooked"
_DUE = "pgqueue_eager_due"


def is_on() -> bool:
    from flask import current_app

    return bool(current_app.config.get("PGQUEUE_EAGER"))


def drain(state: "AppState") -> None:
    """Run what is pending on ``state``'s queue, unless a drain runs already (it takes the new
    jobs too: their parent is still running under it)."""
    if not state.draining.acquire(blocking=False):
        return
    try:
        from ...testing import run_pending

        run_pending(state.app, with_scheduled=True)
    finally:
        state.draining.release()


def _session_of(conn: Any) -> Any:
    """The SQLAlchemy ``Session`` behind ``conn`` (a Session, a scoped_session such as
    Flask-SQLAlchemy's ``db.session``, an AsyncSession), or None."""
    try:
        from sqlalchemy.ext.asyncio import AsyncSession
        from sqlalchemy.orm import Session, scoped_session
    except ImportError:
        return None
    if isinstance(conn, scoped_session):
        return conn.registry()
    if isinstance(conn, AsyncSession):
        return conn.sync_session
    return conn if isinstance(conn, Session) else None


def _later(state: "AppState", conn: Any) -> None:
    session = _session_of(conn)
    if session is None:
        from flask import g

        setattr(g, _PENDING, True)
        return
    if not session.info.get(_HOOKED):
        from sqlalchemy import event

        def after_commit(committed: Any) -> None:
            if committed.info.pop(_DUE, False):
                drain(state)

        def after_rollback(rolled_back: Any) -> None:
            rolled_back.info.pop(_DUE, None)  # the job went with the transaction

        event.listen(session, "after_commit", after_commit)
        event.listen(session, "after_rollback", after_rollback)
        session.info[_HOOKED] = True
    session.info[_DUE] = True


def enqueued(state: "AppState", conn: Any) -> None:
    """After an enqueue (``enqueue``, ``enqueue_many``) on ``state``'s queue."""
    if not is_on():
        return
    if conn is None:
        drain(state)
    else:
        _later(state, conn)


async def aenqueued(state: "AppState", conn: Any) -> None:
    """After an async enqueue: the drain runs on a thread, off the event loop."""
    if not is_on():
        return
    if conn is None:
        await asyncio.to_thread(drain, state)
    else:
        _later(state, conn)


def at_teardown(_exc: BaseException | None) -> None:
    """``teardown_appcontext``: drain for enqueues on connections whose commit is not seen."""
    from flask import current_app, g

    if g.pop(_PENDING, False):
        drain(current_app.extensions["pgqueue"])
