"""The completer: writes attempts' outcomes in batches, on its own thread and connection.

Task threads put outcomes in the :class:`Outbox`; the completer writes everything ready with
one fenced statement (``job_finish``). A lone outcome is written at once; while a write is in
flight the next ones gather, so under load batches grow by themselves, without any timer
delaying a lone job. Writing on its own connection lets outcome writes and claims (the
runner's main thread) proceed in parallel, on two server processes. Each batch is sorted by
job id, the order the reaper locks rows in, so the two never deadlock.

Outcomes come back ``done`` (written), ``busy`` (the job row is held by someone else, an
operator's open transaction: retried after a growing pause, while the others go through, so
one locked row never stalls a runner) or neither: fenced out, because the attempt was
reclaimed meanwhile (dropped and reported, never retried as if new). A batch holding jobs with
a lock key is written in a transaction with the release of the slots it frees
(``release_lock_slots``), so a waiting job gets its slot with the commit; batches without
one are a single statement, as before. After a connection was
lost mid-write, an outcome that comes back neither is first looked up in the history: the
lost write may have committed.

Failure modes: while the database is unreachable, or a statement fails in a way a retry
cures, outcomes stay in the outbox and are written later, with backoff in between. A batch
refused for any other reason is written one outcome at a time, and the outcome the database
refuses (a result it cannot store, say) is replaced by a failure that says why. The thread
never dies.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psycopg

from .. import serialization, sqlfiles
from . import arrays, outcomes
from .connections import Backoff, OutageLog, ServiceConnection, is_connection_error, is_transient

logger = logging.getLogger(__name__)

Key = tuple[int, int]
_BUSY_FIRST = 0.05
_BUSY_MAX = 5.0


@dataclass(eq=False)
class Pending:
    outcome: outcomes.Outcome
    not_before: float = 0.0
    busy_delay: float = 0.0
    maybe_written: bool = False

    @property
    def key(self) -> Key:
        return (self.outcome.job_id, self.outcome.attempt)


class Outbox:
    """Outcomes waiting to be written. Task threads ``put``; the completer ``take``s."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[Pending] = []
        self._in_flight: list[Pending] = []
        self._stopping = False
        #: Running jobs that hold a lock's slot (the claim said so).
        self._locked: set[int] = set()

    def note_locked(self, job_ids: set[int]) -> None:
        if job_ids:
            with self._cond:
                self._locked |= job_ids

    def any_locked(self, pending: list[Pending]) -> bool:
        if not self._locked:
            return False
        with self._cond:
            return any(p.outcome.job_id in self._locked for p in pending)

    def forget_locked(self, job_ids: list[int]) -> None:
        if self._locked:
            with self._cond:
                self._locked.difference_update(job_ids)

    def put(self, outcome: outcomes.Outcome) -> None:
        with self._cond:
            self._waiting.append(Pending(outcome))
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> list[Pending]:
        """Every outcome ready to go, in job id order (the order rows are locked in), waiting
        up to ``timeout`` for one (none: an empty list)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                ready = [p for p in self._waiting if p.not_before <= now]
                if ready or self._stopping:
                    break
                later = min((p.not_before for p in self._waiting), default=None)
                wait = None if deadline is None else deadline - now
                if later is not None:
                    wait = later - now if wait is None else min(wait, later - now)
                if wait is not None and wait <= 0:
                    return []
                self._cond.wait(wait)
            self._waiting = [p for p in self._waiting if p.not_before > now]
            self._in_flight.extend(ready)
        return sorted(ready, key=lambda p: p.outcome.job_id)

    def give_back(self, pending: list[Pending]) -> None:
        """Not written (yet): they wait for the next write."""
        with self._cond:
            ids = {id(p) for p in pending}
            self._in_flight = [p for p in self._in_flight if id(p) not in ids]
            self._waiting.extend(pending)
            self._cond.notify_all()

    def finished(self, pending: list[Pending]) -> None:
        """Written, or dropped for good."""
        with self._cond:
            ids = {id(p) for p in pending}
            self._in_flight = [p for p in self._in_flight if id(p) not in ids]
            self._cond.notify_all()

    def replace(self, old: Pending, new: Pending) -> None:
        with self._cond:
            self._in_flight = [new if p is old else p for p in self._in_flight]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._in_flight)

    def keys(self) -> set[Key]:
        with self._cond:
            return {p.key for p in (*self._waiting, *self._in_flight)}

    def wait_empty(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._in_flight, timeout)


def finish_params(pending: list[Pending], writer: int | None) -> dict[str, Any]:
    outs = [p.outcome for p in pending]
    return {
        "ids": arrays.bigints(o.job_id for o in outs),
        "runner_ids": arrays.bigints(o.runner_id for o in outs),
        "attempts": arrays.bigints(o.attempt for o in outs),
        "statuses": arrays.texts(o.status for o in outs),
        "results": arrays.texts(o.result for o in outs),
        "errors": arrays.texts(o.error for o in outs),
        "delays": arrays.float8s(o.delay for o in outs),
        "failed": arrays.booleans(o.failed for o in outs),
        "reasons": arrays.texts(o.reason for o in outs),
        "writer": writer,
    }


@dataclass
class Written:
    written: list[outcomes.Outcome]
    fenced_out: list[outcomes.Outcome]


class Completer:
    def __init__(self, *, connection: ServiceConnection, queries: sqlfiles.Queries, outbox: Outbox,
                 outage: OutageLog, writer: Callable[[], int | None],
                 on_written: Callable[[Written], None]) -> None:
        self._conn = connection
        self._finish = queries.raw("job_finish")
        self._check = queries.raw("job_outcome_check")
        self._release = queries.raw("lock_release")
        self._outbox = outbox
        self._outage = outage
        self._writer = writer
        self._on_written = on_written
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def connection(self) -> ServiceConnection:
        return self._conn

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pgqueue-completer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every outcome handed in so far is written; False on timeout."""
        return self._outbox.wait_empty(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._outbox.stop()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._conn.discard()

    # -------------------------------------------------------------- the loop

    def _loop(self) -> None:
        backoff = Backoff()
        try:
            # Connected from the start: the connection holds the runner's liveness lock too.
            self._conn.get()
        except Exception as exc:
            self._conn.discard()
            if is_connection_error(exc):
                self._outage.failed("completer", exc)
        while True:
            batch = self._outbox.take()
            if not batch:
                return  # stopping
            try:
                self.write(batch)
                self._outage.ok("completer")
                backoff.reset()
            except Exception as exc:  # never let the completer die: keep the outcomes, retry
                self._conn.discard()
                if is_connection_error(exc):
                    self._outage.failed("completer", exc)
                elif not is_transient(exc):
                    logger.exception("writing %d outcome(s) failed; retrying", len(batch))
                time.sleep(backoff.next())

    def write(self, pending: list[Pending]) -> Written:
        """Write a batch taken from the outbox. Raises on database errors a retry cures; the
        outcomes stay in the outbox (marked as maybe written when the connection was lost)."""
        try:
            try:
                result = self._run(pending)
            except psycopg.errors.UniqueViolation:
                # A retry met a queued job of its key that committed a moment after the
                # statement's snapshot: written again, it sees that job and is superseded.
                self._conn.discard()
                result = self._run(pending)
        except Exception as exc:
            if is_connection_error(exc) or is_transient(exc):
                if is_connection_error(exc):
                    for p in pending:
                        p.maybe_written = True
                self._outbox.give_back(pending)
                raise
            self._conn.discard()
            logger.warning("a batch of %d outcome(s) was refused (%s); writing them one by one",
                           len(pending), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            result = self._one_by_one(pending)
        self._report(result)
        return result

    def _report(self, result: Written) -> None:
        try:
            self._on_written(result)
        except Exception:
            logger.exception("reporting written outcomes failed")

    def _run(self, pending: list[Pending]) -> Written:
        params = finish_params(pending, self._writer())
        if self._outbox.any_locked(pending):
            with self._conn.get().transaction():
                rows = self._conn.run(self._finish, params)
                freed = sorted({row[4] for row in rows if row[0] == "done" and row[4] is not None})
                if freed:
                    self._conn.run(self._release, {"keys": freed})
        else:
            rows = self._conn.run(self._finish, params)
        done = {row[1] for row in rows if row[0] == "done"}
        busy = {row[1] for row in rows if row[0] == "busy"}
        doubtful = [p for p in pending if p.outcome.job_id not in done and p.outcome.job_id not in busy
                    and p.maybe_written]
        if doubtful:
            found = self._conn.run(self._check, {
                "ids": [p.outcome.job_id for p in doubtful],
                "attempts": [p.outcome.attempt for p in doubtful],
                "runner_ids": [p.outcome.runner_id for p in doubtful]})
            done |= {r[0] for r in found}
        result = Written([], [])
        retry_later: list[Pending] = []
        finished: list[Pending] = []
        now = time.monotonic()
        for p in pending:
            job_id = p.outcome.job_id
            if job_id in done:
                result.written.append(p.outcome)
                finished.append(p)
            elif job_id in busy:
                p.busy_delay = min(max(p.busy_delay * 2, _BUSY_FIRST), _BUSY_MAX)
                p.not_before = now + p.busy_delay
                retry_later.append(p)
                logger.info("job %s: its row is locked by another transaction; writing its outcome "
                            "later", job_id, extra={"job_id": job_id})
            else:
                result.fenced_out.append(p.outcome)
                finished.append(p)
        self._outbox.finished(finished)
        self._outbox.forget_locked([p.outcome.job_id for p in finished])
        if retry_later:
            self._outbox.give_back(retry_later)
        return result

    def _one_by_one(self, pending: list[Pending]) -> Written:
        """A batch the database refused: find the outcome at fault and replace it by a
        failure that says why; write the others as they are. Connection errors and errors
        a retry cures propagate; what is left stays in the outbox."""
        total = Written([], [])
        for index, p in enumerate(pending):
            try:
                part = self._run([p])
            except Exception as exc:
                if is_connection_error(exc) or is_transient(exc):
                    self._outbox.give_back(pending[index:])
                    raise
                self._conn.discard()
                reason = outcomes.clean_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                error = {"type": "OutcomeNotStored",
                         "message": f"the database refused this attempt's outcome: {reason}",
                         "traceback": ""}
                o = p.outcome
                replacement = Pending(outcomes.Outcome(
                    o.job_id, o.runner_id, o.attempt, "failed", error=serialization.dumps(error),
                    failed=True, reason=f"failed: its outcome could not be stored: {reason}"))
                self._outbox.replace(p, replacement)
                try:
                    part = self._run([replacement])
                except Exception:
                    self._outbox.give_back([replacement, *pending[index + 1:]])
                    raise
            total.written += part.written
            total.fenced_out += part.fenced_out
        return total
