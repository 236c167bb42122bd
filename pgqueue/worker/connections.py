"""Connections of a runner's services, and one log line per database outage.

Each service (claim loop, listener, heartbeat, reaper) owns one autocommit
connection, opened lazily and replaced after an error. TCP keepalives make a
vanished server or host show up as an error within seconds, even on a connection
that only sits in LISTEN.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time

import psycopg

from .. import db

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
    """Exponential delays with jitter for reconnect loops: 0.25 s doubling up to ``maximum``."""

    def __init__(self, first: float = 0.25, maximum: float = 5.0) -> None:
        self.first, self.maximum = first, maximum
        self._attempt = 0

    def next(self) -> float:
        delay = min(self.first * (2 ** self._attempt), self.maximum)
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


class ServiceConnection:
    """One service's connection: ``get()`` opens it when needed, ``discard()`` after an error.

    ``generic_plans``: the connection runs only pgqueue's few hot statements, whose plans
    do not depend on parameter values; planning them anew at each execution would cost
    more than running them.

    ``io_timeout`` bounds how long a statement may take, on the server (statement_timeout)
    and on the wire (tcp_user_timeout: unacknowledged data, for a server or host that
    vanished mid-statement; keepalives only cover idle connections), and how long a
    transaction may sit idle holding locks (idle_in_transaction_session_timeout).
    """

    def __init__(self, dsn: str, role: str, connect_timeout: float, *,
                 generic_plans: bool = False, io_timeout: float | None = None) -> None:
        self.dsn = dsn
        self.role = role
        self.connect_timeout = connect_timeout
        self.generic_plans = generic_plans
        self.io_timeout = io_timeout
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
            db.configure_session(conn)
            if self.generic_plans:
                conn.execute("SET plan_cache_mode = force_generic_plan")
            if self.io_timeout:
                # A statement may take io_timeout; a transaction left idle that long (its
                # thread stalled, its process paused) is ended, and its locks released.
                millis = str(max(int(self.io_timeout * 1000), 1000))
                conn.execute("SELECT set_config('statement_timeout', %(ms)s, false), "
                             "set_config('idle_in_transaction_session_timeout', %(ms)s, false)",
                             {"ms": millis})
            self._conn = conn
        return conn

    def discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


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
