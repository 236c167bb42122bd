"""The dashboard's way to the database: a small pool of its own, one short transaction per
panel, and a shared cache for the aggregates every open tab asks for.

* The pool (at most ``pool_size`` connections, 4 by default) is apart from the App's: a
  dashboard left open in ten tabs never takes a connection the application needs, and its
  connections never prepare statements, so each read is planned with its own parameter
  values (see ``sql/queries/dashboard.sql``).
* Each panel (one statement) runs in its own ``READ ONLY`` transaction with a local
  ``statement_timeout`` and ``jit = off``: safe behind a transaction-mode pooler, and a panel
  that is too slow on this database ends after the timeout and says "timed out" while the
  rest of the page renders. A panel never writes; actions go through :meth:`Reader.write`,
  a read-write transaction with the same timeout.
* :class:`Cache` keeps the overview's aggregates for a couple of seconds and lets one
  request compute a value while the others wait for it: ten tabs polling the overview cost
  one query per interval, not ten.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from .. import db, sqlfiles

logger = logging.getLogger(__name__)

Rows = list[dict[str, Any]]


@dataclass
class Panel:
    """The result of one read: rows, or why there are none (timed out, failed)."""

    rows: Rows = field(default_factory=list)
    timed_out: bool = False
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.error is None

    @property
    def first(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    @property
    def problem(self) -> str | None:
        """What to show instead of the panel's content, or None."""
        if self.timed_out:
            return "timed out"
        return self.error


class Reader:
    def __init__(self, dsn: str, schema: str, *, pool_size: int = 4, statement_timeout: float = 3.0,
                 connect_timeout: float = 5.0) -> None:
        if not (math.isfinite(statement_timeout) and statement_timeout > 0):
            raise ValueError(f"statement_timeout must be a positive number of seconds, not {statement_timeout!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        db.check_dsn(dsn)
        self.dsn = dsn
        self.schema = schema
        self.queries = sqlfiles.queries_for(schema)
        self.pool_size = pool_size
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._lock = threading.Lock()
        #: Statements run, by query name (tests and the cost of a page).
        self.counts: collections.Counter[str] = collections.Counter()
        self._begin_read = self._begin(read_only=True)
        self._begin_write = self._begin(read_only=False)

    def _begin(self, *, read_only: bool) -> bytes:
        ms = max(int(self.statement_timeout * 1000), 1)
        mode = "READ ONLY" if read_only else "READ WRITE"
        # One round trip: BEGIN and the transaction's settings (simple protocol, no parameters).
        return (f"BEGIN {mode}; SET LOCAL statement_timeout = {ms}; "
                f"SET LOCAL lock_timeout = {ms}; SET LOCAL jit = off").encode()

    # ------------------------------------------------------------------ pool

    def _get_pool(self) -> psycopg_pool.ConnectionPool:
        with self._lock:
            if self._pool is None:
                pool = psycopg_pool.ConnectionPool(
                    db.normalise_dsn(self.dsn), min_size=1, max_size=self.pool_size,
                    kwargs={"autocommit": True, "prepare_threshold": None,
                            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
                            "application_name": "pgqueue-dashboard"},
                    open=False, name=f"pgqueue-dashboard-{self.schema}",
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    @contextlib.contextmanager
    def session(self) -> Iterator["Session"]:
        """One pooled connection for the panels of one request (returned at the end)."""
        session = Session(self)
        try:
            yield session
        finally:
            session.release()

    def read(self, name: str, params: Mapping[str, Any] | None = None) -> Panel:
        with self.session() as session:
            return session.read(name, params)

    def write(self, name: str, params: Mapping[str, Any]) -> Rows:
        """Run one action statement in a read-write transaction with the statement timeout.
        Errors propagate (the action reports them)."""
        with self.session() as session:
            return session.write(name, params)


class Session:
    """Reads of one request, on one connection taken when first needed."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._conn: psycopg.Connection | None = None
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._unavailable: str | None = None

    def _connection(self) -> psycopg.Connection:
        if self._unavailable is not None:
            raise Unavailable(self._unavailable)
        if self._conn is None:
            pool = self.reader._get_pool()
            try:
                self._conn = pool.getconn(timeout=self.reader.connect_timeout)
            except psycopg_pool.PoolTimeout as exc:
                self._unavailable = (f"no connection to {db.mask_dsn(self.reader.dsn)} within "
                                     f"{self.reader.connect_timeout:g} s (server down, or the "
                                     f"dashboard's {self.reader.pool_size} connections busy)")
                raise Unavailable(self._unavailable) from exc
            self._pool = pool
        return self._conn

    def release(self) -> None:
        if self._conn is not None and self._pool is not None:
            conn, self._conn = self._conn, None
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(Exception):
                    conn.rollback()
            self._pool.putconn(conn)

    def _run(self, name: str, params: Mapping[str, Any] | None, begin: bytes) -> Rows:
        reader = self.reader
        query = reader.queries[name]
        conn = self._connection()
        reader.counts[name] += 1
        try:
            conn.execute(begin)
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params or {})
                rows = cur.fetchall() if cur.description else []
            conn.execute(b"COMMIT")
            return rows
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(Exception):
                    conn.execute(b"ROLLBACK")
            if conn.closed or conn.broken:
                # A connection the server closed: the pool replaces it; later panels of this
                # request get a fresh one.
                pool, self._conn = self._pool, None
                if pool is not None:
                    with contextlib.suppress(Exception):
                        pool.putconn(conn)
            raise

    def read(self, name: str, params: Mapping[str, Any] | None = None) -> Panel:
        """One read-only statement; a timeout or a database error becomes the panel's text."""
        started = time.monotonic()
        try:
            rows = self._run(name, params, self.reader._begin_read)
        except psycopg.errors.QueryCanceled:
            logger.warning("dashboard: %s timed out after %g s", name, self.reader.statement_timeout)
            return Panel(timed_out=True, seconds=time.monotonic() - started)
        except psycopg.errors.LockNotAvailable:
            logger.warning("dashboard: %s waited longer than %g s for a lock", name,
                           self.reader.statement_timeout)
            return Panel(timed_out=True, seconds=time.monotonic() - started)
        except Unavailable as exc:
            return Panel(error=str(exc), seconds=time.monotonic() - started)
        except psycopg.Error as exc:
            translated = db.translate(exc, schema=self.reader.schema, dsn=self.reader.dsn)
            logger.error("dashboard: %s failed: %s", name, db._one_line(exc))
            return Panel(error=db._one_line(translated), seconds=time.monotonic() - started)
        return Panel(rows, seconds=time.monotonic() - started)

    def write(self, name: str, params: Mapping[str, Any]) -> Rows:
        return self._run(name, params, self.reader._begin_write)


class Unavailable(Exception):
    """The dashboard could not get a connection."""


class Cache:
    """Values kept for ``ttl`` seconds, computed once however many requests ask at the same time."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def clear(self) -> None:
        """Forget every value (after an action: the page it redirects to shows its effect)."""
        with self._guard:
            self._values.clear()

    def get(self, key: Any, compute: Callable[[], Any], *, keep: Callable[[Any], bool] = lambda v: True) -> Any:
        if self.ttl <= 0:
            return compute()
        now = self._clock()
        hit = self._values.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            # Another request may have computed it while this one waited.
            hit = self._values.get(key)
            if hit is not None and hit[0] > self._clock():
                return hit[1]
            value = compute()
            if keep(value):
                with self._guard:
                    if len(self._values) > 256:
                        self._values.clear()
                    self._values[key] = (self._clock() + self.ttl, value)
            return value
