"""Connections: DSN checks, the App's pool, the caller's own connection, error translation.

pgqueue's statements use only ``%(name)s`` placeholders, send JSON as text and cast
it in SQL (``%(args)s::jsonb``), and pass arrays as Python lists. Any DB-API driver
for PostgreSQL with the ``pyformat`` style runs them unchanged, which is how a
caller's own connection takes part: a psycopg 3 connection, a psycopg 2
connection, Django's ``connection`` or an SQLAlchemy ``Connection``/``Session``
(see :func:`run_on`).

psycopg errors are translated here and only here, always with ``raise ... from``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
from typing import Any, Iterator, Mapping, Sequence

import psycopg
import psycopg_pool
from psycopg import conninfo
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from . import errors

logger = logging.getLogger(__name__)

# admin_shutdown, crash_shutdown, cannot_connect_now: reported to an idle session.
_SESSION_ENDED_WHILE_IDLE = {"57P01", "57P02", "57P03"}
# SQLSTATEs meaning "the pgqueue schema is not there (or is older than this code)".
_MISSING_SCHEMA_STATES = {"42P01", "3F000", "42883", "42703"}
_CONSTRAINT_MESSAGES = {
    "jobs_args_is_array": "job args must be a JSON array",
    "jobs_kwargs_is_object": "job kwargs must be a JSON object",
    "jobs_queue_not_empty": "queue name must not be empty",
    "jobs_task_not_empty": "task name must not be empty",
    "jobs_max_attempts_positive": "max_attempts must be at least 1",
    "jobs_queue_length": "queue names are at most 128 characters",
    "jobs_task_length": "task names are at most 255 characters",
    "jobs_key_length": "keys are at most 512 characters",
}


# ----------------------------------------------------------------------- DSNs

def normalise_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (``postgresql+psycopg://``) as well as libpq ones."""
    return re.sub(r"^postgres(ql)?\+[a-z0-9_]+://", "postgresql://", dsn.strip())


def check_dsn(dsn: str, source: str | None = None) -> dict[str, str]:
    """Parse a DSN, or raise ConfigurationError saying what is wrong with it (and where
    it came from, when ``source`` says)."""
    origin = f" (from {source})" if source else ""
    if not dsn or not dsn.strip():
        raise errors.ConfigurationError(
            f"the DSN is empty{origin}; give a PostgreSQL URL such as postgresql://user@host/db")
    try:
        return conninfo.conninfo_to_dict(normalise_dsn(dsn))
    except psycopg.ProgrammingError as exc:
        raise errors.ConfigurationError(
            f"cannot parse DSN {mask_dsn(dsn)!r}{origin}: {_one_line(exc)}; expected a URL like "
            "postgresql://user:password@host:5432/dbname or key=value pairs"
        ) from exc


def mask_dsn(dsn: str) -> str:
    """The DSN as it can be shown in logs and errors: no password."""
    try:
        parts = conninfo.conninfo_to_dict(normalise_dsn(dsn))
    except psycopg.ProgrammingError:
        # Unparseable: hide anything that looks like a password.
        text = re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)
    user = parts.get("user", "")
    password = ":***" if parts.get("password") else ""
    at = "@" if user or password else ""
    host = parts.get("host", "")
    port = f":{parts['port']}" if parts.get("port") else ""
    dbname = parts.get("dbname", "")
    return f"postgresql://{user}{password}{at}{host}{port}/{dbname}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.removeprefix("connection failed: ")


# What the server says when a connection can never work as configured: waiting would not help.
_UNFIXABLE = (
    (re.compile(r'role "([^"]*)" does not exist'),
     "the role {0!r} does not exist on the server: fix the user in the DSN, or create the role"),
    (re.compile(r'database "([^"]*)" does not exist'),
     "the database {0!r} does not exist on the server: fix the database name in the DSN, or "
     "create it (createdb)"),
    (re.compile(r'password authentication failed for user "([^"]*)"'),
     "the password for user {0!r} was refused: fix the password in the DSN (or PGPASSWORD)"),
    (re.compile(r"no password supplied|fe_sendauth"),
     "the server asks for a password and none was given: add it to the DSN (or PGPASSWORD)"),
    (re.compile(r'no pg_hba\.conf entry for host "([^"]*)"'),
     "the server refuses connections from {0!r} (no pg_hba.conf entry): allow this host, or use "
     "another one"),
    (re.compile(r"(?:Peer|Ident) authentication failed for user \"([^\"]*)\""),
     "the server refused user {0!r} (peer/ident authentication): connect over TCP with a password, "
     "or run as that operating-system user"),
)
_UNFIXABLE_STATES = {"28P01", "28000", "3D000", "42704"}


def unfixable_by_waiting(exc: BaseException) -> str | None:
    """When a connection failed for a reason no retry can cure (bad password, unknown role or
    database), what to fix, in one line; else None. (A host that does not resolve or a server
    that refuses connections may come up: those are waited for.)"""
    text = " ".join(str(exc).split())
    for pattern, advice in _UNFIXABLE:
        match = pattern.search(text)
        if match:
            groups = [g for g in match.groups() if g is not None]
            return advice.format(*groups) if groups else advice
    if getattr(exc, "sqlstate", None) in _UNFIXABLE_STATES:
        return _one_line(exc)
    return None


def connect(dsn: str, *, connect_timeout: float = 5.0, autocommit: bool = True,
            **kwargs: Any) -> psycopg.Connection:
    """Open one connection, or raise DatabaseUnavailable naming the DSN and the cause."""
    check_dsn(dsn)
    try:
        return psycopg.connect(
            normalise_dsn(dsn),
            autocommit=autocommit,
            connect_timeout=max(2, math.ceil(connect_timeout)),
            **kwargs,
        )
    except psycopg.OperationalError as exc:
        raise errors.DatabaseUnavailable(
            f"cannot connect to {mask_dsn(dsn)}: {_one_line(exc)}"
        ) from exc


class UndecodableJSON(str):
    """A JSON value PostgreSQL holds but Python cannot decode (nesting deeper than the
    decoder allows, an integer over Python's digit limit): its text, as read."""


def _json_loads(data: bytes | str) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return UndecodableJSON(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)


def configure_session(conn: psycopg.Connection, prepared: str = "auto") -> None:
    """Settings for every pgqueue pool connection. JIT compilation costs tens of milliseconds
    and pays off only for long analytical queries: pgqueue's statements are short. Behind a
    pooler (PgBouncer, a cloud proxy) no session setting is made (it would land on another
    client's session) and, unless asked for, no statement is prepared (a transaction-mode
    pooler hands the next statement to a server session that never saw it prepared)."""
    from .worker.connections import reaches_server_directly

    for statement in session_setup(conn, reaches_server_directly(conn), prepared):
        conn.execute(statement)


def session_setup(conn: Any, direct: bool, prepared: str) -> list[str]:
    """:func:`configure_session`'s choices, made on ``conn`` (a psycopg connection, sync or
    async): returns the statements to run on it."""
    # A row written by hand may hold JSON that Python cannot decode: reading it must not fail.
    set_json_loads(_json_loads, conn)
    if prepared == "off" or (prepared == "auto" and not direct):
        conn.prepare_threshold = None
    return ["SET jit = off"] if direct else []


# ------------------------------------------------------------ error translation

def translate(exc: Exception, *, schema: str, dsn: str | None = None) -> Exception:
    """Map a driver error onto a pgqueue error where one applies; else return it unchanged."""
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    where = f" in {mask_dsn(dsn)}" if dsn else ""
    if state in _MISSING_SCHEMA_STATES:
        command = "pgqueue migrate" if schema == "pgqueue" else f"pgqueue --schema {schema} migrate"
        return errors.SchemaNotMigrated(
            f"the pgqueue schema {schema!r} is missing or out of date{where}: run `{command}` "
            "(or App.migrate())"
        )
    if state in ("26000", "42P05"):  # invalid_sql_statement_name, duplicate_prepared_statement
        return errors.ConfigurationError(
            f"the server{where} does not know a statement pgqueue prepared on this connection "
            f"({_one_line(exc)}): a connection pooler in transaction mode is in between; set "
            "prepared_statements = off (PGQUEUE_PREPARED_STATEMENTS=off), or use session mode"
        )
    if state == "23514":  # check_violation
        diag = getattr(exc, "diag", None)
        constraint = getattr(diag, "constraint_name", None) if diag else None
        if constraint in _CONSTRAINT_MESSAGES:
            return errors.ConfigurationError(_CONSTRAINT_MESSAGES[constraint])
    if isinstance(exc, psycopg.OperationalError) or state in ("57P01", "57P02", "57P03", "08006", "08003"):
        return errors.DatabaseUnavailable(f"lost the database{where}: {_one_line(exc)}")
    return exc


# ------------------------------------------------------------- caller's conns

def run_on(conn: Any, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run one statement on a connection the caller owns, inside its transaction.

    Accepted: a psycopg 3 connection, any DB-API connection (psycopg 2, Django's
    ``connection``), an SQLAlchemy ``Connection`` or ``Session``. pgqueue never
    commits or rolls back such a connection: the caller's transaction decides.
    """
    if is_async_connection(conn):
        raise errors.ConfigurationError(
            f"conn= is an async connection ({type(conn).__name__}): enqueue on it with "
            "`await ....aenqueue(...)` (the blocking enqueue() cannot use it)")
    if hasattr(conn, "get_bind") and hasattr(conn, "connection") and hasattr(conn, "execute"):
        conn = conn.connection()  # SQLAlchemy Session -> its Connection (same transaction)
    if hasattr(conn, "exec_driver_sql"):
        # SQLAlchemy Connection: go through it, so it knows a transaction has begun.
        result = conn.exec_driver_sql(query, dict(params))
        return [dict(r) for r in result.mappings().all()] if result.returns_rows else []
    dbapi = _dbapi_connection(conn)
    if isinstance(dbapi, psycopg.Connection):
        with dbapi.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    cursor = dbapi.cursor()
    try:
        cursor.execute(query, params)
        if not cursor.description:
            return []
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def is_async_connection(conn: Any) -> bool:
    """A psycopg ``AsyncConnection``, or SQLAlchemy's ``AsyncConnection``/``AsyncSession``
    (``pgqueue.aio`` runs statements on those)."""
    if isinstance(conn, psycopg.AsyncConnection):
        return True
    module = type(conn).__module__ or ""
    return module.startswith("sqlalchemy.ext.asyncio")


def fetch_external(conn: Any, query: str, params: Mapping[str, Any], *,
                   schema: str) -> list[dict[str, Any]]:
    """:func:`run_on` with pgqueue's error translation."""
    try:
        return run_on(conn, query, params)
    except errors.PgQueueError:
        raise
    except Exception as exc:
        translated = translate(exc, schema=schema)
        if translated is exc:
            raise
        raise translated from exc


def _dbapi_connection(conn: Any) -> Any:
    # Django's connection proxy: make sure it is connected, use the driver connection.
    if hasattr(conn, "ensure_connection") and hasattr(conn, "vendor"):
        if conn.vendor != "postgresql":
            raise errors.ConfigurationError(
                f"pgqueue needs a PostgreSQL connection; this Django connection is {conn.vendor!r}"
            )
        conn.ensure_connection()
        return conn.connection
    if hasattr(conn, "cursor"):
        return conn
    raise errors.ConfigurationError(
        f"conn= must be an open database connection (psycopg, Django or SQLAlchemy), "
        f"not {type(conn).__name__}"
    )


# ----------------------------------------------------------------- the pool

def retry_on_fresh_connection(exc: BaseException, attempt: int) -> bool:
    """Whether a statement that failed on a pooled connection may run again on a fresh one:
    only once, and only when the server shut the session down while it sat idle (a restart),
    saying so before running anything, so running it again cannot run it twice."""
    return attempt == 1 and getattr(exc, "sqlstate", None) in _SESSION_ENDED_WHILE_IDLE


class Database:
    """The App's link to PostgreSQL: a lazily opened pool of autocommit connections."""

    def __init__(self, dsn: str, *, schema: str, pool_size: int, connect_timeout: float,
                 prepared: str = "auto") -> None:
        check_dsn(dsn)
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.prepared = prepared
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._lock = threading.Lock()

    @property
    def display(self) -> str:
        return mask_dsn(self.dsn)

    def _open_pool(self) -> psycopg_pool.ConnectionPool:
        with self._lock:
            if self._pool is None or self._pool.closed:
                # One direct connection first: it fails fast with the server's own
                # reason, where the pool would only report a timeout.
                connect(self.dsn, connect_timeout=self.connect_timeout).close()
                pool = psycopg_pool.ConnectionPool(
                    normalise_dsn(self.dsn),
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs={"autocommit": True,
                            "connect_timeout": max(2, math.ceil(self.connect_timeout))},
                    configure=lambda conn: configure_session(conn, self.prepared),
                    open=False,
                    name=f"pgqueue-{self.schema}",
                )
                pool.open(wait=True, timeout=self.connect_timeout + 5)
                self._pool = pool
            return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        pool, conn = self._checkout()
        try:
            with conn:  # commit on success, roll back on an error, as the pool's own would
                yield conn
        finally:
            pool.putconn(conn)

    def _checkout(self) -> tuple[psycopg_pool.ConnectionPool, psycopg.Connection]:
        timeout = self.connect_timeout + 5
        for attempt in (1, 2, 3):
            pool = self._pool or self._open_pool()
            try:
                return pool, pool.getconn(timeout=timeout)
            except psycopg_pool.PoolClosed:
                # Another thread closed the pool between our read and the checkout, or while
                # we waited for a connection (a runner closes the App's pool when it starts,
                # while task or web code may be using it): the next attempt opens a fresh one.
                if attempt == 3:
                    raise
            except psycopg_pool.PoolTimeout as exc:
                raise errors.DatabaseUnavailable(
                    f"no connection to {self.display} within {timeout:.0f} s "
                    "(server down, or every pooled connection busy)"
                ) from exc
        raise AssertionError("not reached")

    def fetch(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement on a pooled connection (its own transaction)."""
        for attempt in (1, 2):
            try:
                with self.connection() as conn:
                    with conn.cursor(row_factory=dict_row) as cur:
                        cur.execute(query, params or {})
                        return cur.fetchall() if cur.description else []
            except errors.PgQueueError:
                raise
            except Exception as exc:
                if retry_on_fresh_connection(exc, attempt):
                    continue
                translated = translate(exc, schema=self.schema, dsn=self.dsn)
                if translated is exc:
                    raise
                raise translated from exc
        raise AssertionError("not reached")

    def close(self) -> None:
        """Close the pool; the next use opens a new one. Connections in use stay open until
        they are returned."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def execute_script(conn: psycopg.Connection, sql_text: str) -> None:
    """Run a multi-statement script (no parameters: psycopg uses the simple protocol)."""
    conn.execute(sql_text.encode())  # bytes: never parsed for placeholders


def fetch_all(conn: psycopg.Connection, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []
