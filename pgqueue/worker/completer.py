"""The completer: writes attempts' outcomes in batches, on its own thread and connection.

Task threads hand it outcomes; it writes everything that has accumulated with one
fenced statement (``job_finish``). A lone outcome is written at once; while a write is
in flight the next ones gather, so under load batches grow by themselves, without
any timer delaying a lone job. Writing on its own connection lets outcome writes and
claims (the runner's main thread) proceed in parallel. Each batch is sorted by job
id, the order the reaper locks rows in, so the two never deadlock.

Failure modes: while the database is unreachable (or a statement fails in a way a
retry cures), outcomes stay queued in memory and are written later, with backoff in
between. Fencing decides whether each still applies: a write that matches no row
(the attempt was reclaimed meanwhile) is dropped and reported, never retried; after
a connection was lost mid-write, such an outcome is first looked up, as the lost
write may have committed. A batch refused for any other reason is written one outcome
at a time, and the outcome the database refuses (say, a result it cannot store) is
replaced by a failure that says why. The thread never dies.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .. import serialization, sqlfiles
from . import outcomes
from .connections import Backoff, OutageLog, ServiceConnection, is_connection_error, is_transient

logger = logging.getLogger(__name__)


def finish_params(pending: list[outcomes.Outcome]) -> dict[str, list[Any]]:
    return {
        "ids": [o.job_id for o in pending],
        "runner_ids": [o.runner_id for o in pending],
        "attempts": [o.attempt for o in pending],
        "statuses": [o.status for o in pending],
        "results": [o.result for o in pending],
        "errors": [o.error for o in pending],
        "delays": [o.delay for o in pending],
        "failed": [o.failed for o in pending],
        "reasons": [o.reason for o in pending],
    }


class Completer:
    def __init__(self, *, connection: ServiceConnection, queries: sqlfiles.Queries, outage: OutageLog,
                 on_written: Callable[[list[outcomes.Outcome], set[int]], None]) -> None:
        self._conn = connection
        self._queries = queries
        self._outage = outage
        self._on_written = on_written
        self._cond = threading.Condition()
        self._pending: list[outcomes.Outcome] = []
        self._writing: list[outcomes.Outcome] = []
        self._maybe_written: set[tuple[int, int]] = set()  # sent when a connection was lost
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pgqueue-completer", daemon=True)
        self._thread.start()

    def put(self, outcome: outcomes.Outcome) -> None:
        with self._cond:
            self._pending.append(outcome)
            self._cond.notify_all()

    @property
    def backlog(self) -> int:
        """Outcomes not yet written (queued or in flight)."""
        with self._cond:
            return len(self._pending) + len(self._writing)

    def pending_keys(self) -> set[tuple[int, int]]:
        """(job id, attempt) of every outcome not yet written."""
        with self._cond:
            return {(o.job_id, o.attempt) for o in (*self._pending, *self._writing)}

    def flush(self, timeout: float) -> bool:
        """Wait until every outcome handed in so far is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._conn.discard()

    # -------------------------------------------------------------- the loop

    def _loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return  # stop() flushed first; what is left could not be written
                self._writing = sorted(self._pending, key=lambda o: o.job_id)
                self._pending = []
                batch = self._writing
            try:
                self._write_batch(batch)
                self._outage.ok("completer")
                backoff.reset()
            except Exception as exc:  # never let the completer die: keep the outcomes, retry
                self._conn.discard()
                if is_connection_error(exc):
                    self._outage.failed("completer", exc)
                elif not is_transient(exc):
                    logger.exception("writing %d outcome(s) failed; retrying", len(batch))
                with self._cond:
                    self._pending[:0] = self._writing
                    self._writing = []
                    self._cond.notify_all()
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, backoff.next())

    def _write_batch(self, batch: list[outcomes.Outcome]) -> None:
        try:
            written = self._write(batch)
        except Exception as exc:
            if is_connection_error(exc) or is_transient(exc):
                for outcome in batch:
                    self._maybe_written.add((outcome.job_id, outcome.attempt))
                raise
            self._conn.discard()
            logger.warning("a batch of %d outcome(s) was refused (%s); writing them one by one",
                           len(batch), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._write_one_by_one(batch)
            return
        self._done(batch, written)

    def _write(self, batch: list[outcomes.Outcome]) -> set[int]:
        conn = self._conn.get()
        rows = conn.execute(self._queries.job_finish, finish_params(batch)).fetchall()
        written = {row[0] for row in rows}
        doubtful = [o for o in batch if o.job_id not in written
                    and (o.job_id, o.attempt) in self._maybe_written]
        if doubtful:
            # The reply to an earlier try was lost with its connection: the write may have
            # committed then. The job showing that outcome for that attempt says it did.
            rows = conn.execute(self._queries.job_outcome_check, {
                "ids": [o.job_id for o in doubtful], "attempts": [o.attempt for o in doubtful],
                "statuses": [o.status for o in doubtful]}).fetchall()
            written |= {row[0] for row in rows}
        for outcome in batch:
            self._maybe_written.discard((outcome.job_id, outcome.attempt))
        return written

    def _done(self, batch: list[outcomes.Outcome], written: set[int]) -> None:
        try:
            self._on_written(batch, written)
        except Exception:
            logger.exception("reporting written outcomes failed")
        with self._cond:
            done = {id(o) for o in batch}
            self._writing = [o for o in self._writing if id(o) not in done]
            self._cond.notify_all()

    def _write_one_by_one(self, batch: list[outcomes.Outcome]) -> None:
        """A batch the database refused: find the outcome at fault and replace it by a
        failure that says why; write the others as they are. Connection errors and errors
        a retry cures propagate (the caller keeps what is left and retries)."""
        for outcome in batch:
            try:
                written = self._write([outcome])
            except Exception as exc:
                if is_connection_error(exc) or is_transient(exc):
                    raise
                self._conn.discard()
                reason = outcomes.clean_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                error = {"type": "OutcomeNotStored",
                         "message": f"the database refused this attempt's outcome: {reason}",
                         "traceback": ""}
                replacement = outcomes.Outcome(
                    outcome.job_id, outcome.runner_id, outcome.attempt, "failed",
                    error=serialization.dumps(error), failed=True,
                    reason=f"failed: its outcome could not be stored: {reason}")
                written = self._write([replacement])
                with self._cond:
                    self._writing = [replacement if o is outcome else o for o in self._writing]
                outcome = replacement
            self._done([outcome], written)
