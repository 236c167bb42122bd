"""Connections of a runner's services, and one log line per database outage.

A worker process holds two connections of its own: the claim loop's (claims, outcomes,
maintenance: everything that touches the jobs table) and the control connection (LISTEN and
heartbeats: only the runners table, so a lock held on jobs never silences a heartbeat). Each
is opened lazily and replaced after an error. TCP keepalives make a vanished server or host
show up as an error within seconds, even on a connection that only sits in LISTEN.

On connecting, each connection finds out whether it reaches the server directly: a pooler in
between (PgBouncer, pgpool, a cloud proxy) answers with its own backend key and its own
client port. Behind a pooler, session state cannot be trusted: no session settings are set,
prepared statements are off unless asked for, and the runner's liveness lock is not used
(the lease alone decides whether a runner is dead).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import psycopg

from .. import db, sqlfiles

logger = logging.getLogger(__name__)


class OutageLog:
    """Shared by a runner's services: one warning when the database becomes unreachable,
    one line when every service reaches it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._since: float | None = None

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def failed(self, service: str, exc: BaseException) -> None:
        with self._lock:
            self._failing.add(service)
            if self._since is None:
                self._since = time.monotonic()
                logger.warning("database unavailable (%s: %s); retrying with backoff",
                               service, db._one_line(exc))

    def ok(self, service: str) -> None:
        if self._since is None:
            return
        with self._lock:
            self._failing.discard(service)
            if not self._failing and self._since is not None:
                logger.warning("database reachable again after %.1f s", time.monotonic() - self._since)
                self._since = None


class Backoff:
    """Exponential delays with jitter for reconnect loops: ``first`` doubling up to ``maximum``."""

    def __init__(self, first: float = 0.25, maximum: float = 5.0) -> None:
        self.first, self.maximum = first, maximum
        self._attempt = 0

    def next(self) -> float:
        delay = min(self.first * (2 ** min(self._attempt, 30)), self.maximum)
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


class Service:
    """A background loop on its own daemon thread and connection: ``start()``, ``stop()``,
    and ``_loop()`` (the subclass's), which returns once ``_stop`` is set."""

    name = "service"

    def __init__(self, connection: "ServiceConnection") -> None:
        self._conn = connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connection(self) -> "ServiceConnection":
        return self._conn

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"pgqueue-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._conn.discard()

    def _loop(self) -> None:
        raise NotImplementedError


# What the server says about the session: compared with what the client sees, by
# reached_directly() (also run on async connections, by pgqueue.aio).
DIRECT_CHECK = "SELECT pg_backend_pid(), inet_client_port()"


def reaches_server_directly(conn: psycopg.Connection) -> bool:
    """Whether ``conn`` talks to a PostgreSQL backend with no pooler in between: the backend's
    own pid matches the key it sent at connection time, and, over TCP, the client port it sees
    is this socket's."""
    return reached_directly(conn, conn.execute(DIRECT_CHECK).fetchone())


def reached_directly(conn: Any, row: Any) -> bool:
    """:func:`reaches_server_directly`, given the row of ``DIRECT_CHECK`` run on ``conn`` (a
    psycopg connection, sync or async)."""
    if row is None or row[0] != conn.info.backend_pid:
        return False
    seen_port = row[1]
    try:
        # A duplicate of the descriptor: the socket object detects the family, and closing it
        # leaves the connection's own descriptor open.
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            family = sock.family
            local = sock.getsockname()
    except OSError:
        return seen_port is None
    if family == socket.AF_UNIX or not isinstance(local, tuple):
        return seen_port is None
    return seen_port == local[1]


class ServiceConnection:
    """One service's connection: ``get()`` opens it when needed, ``discard()`` after an error.

    ``generic_plans``: the connection runs only pgqueue's few hot statements, whose plans do
    not depend on parameter values; planning them anew at each execution would cost more than
    running them. They are all index-driven, so sequential scans are switched off: a plan
    cached while the table was empty must not stay a sequential scan once it is big.

    ``io_timeout`` bounds how long a statement may take, on the server (statement_timeout) and
    on the wire (tcp_user_timeout: unacknowledged data, for a server or host that vanished
    mid-statement; keepalives only cover idle connections), and how long a transaction may sit
    idle holding locks (idle_in_transaction_session_timeout). ``lock_timeout``: how long a
    statement may wait for a row or table lock before it fails (and is retried).

    ``prepared``: "auto" (psycopg's automatic preparation on direct connections, off behind a
    pooler), "on" or "off". ``on_connect`` runs on every new connection (the runner takes its
    liveness lock there).
    """

    def __init__(self, dsn: str, role: str, connect_timeout: float, *,
                 generic_plans: bool = False, io_timeout: float | None = None,
                 lock_timeout: float | None = None, prepared: str = "auto",
                 on_connect: Callable[["ServiceConnection", psycopg.Connection], None] | None = None) -> None:
        self.dsn = dsn
        self.role = role
        self.connect_timeout = connect_timeout
        self.generic_plans = generic_plans
        self.io_timeout = io_timeout
        self.lock_timeout = lock_timeout
        self.prepared = prepared
        self.on_connect = on_connect
        self.direct: bool | None = None  # known once connected
        self.connected_at: float | None = None
        #: The runner whose liveness lock this session holds (None: none).
        self.locked_runner: int | None = None
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self.discard()
            extra: dict[str, object] = {}
            if not os.environ.get("PGAPPNAME"):
                extra["application_name"] = f"pgqueue {self.role}"
            if self.io_timeout:
                extra["tcp_user_timeout"] = max(int(self.io_timeout * 1000), 1000)
            conn = db.connect(
                self.dsn, connect_timeout=self.connect_timeout,
                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                **extra,
            )
            try:
                self._configure(conn)
            except Exception:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            self._conn = conn
            self.connected_at = time.monotonic()
            self.locked_runner = None
            if self.on_connect is not None:
                self.on_connect(self, conn)
        return conn

    def _configure(self, conn: psycopg.Connection) -> None:
        self.direct = reaches_server_directly(conn)
        if self.prepared == "off" or (self.prepared == "auto" and not self.direct):
            conn.prepare_threshold = None
        if not self.direct:
            return  # behind a pooler a session setting would land on someone else's session
        settings = {"jit": "off"}
        if self.generic_plans:
            settings["plan_cache_mode"] = "force_generic_plan"
            settings["enable_seqscan"] = "off"
        if self.io_timeout:
            # A statement may take io_timeout; a transaction left idle that long (its thread
            # stalled, its process paused) is ended, and its locks released.
            millis = str(max(int(self.io_timeout * 1000), 1000))
            settings["statement_timeout"] = millis
            settings["idle_in_transaction_session_timeout"] = millis
        if self.lock_timeout:
            settings["lock_timeout"] = str(max(int(self.lock_timeout * 1000), 100))
        names = list(settings)
        conn.execute(
            "SELECT " + ", ".join(f"set_config(%(n{i})s, %(v{i})s, false)" for i in range(len(names))),
            {**{f"n{i}": n for i, n in enumerate(names)}, **{f"v{i}": settings[n] for i, n in enumerate(names)}},
        )

    def run(self, statement: sqlfiles.RawStatement, params: Mapping[str, Any]) -> list[tuple]:
        """Run one of pgqueue's statements (``$n`` placeholders: no parsing on the client)."""
        conn = self.get()
        with psycopg.RawCursor(conn) as cur:
            cur.execute(statement.text, statement.params(params))
            return cur.fetchall() if cur.description else []

    def run_one(self, statement: sqlfiles.RawStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        rows = self.run(statement, params)
        return rows[0] if rows else None

    def discard(self) -> None:
        conn, self._conn = self._conn, None
        self.locked_runner = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class BorrowedConnection:
    """A connection someone else owns, with the ``get``/``run`` interface of
    :class:`ServiceConnection` (tests and tools run the worker's statements on it)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self.direct = True
        self.locked_runner: int | None = None

    def get(self) -> psycopg.Connection:
        return self._conn

    run = ServiceConnection.run
    run_one = ServiceConnection.run_one

    def discard(self) -> None:
        """Not ours to close."""


# deadlock_detected, serialization_failure, lock_not_available, query_canceled (our own
# statement_timeout): the statement failed, nothing was written; trying again is right.
_TRANSIENT_STATES = {"40P01", "40001", "55P03", "57014"}


def is_transient(exc: BaseException) -> bool:
    """A statement error that a retry can cure (not the database being unreachable)."""
    return getattr(exc, "sqlstate", None) in _TRANSIENT_STATES


def is_connection_error(exc: BaseException) -> bool:
    """Errors that mean "the database is not reachable right now", worth retrying."""
    from .. import errors

    if is_transient(exc):
        return False
    if isinstance(exc, (psycopg.OperationalError, errors.DatabaseUnavailable)):
        return True
    state = getattr(exc, "sqlstate", None)
    # admin_shutdown, crash_shutdown, cannot_connect_now, connection errors, read-only
    # (a primary demoted during failover)
    return bool(state) and (state.startswith("08") or state in ("57P01", "57P02", "57P03", "25006"))
