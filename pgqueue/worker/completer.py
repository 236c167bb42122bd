"""The completer: writes attempts' outcomes in batches, on its own thread and connection.

Task threads hand it outcomes; it writes everything that has accumulated with one
fenced statement (``job_finish``). A lone outcome is written at once; while a write is
in flight the next ones gather, so under load batches grow by themselves, without
any timer delaying a lone job. Writing on its own connection lets outcome writes and
claims (the runner's main thread) proceed in parallel.

Failure modes: when the database is unreachable, outcomes stay queued in memory and
are written when it is back, with backoff in between. Fencing decides whether each
still applies: a write that matches no row (the attempt was reclaimed meanwhile) is
dropped and reported, never retried. If a batch is refused for another reason (say a
result the database cannot store), outcomes are written one by one and the refused
one is replaced by a failure that says why.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import psycopg

from .. import serialization, sqlfiles
from . import outcomes
from .connections import Backoff, OutageLog, ServiceConnection, is_connection_error

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
        self._writing = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pgqueue-completer", daemon=True)
        self._thread.start()

    def put(self, outcome: outcomes.Outcome) -> None:
        with self._cond:
            self._pending.append(outcome)
            self._cond.notify()

    @property
    def backlog(self) -> int:
        """Outcomes not yet written (queued or in flight)."""
        with self._cond:
            return len(self._pending) + self._writing

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

    def _loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping and not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._writing = len(batch)
            try:
                written = self._write(batch)
            except Exception as exc:
                self._conn.discard()
                if is_connection_error(exc):
                    self._outage.failed("completer", exc)
                    self._requeue(batch)
                    if self._wait_or_stop(backoff.next()):
                        return
                    continue
                logger.exception("writing %d outcome(s) failed; writing them one by one", len(batch))
                self._write_one_by_one(batch)
                continue
            self._outage.ok("completer")
            backoff.reset()
            self._done(batch, written)

    def _write(self, batch: list[outcomes.Outcome]) -> set[int]:
        rows = self._conn.get().execute(self._queries.job_finish, finish_params(batch)).fetchall()
        return {row[0] for row in rows}

    def _done(self, batch: list[outcomes.Outcome], written: set[int], *, last: bool = True) -> None:
        try:
            self._on_written(batch, written)
        finally:
            if last:
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()

    def _requeue(self, batch: list[outcomes.Outcome]) -> None:
        with self._cond:
            self._pending[:0] = batch
            self._writing = 0
            self._cond.notify_all()

    def _wait_or_stop(self, delay: float) -> bool:
        """Sleep before retrying; True when stopping gave up on the database."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, delay)
            return self._stopping and self._outage.in_outage

    def _write_one_by_one(self, batch: list[outcomes.Outcome]) -> None:
        for index, outcome in enumerate(batch):
            last = index == len(batch) - 1
            try:
                written = self._write([outcome])
            except psycopg.OperationalError as exc:
                self._conn.discard()
                self._outage.failed("completer", exc)
                with self._cond:
                    self._pending.append(outcome)
                if last:
                    self._done([], set())
                continue
            except psycopg.Error as exc:
                self._conn.discard()
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                error = {"type": "OutcomeNotStored",
                         "message": f"the database refused this attempt's outcome: {reason}",
                         "traceback": ""}
                outcome = outcomes.Outcome(
                    outcome.job_id, outcome.runner_id, outcome.attempt, "failed",
                    error=serialization.dumps(error), failed=True,
                    reason=f"failed: its outcome could not be stored: {reason}")
                try:
                    written = self._write([outcome])
                except Exception:
                    logger.exception("could not store even a failure for job %s; it stays running "
                                     "until its runner stops or dies", outcome.job_id)
                    written = set()
            self._done([outcome], written, last=last)
