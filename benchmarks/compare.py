"""pgqueue side by side with PgQueuer and procrastinate, on one PostgreSQL server, in one run.

Run from the repository root with the worktree's venv::

    .venv/bin/python benchmarks/compare.py --setup           # create the peers' venvs, then exit
    .venv/bin/python benchmarks/compare.py                   # 3 interleaved rounds (about 15-20 min)
    .venv/bin/python benchmarks/compare.py --quick           # 1 small round (about 4 min)
    .venv/bin/python benchmarks/compare.py --only drain,latency --systems pgqueue,pgqueuer
    .venv/bin/python benchmarks/compare.py --json results.json

How it runs
-----------
* **Systems.** pgqueue runs from this checkout (its CLI, ``pgqueue ... work``, with the
  interpreter of the worktree's ``.venv``, else the one running this script). Each peer
  runs from its own virtualenv, ``benchmarks/.venvs/<peer>``, created on first use (or by
  ``--setup``) with the versions pinned in ``PEERS`` below. Every system's worker is a
  subprocess of that system's interpreter loading a small app module from
  ``benchmarks/peers/`` (``pgqueue_app``, ``pgqueuer_app``, ``procrastinate_app``);
  jobs are written by ``benchmarks/peers/harness.py`` with the same interpreter, through
  each library's documented enqueue API. This script itself only talks SQL: it treats
  every system, pgqueue included, as a black box reached through its CLI and its tables.
* **Databases.** Each system has its own database. At the start of a run, a template
  database ``cmp_<system>_template`` is created and the system's own tool installs its
  schema into it (``pgqueue migrate``, ``pgq install``, ``procrastinate schema --apply``).
  Every single measurement then gets a brand-new database ``cmp_<system>`` cloned from
  that template (``CREATE DATABASE ... TEMPLATE``, a fraction of a second) and dropped
  right after (``DROP DATABASE ... WITH (FORCE)``): no measurement sees another's rows,
  dead tuples or bloat, and no system-specific truncation logic is needed. The templates
  are dropped at the end (also on errors and Ctrl-C).
* **Interleaving.** For each round, each scenario is measured for every system in turn
  before the next scenario starts; the order of the systems rotates by one each round
  (round 1: pgqueue, pgqueuer, procrastinate; round 2: pgqueuer, procrastinate, pgqueue;
  ...), so slow drifts of a shared machine hit every system alike. Reported: the median
  over rounds (min and max beside it) and the ratio pgqueue / peer of the medians, with
  the range of the per-round ratios (each round's pgqueue value over the same round's
  peer value).
* **Settings.** "defaults" means the library's own defaults: no option given to the
  worker. "concurrency N" (``--concurrency``, 20) gives each worker the knob that bounds
  how many jobs one worker process runs at once: pgqueue ``--concurrency N``; PgQueuer
  ``max_concurrent_tasks=N`` (with ``batch_size=min(10, N // 2)``, since PgQueuer
  requires ``max_concurrent_tasks >= 2 * batch_size``; 10 is its default batch size);
  procrastinate ``--concurrency N``. Logging is at WARNING for all three (procrastinate's
  CLI defaults to INFO, two log lines per job). Tasks: ``async def`` for the peers (the
  form both are built around; PgQueuer accepts nothing else), plain ``def`` for pgqueue
  (its usual form, run on threads; ``--pgqueue-tasks async`` switches pgqueue to
  ``async def`` tasks too).
* **Server state.** Before each measurement the bench issues ``CHECKPOINT`` (so no
  measurement inherits another's dirty buffers or a checkpoint due; ``--no-checkpoint``
  skips it). Once a drain's backlog is written, the bench runs ``ANALYZE`` in that
  database: on a server with autovacuum on (the usual case) the freshly loaded queue
  table would be analysed soon; on one with autovacuum off, the peers' claim queries
  would run without statistics. ``--no-analyze`` skips it.

Scenarios (``--only`` takes a comma-separated list)
--------------------------------------------------
``drain``
    Throughput of ONE worker process draining a backlog written before it starts:
    ``--jobs`` (20,000) no-op jobs, and ``--sleep-jobs`` (2,000) jobs that sleep
    ``--sleep-ms`` (10 ms), each at the library defaults and at concurrency N. The
    backlog is one bulk enqueue. Completion is polled (every 0.1 s, with a deadline) from
    the system's own tables; then every job must be completed exactly once (below), and
    the rate is taken from the database clock only: N / (last finish - first start),
    from the system's own timestamps, so worker start-up is not counted. The worker is
    then stopped with SIGTERM and must exit with status 0.
``enqueue``
    Single-job transactions: ``--clients`` (1 and 4) client processes each enqueue no-op
    jobs one at a time (one transaction each, the library's single-job call) for
    ``--duration`` (3 s) after 10 warm-up enqueues; they start together. Rate = the sum
    over clients of jobs / seconds; the row count in the database must match. No worker
    runs: pgqueue then sends no NOTIFY (it notifies only when a worker waits), while
    PgQueuer's and procrastinate's insert triggers always do.
``bulk``
    One bulk call of ``--jobs`` no-op jobs (``app.enqueue_many``, ``Queries.enqueue``
    with lists, ``task.batch_defer_async``), client wall clock, connection opened first.
``latency``
    Enqueue-to-start latency with an idle worker at its defaults: after 5 warm-up jobs
    have completed, ``--latency-jobs`` (200) single no-op jobs are enqueued
    ``--latency-spacing`` (25 ms) apart. Per job, start - enqueue from the system's own
    timestamps (both the database clock). p50, p95, p99 in ms.
``recovery``
    A worker at its defaults runs one job sleeping ``--recovery-job-seconds`` (2 s);
    once the job has run 0.5 s, the worker's process group is SIGKILLed and a second
    worker (defaults) is started. Measured on the database clock from the kill: until
    the job starts again, and until it has completed. A system that has not completed
    the job within ``--recovery-timeout`` (60 s) is reported as "not recovered within
    60 s": a result, not a failure. No peer gets recovery code its defaults lack
    (procrastinate documents a user-written periodic task for stalled jobs; it is not
    added).

Completion, per system (all from the system's own tables)
---------------------------------------------------------
* pgqueue: ``pgqueue.jobs``: every row ``status = 'succeeded'`` and ``sum(attempts)`` =
  N (each job claimed once); times ``started_at``, ``finished_at``, ``enqueued_at``.
* PgQueuer: the queue table ``pgqueuer`` is empty (finished jobs are deleted) and
  ``pgqueuer_log`` holds exactly one ``successful`` and one ``picked`` row per job and no
  other outcome; times are ``pgqueuer_log.created`` of the ``queued``, ``picked`` and
  ``successful`` rows.
* procrastinate: ``procrastinate_jobs``: every row ``status = 'succeeded'``, and
  ``procrastinate_events`` one ``started`` and one ``succeeded`` event per job; times are
  the events' ``at`` (``deferred``, ``started``, ``succeeded``).

Every wait polls with a deadline; workers and clients run in their own process groups
and are stopped (SIGTERM, then SIGKILL of the group) in ``finally`` blocks; a worker that
dies has its output shown. A measurement that fails is shown as FAILED and the others
still run; the exit status is then 1 (2: the server cannot be reached or a venv cannot
be set up; 130: interrupted, after cleaning up).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql as pgsql

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
VENVS_DIR = BENCH_DIR / ".venvs"

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SYSTEMS = ("pgqueue", "pgqueuer", "procrastinate")
SCENARIOS = ("drain", "enqueue", "bulk", "latency", "recovery")

# The peers and the exact versions measured (latest releases on PyPI when written).
# psycopg's binary build for procrastinate: pgqueue uses it too (psycopg[binary]), and
# procrastinate would otherwise run on the pure-Python psycopg over the system libpq.
PEERS: dict[str, dict[str, Any]] = {
    "pgqueuer": {"requirements": ["pgqueuer[asyncpg]==1.6.0", "asyncpg==0.32.0"],
                 "package": "pgqueuer", "version": "1.6.0"},
    "procrastinate": {"requirements": ["procrastinate==3.10.0", "psycopg[binary]==3.3.9"],
                      "package": "procrastinate", "version": "3.10.0"},
}

POLL = 0.1  # seconds between polls of the database while waiting
WORKER_STOP_TIMEOUT = 45.0  # SIGTERM until exit (pgqueue's shutdown_timeout is 30 s)
CLIENT_TIMEOUT = 60.0  # a harness client: start-up, import, connect, warm-up
LATENCY_WARMUP = 5


class BenchError(Exception):
    """A measurement could not be made; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ database helpers

def dsn_for(base: str, dbname: str) -> str:
    """``base`` pointed at database ``dbname``, as a URL (asyncpg takes URLs only)."""
    params = pg_conninfo.conninfo_to_dict(base)
    params.pop("dbname", None)
    host = str(params.pop("host", None) or "127.0.0.1")
    port = params.pop("port", None)
    user = params.pop("user", None)
    password = params.pop("password", None)
    auth = ""
    if user:
        auth = quote(str(user), safe="")
        if password:
            auth += ":" + quote(str(password), safe="")
        auth += "@"
    if host.startswith("/"):  # a Unix socket directory
        netloc = quote(host, safe="")
    else:
        netloc = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets
    url = f"postgresql://{auth}{netloc}{':' + str(port) if port else ''}/{quote(dbname, safe='')}"
    if params:
        url += "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())
    return url


def mask(dsn: str) -> str:
    params = pg_conninfo.conninfo_to_dict(dsn)
    if params.get("password"):
        params["password"] = "***"
    return " ".join(f"{k}={v}" for k, v in params.items())


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def one(conn: psycopg.Connection, query: str | pgsql.Composable, params: Any = None) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def wait_until(what: str, predicate: Callable[[], Any], timeout: float,
               check: Callable[[], None] | None = None, progress: Callable[[], str] | None = None,
               poll: float = POLL) -> Any:
    """Poll ``predicate`` until it returns a true value (returned); BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            state = f" ({progress()})" if progress is not None else ""
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}{state}")
        time.sleep(poll)


class Server:
    """The admin side: databases per system, checkpoints."""

    def __init__(self, dsn: str, checkpoint: bool) -> None:
        self.dsn = dsn
        self.checkpoint_enabled = checkpoint

    def execute(self, query: str | pgsql.Composable) -> None:
        with connect(self.dsn) as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        self.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))

    def create_database(self, name: str, template: str | None = None) -> None:
        query = pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name))
        if template:
            query = pgsql.SQL("{} TEMPLATE {}").format(query, pgsql.Identifier(template))
            # CREATE DATABASE ... TEMPLATE needs the template free of sessions; a tool that
            # just installed the schema may still be disconnecting.
            with connect(self.dsn) as conn:
                wait_until(f"no session on database {template!r}", lambda: one(
                    conn, "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE datname = %s)",
                    (template,))[0], timeout=15, poll=0.05)
        self.execute(query)

    def checkpoint(self) -> None:
        if self.checkpoint_enabled:
            self.execute("CHECKPOINT")

    def settings(self) -> dict[str, str]:
        names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "autovacuum",
                 "shared_buffers", "max_wal_size", "checkpoint_timeout", "max_connections")
        with connect(self.dsn) as conn:
            rows = conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                                (list(names),)).fetchall()
        return dict(rows)


# ----------------------------------------------------------------------- processes

class Proc:
    """A subprocess in its own process group, its stderr (and stdout unless piped) in a temp file.

    Leaving the context stops what still runs: SIGTERM to the process, then SIGKILL to the
    whole group, so nothing it started survives.
    """

    live: set["Proc"] = set()  # safety net for the top-level finally

    def __init__(self, label: str, command: list[str], env: dict[str, str], cwd: Path,
                 pipe: bool = False) -> None:
        self.label = label
        self.command = command
        self._log = tempfile.TemporaryFile(prefix="compare-")
        self.proc = subprocess.Popen(
            command, env=env, cwd=cwd, start_new_session=True,
            stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else self._log, stderr=self._log)
        self.pgid = self.proc.pid  # start_new_session: the child leads its own group
        self._buffer = b""
        Proc.live.add(self)

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            self.kill_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._log.close()
            Proc.live.discard(self)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)

    def output(self, last: int = 30) -> str:
        with contextlib.suppress(ValueError, OSError):
            self._log.flush()
            self._log.seek(0)
            lines = self._log.read().decode(errors="replace").splitlines()
            return "\n".join(f"    | {line}" for line in lines[-last:]) or "    | (no output)"
        return "    | (output unavailable)"

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.label} exited with status {code}; its output:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM, wait for the exit, require status 0."""
        self.check_alive()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait(10)
            raise BenchError(f"{self.label} did not exit within {WORKER_STOP_TIMEOUT:g} s of SIGTERM "
                             f"(killed); its output:\n{self.output()}") from None
        if code != 0:
            raise BenchError(f"{self.label} exited with status {code} after SIGTERM (expected 0); "
                             f"its output:\n{self.output()}")

    # --- the harness's line protocol (pipe=True)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.label} is gone; its output:\n{self.output()}") from None

    def receive(self, event: str, timeout: float) -> dict[str, Any]:
        """The next JSON message from stdout, which must be ``event``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.label}: no {event!r} message within {timeout:g} s; "
                                 f"its output:\n{self.output()}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    code = self.proc.wait(10)
                    raise BenchError(f"{self.label} exited (status {code}) before sending {event!r}; "
                                     f"its output:\n{self.output()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise BenchError(f"{self.label} printed {line[:200]!r}, not a JSON message") from None
        if message.get("event") == "error":
            raise BenchError(f"{self.label} failed: {message.get('message')}\n{message.get('traceback', '')}")
        if message.get("event") != event:
            raise BenchError(f"{self.label}: expected {event!r}, got {message.get('event')!r}")
        return message


# ------------------------------------------------------------------------- systems

class System:
    """One queue library: how to install it, run its worker, and read its tables."""

    name: str
    module: str  # its app module in benchmarks/peers

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.database = f"cmp_{self.name}"
        self.template = f"cmp_{self.name}_template"

    # -- environment

    @property
    def python(self) -> str:
        return str(VENVS_DIR / self.name / "bin" / "python")

    def env(self, dsn: str) -> dict[str, str]:
        # No setting of any system from the environment (each runs at its defaults unless the
        # bench says otherwise); libpq's PG* variables (PGPASSWORD, ...) stay.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PGQUEUE_", "PGQUEUER_", "PROCRASTINATE_")) and k != "PGDSN"}
        env.update(COMPARE_DSN=dsn, PYTHONPATH=str(PEERS_DIR), PYTHONUNBUFFERED="1")
        return env

    def version(self) -> str:
        raise NotImplementedError

    def install(self, dsn: str) -> None:
        raise NotImplementedError

    def worker_command(self, dsn: str, concurrency: int | None) -> list[str]:
        raise NotImplementedError

    def settings_text(self, concurrency: int | None) -> str:
        raise NotImplementedError

    def run_tool(self, what: str, command: list[str], dsn: str, timeout: float = 120,
                 extra_env: dict[str, str] | None = None) -> str:
        try:
            done = subprocess.run(command, env={**self.env(dsn), **(extra_env or {})}, cwd=BENCH_DIR, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name}: {what} did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            raise BenchError(f"{self.name}: {what} failed (status {done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout + done.stderr

    # -- processes

    def worker(self, dsn: str, concurrency: int | None, label: str = "worker") -> Proc:
        return Proc(f"{self.name} {label} ({self.settings_text(concurrency)})",
                    self.worker_command(dsn, concurrency), self.env(dsn), BENCH_DIR)

    def client(self, dsn: str, args: list[str], label: str = "client") -> Proc:
        return Proc(f"{self.name} {label}", [self.python, str(PEERS_DIR / "harness.py"), "--module",
                                             self.module, *args], self.env(dsn), BENCH_DIR, pipe=True)

    # -- tables (each returns plain values; SQL is the system's own schema)

    def count_jobs(self, conn: psycopg.Connection) -> int:
        raise NotImplementedError

    def all_done(self, conn: psycopg.Connection) -> bool:
        raise NotImplementedError

    def progress(self, conn: psycopg.Connection) -> str:
        raise NotImplementedError

    def drain_seconds(self, conn: psycopg.Connection, expected: int) -> float:
        """Check every job completed exactly once; return last finish - first start (s)."""
        raise NotImplementedError

    def latencies_ms(self, conn: psycopg.Connection, ids: list[int]) -> list[float]:
        raise NotImplementedError

    def running_for(self, conn: psycopg.Connection, job_id: int) -> float | None:
        """Seconds the job has been running (database clock), None when not running."""
        raise NotImplementedError

    def recovery_times(self, conn: psycopg.Connection, job_id: int,
                       killed_at: dt.datetime) -> tuple[float | None, float | None]:
        """(kill -> started again, kill -> completed) in seconds; None where not (yet) so."""
        raise NotImplementedError


def secs(value: Any) -> float | None:
    return None if value is None else float(value)


class PgQueue(System):
    name = "pgqueue"
    module = "pgqueue_app"
    schema = "pgqueue"  # pgqueue's default schema

    @property
    def python(self) -> str:
        venv = REPO_ROOT / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() else sys.executable

    def env(self, dsn: str) -> dict[str, str]:
        env = super().env(dsn)
        # The checkout first, so the worktree's pgqueue is the one measured; no PGQUEUE_*
        # setting but the database and the log level: every other setting is a default.
        env.update(PYTHONPATH=os.pathsep.join([str(PEERS_DIR), str(REPO_ROOT)]),
                   PGQUEUE_DSN=dsn, PGQUEUE_LOG_LEVEL="WARNING",
                   COMPARE_PGQUEUE_TASKS=self.opts.pgqueue_tasks)
        return env

    def cli(self) -> list[str]:
        script = Path(self.python).parent / "pgqueue"
        return [str(script)] if script.exists() else [self.python, "-m", "pgqueue.cli"]

    def version(self) -> str:
        out = subprocess.run([*self.cli(), "--version"], env=self.env(""), cwd=BENCH_DIR, capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise BenchError(f"pgqueue --version failed: {(out.stderr or out.stdout).strip()}")
        return out.stdout.strip().split()[-1]

    def install(self, dsn: str) -> None:
        self.run_tool("pgqueue migrate", [*self.cli(), "--dsn", dsn, "--schema", self.schema, "--app",
                                          "pgqueue_app:app", "migrate"], dsn)

    def worker_command(self, dsn: str, concurrency: int | None) -> list[str]:
        extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
        return [*self.cli(), "--dsn", dsn, "--schema", self.schema, "--app", "pgqueue_app:app", "work", *extra]

    def settings_text(self, concurrency: int | None) -> str:
        return "defaults" if concurrency is None else f"--concurrency {concurrency}"

    def t(self, name: str) -> pgsql.Composable:
        return pgsql.Identifier(self.schema, name)

    def count_jobs(self, conn: psycopg.Connection) -> int:
        return one(conn, pgsql.SQL("SELECT count(*) FROM {}").format(self.t("jobs")))[0]

    def all_done(self, conn: psycopg.Connection) -> bool:
        return one(conn, pgsql.SQL(
            "SELECT NOT EXISTS (SELECT FROM {j} WHERE status = 'queued') "
            "AND NOT EXISTS (SELECT FROM {j} WHERE status = 'running')").format(j=self.t("jobs")))[0]

    def progress(self, conn: psycopg.Connection) -> str:
        rows = conn.execute(pgsql.SQL("SELECT status, count(*) FROM {} GROUP BY 1 ORDER BY 1")
                            .format(self.t("jobs"))).fetchall()
        return ", ".join(f"{s}: {c}" for s, c in rows) or "no jobs"

    def drain_seconds(self, conn: psycopg.Connection, expected: int) -> float:
        total, succeeded, claims, seconds = one(conn, pgsql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), coalesce(sum(attempts), 0), "
            "extract(epoch FROM max(finished_at) - min(started_at)) FROM {}").format(self.t("jobs")))
        if total != expected or succeeded != expected:
            raise BenchError(f"expected {expected} succeeded jobs, found {self.progress(conn)}")
        if claims != expected:
            raise BenchError(f"{expected} jobs were claimed {claims} times in all (expected once each)")
        return float(seconds)

    def latencies_ms(self, conn: psycopg.Connection, ids: list[int]) -> list[float]:
        rows = conn.execute(pgsql.SQL(
            "SELECT extract(epoch FROM started_at - enqueued_at) * 1000 FROM {} "
            "WHERE id = ANY(%s) AND status = 'succeeded'").format(self.t("jobs")), (ids,)).fetchall()
        return [float(ms) for (ms,) in rows]

    def running_for(self, conn: psycopg.Connection, job_id: int) -> float | None:
        return secs(one(conn, pgsql.SQL(
            "SELECT (SELECT extract(epoch FROM clock_timestamp() - started_at) FROM {} "
            "WHERE id = %s AND status = 'running')").format(self.t("jobs")), (job_id,))[0])

    def recovery_times(self, conn, job_id, killed_at):
        row = conn.execute(pgsql.SQL(
            "SELECT CASE WHEN started_at > %(k)s THEN extract(epoch FROM started_at - %(k)s) END, "
            "CASE WHEN status = 'succeeded' THEN extract(epoch FROM finished_at - %(k)s) END "
            "FROM {} WHERE id = %(id)s").format(self.t("jobs")), {"k": killed_at, "id": job_id}).fetchone()
        return (secs(row[0]), secs(row[1])) if row else (None, None)


class PgQueuer(System):
    name = "pgqueuer"
    module = "pgqueuer_app"

    def version(self) -> str:
        return venv_version(self.name)

    def install(self, dsn: str) -> None:
        # pgq install (durability 'durable', its default) reads the DSN from PGDSN.
        self.run_tool("pgq install", [str(VENVS_DIR / self.name / "bin" / "pgq"), "install"], dsn,
                      extra_env={"PGDSN": dsn})

    def batch_size(self, concurrency: int) -> int:
        return max(1, min(10, concurrency // 2))

    def worker_command(self, dsn: str, concurrency: int | None) -> list[str]:
        extra = [] if concurrency is None else [
            "--batch-size", str(self.batch_size(concurrency)), "--max-concurrent-tasks", str(concurrency)]
        return [self.python, str(PEERS_DIR / "pgqueuer_app.py"), *extra]

    def settings_text(self, concurrency: int | None) -> str:
        if concurrency is None:
            return "defaults"
        return f"batch_size={self.batch_size(concurrency)}, max_concurrent_tasks={concurrency}"

    def count_jobs(self, conn: psycopg.Connection) -> int:
        return one(conn, "SELECT count(*) FROM pgqueuer")[0]

    def all_done(self, conn: psycopg.Connection) -> bool:
        return one(conn, "SELECT NOT EXISTS (SELECT FROM pgqueuer WHERE status IN ('queued', 'picked'))")[0]

    def progress(self, conn: psycopg.Connection) -> str:
        queue = conn.execute("SELECT status::text, count(*) FROM pgqueuer GROUP BY 1 ORDER BY 1").fetchall()
        logged = conn.execute("SELECT status::text, count(*) FROM pgqueuer_log GROUP BY 1 ORDER BY 1").fetchall()
        return ("queue table: " + (", ".join(f"{s}: {c}" for s, c in queue) or "empty")
                + "; log: " + (", ".join(f"{s}: {c}" for s, c in logged) or "empty"))

    def drain_seconds(self, conn: psycopg.Connection, expected: int) -> float:
        left, picked, picked_jobs, ok, ok_jobs, other, seconds = one(conn, """
            SELECT (SELECT count(*) FROM pgqueuer),
                   count(*) FILTER (WHERE status = 'picked'),
                   count(DISTINCT job_id) FILTER (WHERE status = 'picked'),
                   count(*) FILTER (WHERE status = 'successful'),
                   count(DISTINCT job_id) FILTER (WHERE status = 'successful'),
                   count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')),
                   extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                                    - min(created) FILTER (WHERE status = 'picked'))
            FROM pgqueuer_log""")
        if left or ok != expected or ok_jobs != expected or other:
            raise BenchError(f"expected {expected} successful jobs, found {self.progress(conn)}")
        if picked != expected or picked_jobs != expected:
            raise BenchError(f"{expected} jobs were picked {picked} times in all (expected once each)")
        return float(seconds)

    def latencies_ms(self, conn: psycopg.Connection, ids: list[int]) -> list[float]:
        rows = conn.execute("""
            SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked')
                                    - min(created) FILTER (WHERE status = 'queued')) * 1000
            FROM pgqueuer_log WHERE job_id = ANY(%s) GROUP BY job_id
            HAVING count(*) FILTER (WHERE status = 'successful') = 1""", (ids,)).fetchall()
        return [float(ms) for (ms,) in rows if ms is not None]

    def running_for(self, conn: psycopg.Connection, job_id: int) -> float | None:
        return secs(one(conn, "SELECT (SELECT extract(epoch FROM clock_timestamp() - updated) FROM pgqueuer "
                              "WHERE id = %s AND status = 'picked')", (job_id,))[0])

    def recovery_times(self, conn, job_id, killed_at):
        row = conn.execute("""
            SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'picked' AND created > %(k)s) - %(k)s),
                   extract(epoch FROM max(created) FILTER (WHERE status = 'successful') - %(k)s)
            FROM pgqueuer_log WHERE job_id = %(id)s""", {"k": killed_at, "id": job_id}).fetchone()
        return (secs(row[0]), secs(row[1])) if row else (None, None)


class Procrastinate(System):
    name = "procrastinate"
    module = "procrastinate_app"

    def version(self) -> str:
        return venv_version(self.name)

    def cli(self) -> list[str]:
        return [str(VENVS_DIR / self.name / "bin" / "procrastinate"), "--log-level", "warning",
                "--app", "procrastinate_app.app"]

    def install(self, dsn: str) -> None:
        self.run_tool("procrastinate schema --apply", [*self.cli(), "schema", "--apply"], dsn)

    def worker_command(self, dsn: str, concurrency: int | None) -> list[str]:
        extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
        return [*self.cli(), "worker", *extra]

    def settings_text(self, concurrency: int | None) -> str:
        return "defaults" if concurrency is None else f"--concurrency {concurrency}"

    def count_jobs(self, conn: psycopg.Connection) -> int:
        return one(conn, "SELECT count(*) FROM procrastinate_jobs")[0]

    def all_done(self, conn: psycopg.Connection) -> bool:
        return one(conn, "SELECT NOT EXISTS (SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))")[0]

    def progress(self, conn: psycopg.Connection) -> str:
        rows = conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1").fetchall()
        return ", ".join(f"{s}: {c}" for s, c in rows) or "no jobs"

    def drain_seconds(self, conn: psycopg.Connection, expected: int) -> float:
        total, succeeded = one(conn, "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') "
                                     "FROM procrastinate_jobs")
        if total != expected or succeeded != expected:
            raise BenchError(f"expected {expected} succeeded jobs, found {self.progress(conn)}")
        started, started_jobs, ok, ok_jobs, seconds = one(conn, """
            SELECT count(*) FILTER (WHERE type = 'started'),
                   count(DISTINCT job_id) FILTER (WHERE type = 'started'),
                   count(*) FILTER (WHERE type = 'succeeded'),
                   count(DISTINCT job_id) FILTER (WHERE type = 'succeeded'),
                   extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')
                                    - min(at) FILTER (WHERE type = 'started'))
            FROM procrastinate_events""")
        if ok != expected or ok_jobs != expected:
            raise BenchError(f"expected {expected} 'succeeded' events, found {ok} for {ok_jobs} jobs")
        if started != expected or started_jobs != expected:
            raise BenchError(f"{expected} jobs were started {started} times in all (expected once each)")
        return float(seconds)

    def latencies_ms(self, conn: psycopg.Connection, ids: list[int]) -> list[float]:
        rows = conn.execute("""
            SELECT extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started')
                                    - min(e.at) FILTER (WHERE e.type = 'deferred')) * 1000
            FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id
            WHERE e.job_id = ANY(%s) AND j.status = 'succeeded' GROUP BY e.job_id""", (ids,)).fetchall()
        return [float(ms) for (ms,) in rows if ms is not None]

    def running_for(self, conn: psycopg.Connection, job_id: int) -> float | None:
        return secs(one(conn, """
            SELECT (SELECT extract(epoch FROM clock_timestamp() - max(e.at))
                    FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'started'
                    WHERE j.id = %s AND j.status = 'doing')""", (job_id,))[0])

    def recovery_times(self, conn, job_id, killed_at):
        row = conn.execute("""
            SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'started' AND at > %(k)s) - %(k)s),
                   extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded') - %(k)s)
            FROM procrastinate_events WHERE job_id = %(id)s""", {"k": killed_at, "id": job_id}).fetchone()
        return (secs(row[0]), secs(row[1])) if row else (None, None)


SYSTEM_CLASSES: dict[str, type[System]] = {"pgqueue": PgQueue, "pgqueuer": PgQueuer,
                                           "procrastinate": Procrastinate}


# ---------------------------------------------------------------------- peer venvs

def venv_version(name: str) -> str:
    python = VENVS_DIR / name / "bin" / "python"
    if not python.exists():
        return "missing"
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys; "
                          f"print(m.version({PEERS[name]['package']!r}))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else "broken"


def base_python() -> str:
    """The interpreter the peers' venvs are made from: this one's base (same Python version)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(name: str, force: bool = False) -> None:
    """Create ``benchmarks/.venvs/<name>`` with the pinned requirements, unless it has them."""
    spec = PEERS[name]
    venv = VENVS_DIR / name
    if not force and venv_version(name) == spec["version"]:
        return
    log(f"setting up {venv} ({', '.join(spec['requirements'])}) ...")
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", *spec["requirements"]],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise BenchError(f"pip install into {venv} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    if venv_version(name) != spec["version"]:
        raise BenchError(f"{venv} has {spec['package']} {venv_version(name)}, expected {spec['version']}")


def pip_freeze(python: str) -> list[str]:
    out = subprocess.run([python, "-m", "pip", "freeze", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=120)
    return [line for line in out.stdout.splitlines() if line and not line.startswith("-e ")] \
        if out.returncode == 0 else [f"(pip freeze failed: {out.stderr.strip()[:200]})"]


# ---------------------------------------------------------------------- measurements

@dataclass
class Context:
    opts: argparse.Namespace
    server: Server


@contextlib.contextmanager
def fresh_database(ctx: Context, system: System) -> Iterator[str]:
    """A new database for ``system``, cloned from its template; dropped afterwards."""
    ctx.server.drop_database(system.database)
    ctx.server.create_database(system.database, template=system.template)
    try:
        yield dsn_for(ctx.server.dsn, system.database)
    finally:
        try:
            ctx.server.drop_database(system.database)
        except Exception as exc:  # keep the original error; say what is left behind
            log(f"warning: could not drop database {system.database!r} ({exc}); drop it by hand")


def run_client(system: System, dsn: str, args: list[str], timeout: float, ctx: Context) -> dict[str, Any]:
    """One harness client: wait until it is connected, checkpoint, start it, return its result."""
    with system.client(dsn, args) as client:
        client.receive("ready", CLIENT_TIMEOUT)
        ctx.server.checkpoint()
        client.send("go")
        result = client.receive("done", timeout)
        client.proc.wait(30)
        return result


def write_backlog(ctx: Context, system: System, dsn: str, task: str, count: int, arg: float | None) -> list[int]:
    args = ["bulk", "--task", task, "--count", str(count)] + ([] if arg is None else ["--arg", repr(arg)])
    result = run_client(system, dsn, args, 600, ctx)
    with connect(dsn) as conn:
        rows = system.count_jobs(conn)
    if result["count"] != count or rows != count:
        raise BenchError(f"bulk enqueue of {count} jobs: the client reported {result['count']}, "
                         f"the queue table holds {rows}")
    return result["ids"]


def measure_drain(ctx: Context, system: System, task: str, count: int, concurrency: int | None) -> dict[str, float]:
    arg = ctx.opts.sleep_ms / 1000 if task == "sleep" else None
    with fresh_database(ctx, system) as dsn:
        write_backlog(ctx, system, dsn, task, count, arg)
        with connect(dsn) as conn:
            if ctx.opts.analyze:
                conn.execute("ANALYZE")
            ctx.server.checkpoint()
            with system.worker(dsn, concurrency) as worker:
                wait_until(f"{count} jobs to complete", lambda: system.all_done(conn), ctx.opts.drain_timeout,
                           check=worker.check_alive, progress=lambda: system.progress(conn))
                worker.stop()
            seconds = system.drain_seconds(conn, count)
    if seconds <= 0:
        raise BenchError(f"the drain took {seconds!r} s by the database clock: cannot compute a rate")
    return {"rate": count / seconds, "seconds": seconds}


def measure_enqueue(ctx: Context, system: System, clients: int) -> dict[str, float]:
    duration, warmup = ctx.opts.duration, 10
    args = ["single", "--task", "noop", "--duration", repr(duration), "--warmup", str(warmup)]
    with fresh_database(ctx, system) as dsn, contextlib.ExitStack() as stack:
        procs = [stack.enter_context(system.client(dsn, args, f"client {i + 1}/{clients}")) for i in range(clients)]
        for proc in procs:
            proc.receive("ready", CLIENT_TIMEOUT)
        ctx.server.checkpoint()
        for proc in procs:
            proc.send("go")
        results = [proc.receive("done", duration + CLIENT_TIMEOUT) for proc in procs]
        for proc in procs:
            proc.proc.wait(30)
        with connect(dsn) as conn:
            rows = system.count_jobs(conn)
    reported = sum(r["count"] for r in results) + clients * warmup
    if rows != reported:
        raise BenchError(f"clients reported {reported} enqueues (warm-up included), the queue table holds {rows}")
    return {"rate": sum(r["count"] / r["seconds"] for r in results)}


def measure_bulk(ctx: Context, system: System) -> dict[str, float]:
    count = ctx.opts.jobs
    with fresh_database(ctx, system) as dsn:
        result = run_client(system, dsn, ["bulk", "--task", "noop", "--count", str(count)], 600, ctx)
        with connect(dsn) as conn:
            rows = system.count_jobs(conn)
    if result["count"] != count or rows != count:
        raise BenchError(f"bulk enqueue of {count}: the client reported {result['count']}, the table holds {rows}")
    return {"rate": count / result["seconds"]}


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def measure_latency(ctx: Context, system: System) -> dict[str, float]:
    count, spacing = ctx.opts.latency_jobs, ctx.opts.latency_spacing
    with fresh_database(ctx, system) as dsn, connect(dsn) as conn:
        with system.worker(dsn, None) as worker:
            # Warm-up: once these have completed, the worker is up, connected and idle.
            run_client(system, dsn, ["paced", "--task", "noop", "--count", str(LATENCY_WARMUP),
                                     "--spacing", "0.05"], 60, ctx)
            wait_until("the warm-up jobs to complete", lambda: system.all_done(conn), 60,
                       check=worker.check_alive, progress=lambda: system.progress(conn))
            result = run_client(system, dsn, ["paced", "--task", "noop", "--count", str(count),
                                              "--spacing", repr(spacing)], count * spacing + 60, ctx)
            wait_until(f"{count} latency jobs to complete", lambda: system.all_done(conn), 60,
                       check=worker.check_alive, progress=lambda: system.progress(conn))
            worker.stop()
        latencies = sorted(system.latencies_ms(conn, result["ids"]))
    if len(latencies) != count:
        raise BenchError(f"{count} latency jobs sent, {len(latencies)} completed with both timestamps")
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": latencies[-1]}


def measure_recovery(ctx: Context, system: System) -> dict[str, Any]:
    job_seconds, bound = ctx.opts.recovery_job_seconds, ctx.opts.recovery_timeout
    with fresh_database(ctx, system) as dsn, connect(dsn) as conn:
        with system.worker(dsn, None, "worker 1") as first:
            (job_id,) = run_client(system, dsn, ["bulk", "--task", "sleep", "--count", "1",
                                                 "--arg", repr(job_seconds)], 60, ctx)["ids"]
            wait_until("the job to run on worker 1 for 0.5 s", lambda: (system.running_for(conn, job_id) or 0) >= 0.5,
                       60, check=first.check_alive, progress=lambda: system.progress(conn), poll=0.02)
            first.kill_group()
            (killed_at,) = one(conn, "SELECT clock_timestamp()")
            first.proc.wait(10)
        with system.worker(dsn, None, "worker 2") as second:
            recovered = True
            try:
                wait_until("the job to complete", lambda: system.recovery_times(conn, job_id, killed_at)[1] is not None,
                           bound, check=second.check_alive, poll=0.05)
            except BenchError as exc:
                if "timed out" not in str(exc):
                    raise
                recovered = False
            restarted, completed = system.recovery_times(conn, job_id, killed_at)
            state = system.progress(conn)
            second.stop()
    if not recovered:
        return {"kill_to_done": None, "kill_to_restart": restarted, "not_recovered": True,
                "note": f"not recovered within {bound:g} s", "state": state}
    return {"kill_to_done": completed, "kill_to_restart": restarted}


# --------------------------------------------------------------------- the run plan

@dataclass
class Case:
    """One measurement of every system per round; it fills one or more table rows."""

    key: str
    label: str
    run: Callable[[Context, System], dict[str, Any]]
    rows: list[tuple[str, str, str, str]]  # (metric, row label, unit, better: higher|lower)


def plan(opts: argparse.Namespace) -> list[Case]:
    cases: list[Case] = []
    c = opts.concurrency
    if "drain" in opts.only:
        for task, count, what in (("noop", opts.jobs, "no-op"),
                                  ("sleep", opts.sleep_jobs, f"{opts.sleep_ms:g} ms sleep")):
            for concurrency, setting in ((None, "defaults"), (c, f"concurrency {c}")):
                label = f"drain {count:,} {what} jobs, 1 worker, {setting}"
                cases.append(Case(f"drain.{task}.{setting.replace(' ', '')}", label,
                                  lambda ctx, s, t=task, n=count, k=concurrency: measure_drain(ctx, s, t, n, k),
                                  [("rate", label, "jobs/s", "higher")]))
    if "enqueue" in opts.only:
        for clients in sorted(set(opts.clients)):
            label = f"enqueue, 1 job per transaction, {clients} client{'s' if clients > 1 else ''}"
            cases.append(Case(f"enqueue.{clients}", label, lambda ctx, s, k=clients: measure_enqueue(ctx, s, k),
                              [("rate", label, "jobs/s", "higher")]))
    if "bulk" in opts.only:
        label = f"bulk enqueue, {opts.jobs:,} jobs in one call"
        cases.append(Case("bulk", label, measure_bulk, [("rate", label, "jobs/s", "higher")]))
    if "latency" in opts.only:
        label = f"enqueue-to-start latency, idle worker, defaults ({opts.latency_jobs} jobs)"
        cases.append(Case("latency", label, measure_latency,
                          [(p, f"latency {p}", "ms", "lower") for p in ("p50", "p95", "p99")]))
    if "recovery" in opts.only:
        label = f"SIGKILL mid-job, defaults ({opts.recovery_job_seconds:g} s job)"
        cases.append(Case("recovery", label, measure_recovery,
                          [("kill_to_restart", "kill -> job started again", "s", "lower"),
                           ("kill_to_done", "kill -> job completed", "s", "lower")]))
    return cases


@dataclass
class Measurement:
    round: int
    system: str
    case: str
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------------- output

def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "n/r"
    if unit == "ms":
        return f"{value:,.2f}"
    if unit == "s":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def summarise(cases: list[Case], measurements: list[Measurement], systems: list[str],
              opts: argparse.Namespace) -> list[dict[str, Any]]:
    """One dict per table row: per system the per-round values, median, min, max, notes, errors."""
    rows = []
    for case in cases:
        for metric, label, unit, better in case.rows:
            row: dict[str, Any] = {"case": case.key, "metric": metric, "label": label, "unit": unit,
                                   "better": better, "systems": {}, "ratios": {}}
            for name in systems:
                ms = sorted((m for m in measurements if m.case == case.key and m.system == name),
                            key=lambda m: m.round)
                errors = [f"round {m.round}: {m.error}" for m in ms if m.error]
                per_round: dict[int, float] = {}
                not_recovered = 0
                for m in ms:
                    if m.error:
                        continue
                    value = m.values.get(metric)
                    if value is None and m.values.get("not_recovered"):
                        not_recovered += 1
                        value = float("inf")  # sorts last: a median over rounds stays meaningful
                    if value is not None:
                        per_round[m.round] = float(value)
                values = list(per_round.values())
                entry: dict[str, Any] = {"per_round": per_round, "errors": errors}
                if values and not errors:
                    entry.update(median=statistics.median(values), min=min(values), max=max(values))
                if not_recovered:
                    entry["note"] = (f"not recovered within {opts.recovery_timeout:g} s in "
                                     f"{not_recovered}/{len(values)} round{'s' if len(values) > 1 else ''}")
                row["systems"][name] = entry
            base = row["systems"].get("pgqueue", {})
            for name in systems:
                if name == "pgqueue":
                    continue
                peer = row["systems"][name]
                ratio: dict[str, Any] = {}
                finite = lambda v: v is not None and v not in (0.0, float("inf"))  # noqa: E731
                if finite(base.get("median")) and finite(peer.get("median")):
                    ratio["of_medians"] = base["median"] / peer["median"]
                elif finite(base.get("median")) and peer.get("median") == float("inf") and better == "lower":
                    # The peer never recovered within the bound: pgqueue's time over the bound is
                    # an upper limit of the ratio.
                    ratio["below"] = base["median"] / opts.recovery_timeout
                paired = [base["per_round"][r] / peer["per_round"][r] for r in base.get("per_round", {})
                          if r in peer["per_round"] and finite(base["per_round"][r]) and finite(peer["per_round"][r])]
                if paired:
                    ratio.update(per_round_min=min(paired), per_round_max=max(paired), per_round=paired)
                row["ratios"][name] = ratio
            rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], systems: list[str], meta: dict[str, Any]) -> str:
    peers = [s for s in systems if s != "pgqueue"]
    width = max([len(r["label"]) for r in rows] + [30]) + 1

    def cell(entry: dict[str, Any], unit: str) -> str:
        if entry.get("errors"):
            return "FAILED"
        if "median" not in entry:
            return "-"
        text = fmt(entry["median"], unit)
        if entry["min"] != entry["max"]:
            text += f" ({fmt(entry['min'], unit)}-{fmt(entry['max'], unit)})"
        return text

    def ratio_cell(ratio: dict[str, Any]) -> str:
        if "below" in ratio:
            return f"< {ratio['below']:.2f}"
        if "of_medians" not in ratio:
            return "-"
        text = f"{ratio['of_medians']:.2f}"
        if ratio.get("per_round_min") is not None and len(ratio.get("per_round", [])) > 1:
            text += f" ({ratio['per_round_min']:.2f}-{ratio['per_round_max']:.2f})"
        return text

    cells = {(id(r), s): cell(r["systems"][s], r["unit"]) for r in rows for s in systems}
    col = {s: max([len(s)] + [len(cells[id(r), s]) for r in rows]) + 2 for s in systems}
    rcells = {(id(r), p): ratio_cell(r["ratios"].get(p, {})) for r in rows for p in peers}
    rcol = {p: max([len(f"pgqueue/{p}")] + [len(rcells[id(r), p]) for r in rows]) + 2 for p in peers}
    lines = [
        f"pgqueue vs peers: {meta['database']}, PostgreSQL {meta['server']['server_version']}, "
        f"{meta['rounds']} interleaved round{'s' if meta['rounds'] != 1 else ''}; "
        f"median (min-max) over rounds",
        "versions: " + ", ".join(f"{s} {meta['versions'][s]}" for s in systems),
        "ratio = pgqueue median / peer median (range of the per-round ratios); "
        "jobs/s: > 1 means pgqueue is faster; ms and s: < 1 means pgqueue is faster",
        "",
        f"{'':{width}}{'unit':8}" + "".join(f"{s:>{col[s]}}" for s in systems)
        + "".join(f"{'pgqueue/' + p:>{rcol[p]}}" for p in peers),
    ]
    for r in rows:
        lines.append(f"{r['label']:{width}}{r['unit']:8}" + "".join(f"{cells[id(r), s]:>{col[s]}}" for s in systems)
                     + "".join(f"{rcells[id(r), p]:>{rcol[p]}}" for p in peers))
    notes = []
    for r in rows:
        for s in systems:
            entry = r["systems"][s]
            if entry.get("note"):
                notes.append(f"  {s}, {r['label']}: {entry['note']} (n/r: not recovered)")
            for error in entry.get("errors", []):
                notes.append(f"  {s}, {r['label']}: FAILED {error.splitlines()[0]}")
    if notes:
        lines += ["", "notes:"] + sorted(set(notes), key=notes.index)
    lines += ["", "settings:"] + [f"  {s}: {meta['settings'][s]}" for s in systems]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark pgqueue against PgQueuer and procrastinate "
                                                 "(see the module docstring).")
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN") or DEFAULT_DSN,
                        help="admin connection to the server (default: $PGQUEUE_BENCH_DSN, else %(default)s); "
                             "the bench creates and drops databases cmp_* there")
    parser.add_argument("--rounds", type=int, help="interleaved rounds; medians are reported (default 3)")
    parser.add_argument("--jobs", type=int, help="no-op drain backlog and bulk enqueue size (default 20000)")
    parser.add_argument("--sleep-jobs", type=int, help="sleep-job drain backlog (default 2000)")
    parser.add_argument("--sleep-ms", type=float, default=10.0, help="duration of a sleep job (default 10 ms)")
    parser.add_argument("--concurrency", type=int, default=20, help="the equal-concurrency setting (default 20)")
    parser.add_argument("--only", action="append", metavar="NAMES",
                        help=f"comma-separated scenarios (default all): {', '.join(SCENARIOS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated systems (default {','.join(SYSTEMS)}); pgqueue is needed for ratios")
    parser.add_argument("--duration", type=float, help="seconds of each single-job enqueue run (default 3)")
    parser.add_argument("--clients", type=int, action="append",
                        help="client processes for single-job enqueues (repeatable; default 1 and 4)")
    parser.add_argument("--latency-jobs", type=int, help="jobs per latency run (default 200)")
    parser.add_argument("--latency-spacing", type=float, default=0.025,
                        help="seconds between latency enqueues (default 0.025)")
    parser.add_argument("--recovery-job-seconds", type=float, default=2.0,
                        help="how long the recovery job runs (default 2 s)")
    parser.add_argument("--recovery-timeout", type=float,
                        help="seconds after the kill before a system counts as not recovered (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="deadline of one drain (default 300 s)")
    parser.add_argument("--pgqueue-tasks", choices=("sync", "async"), default="sync",
                        help="pgqueue's tasks: plain def on threads (default) or async def")
    parser.add_argument("--no-analyze", dest="analyze", action="store_false",
                        help="do not ANALYZE a drain's database once its backlog is written")
    parser.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                        help="do not CHECKPOINT before each measurement")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 5000/500-job drains, 1.5 s enqueue runs, 100 latency jobs, "
                             "45 s recovery bound (explicit options still win)")
    parser.add_argument("--setup", action="store_true", help="(re)create the peers' venvs, then exit")
    parser.add_argument("--json", metavar="PATH", help="also write all results, raw values included, as JSON")
    opts = parser.parse_args(argv)
    quick = {"rounds": 1, "jobs": 5000, "sleep_jobs": 500, "duration": 1.5, "latency_jobs": 100,
             "recovery_timeout": 45.0, "clients": [1, 4]}
    full = {"rounds": 3, "jobs": 20_000, "sleep_jobs": 2000, "duration": 3.0, "latency_jobs": 200,
            "recovery_timeout": 60.0, "clients": [1, 4]}
    for key, value in (quick if opts.quick else full).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    selected = [n.strip() for item in (opts.only or [",".join(SCENARIOS)]) for n in item.split(",") if n.strip()]
    unknown = sorted(set(selected) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    opts.only = [n for n in SCENARIOS if n in selected]
    systems = [n.strip() for n in opts.systems.split(",") if n.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    opts.systems = [n for n in SYSTEMS if n in systems]
    if min(opts.rounds, opts.jobs, opts.sleep_jobs, opts.latency_jobs, *opts.clients) < 1:
        parser.error("--rounds, --jobs, --sleep-jobs, --latency-jobs and --clients must be at least 1")
    if opts.concurrency < 2:
        parser.error("--concurrency must be at least 2 (PgQueuer needs max_concurrent_tasks >= 2 * batch_size)")
    if min(opts.duration, opts.recovery_job_seconds, opts.recovery_timeout, opts.drain_timeout, opts.sleep_ms) <= 0 \
            or opts.latency_spacing < 0:
        parser.error("durations and timeouts must be positive, --latency-spacing not negative")
    return opts


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(opts)
    except KeyboardInterrupt as exc:
        log(f"interrupted{f' ({exc})' if str(exc) else ''}: workers and clients stopped, databases dropped")
        return 130
    finally:
        for proc in list(Proc.live):  # nothing may outlive the bench
            proc.cleanup()


def run(opts: argparse.Namespace) -> int:
    try:
        for name in opts.systems if not opts.setup else PEERS:
            if name in PEERS:
                ensure_venv(name, force=opts.setup)
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        log(f"error: cannot set up the peers' virtualenvs: {exc}")
        return 2
    if opts.setup:
        for name in PEERS:
            log(f"{VENVS_DIR / name}: {PEERS[name]['package']} {venv_version(name)}")
        return 0
    server = Server(opts.dsn, opts.checkpoint)
    try:
        server_settings = server.settings()
    except Exception as exc:
        log(f"error: cannot connect to {mask(opts.dsn)}: {' '.join(str(exc).split())}")
        return 2
    ctx = Context(opts, server)
    systems = [SYSTEM_CLASSES[name](opts) for name in opts.systems]
    cases = plan(opts)
    meta: dict[str, Any] = {
        "database": mask(opts.dsn), "server": server_settings, "rounds": opts.rounds,
        "options": {k: v for k, v in vars(opts).items() if k not in ("dsn", "json", "setup")},
        "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {}, "settings": {}, "packages": {},
    }
    measurements: list[Measurement] = []
    began = time.monotonic()
    try:
        for system in systems:
            meta["versions"][system.name] = system.version()
            meta["packages"][system.name] = pip_freeze(system.python)
            meta["settings"][system.name] = (f"defaults = no option; concurrency {opts.concurrency} = "
                                             f"{system.settings_text(opts.concurrency)}")
        log(f"compare: {meta['database']} (PostgreSQL {server_settings.get('server_version')}, autovacuum "
            f"{server_settings.get('autovacuum')}); systems {', '.join(opts.systems)} "
            f"({', '.join(f'{k} {v}' for k, v in meta['versions'].items())}); {len(cases)} cases x "
            f"{opts.rounds} round{'s' if opts.rounds != 1 else ''}")
        for system in systems:  # the templates: each system's own schema tool
            server.drop_database(system.template)
            server.drop_database(system.database)
            server.create_database(system.template)
            system.install(dsn_for(opts.dsn, system.template))
        for round_no in range(1, opts.rounds + 1):
            shift = (round_no - 1) % len(systems)
            order = systems[shift:] + systems[:shift]
            log(f"round {round_no}/{opts.rounds} (order: {', '.join(s.name for s in order)})")
            for case in cases:
                for system in order:
                    m = Measurement(round_no, system.name, case.key)
                    start = time.monotonic()
                    try:
                        m.values = case.run(ctx, system)
                    except BenchError as exc:
                        m.error = str(exc)
                    except Exception as exc:  # unexpected: report it, run the rest
                        m.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                    m.seconds = time.monotonic() - start
                    measurements.append(m)
                    if m.error:
                        log(f"  {case.label}: {system.name}: FAILED: {m.error}")
                    else:
                        shown = ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in m.values.items() if k != "state")
                        log(f"  {case.label}: {system.name}: {shown}  [{m.seconds:.0f} s]")
    finally:
        for system in systems:
            for name in (system.database, system.template):
                try:
                    server.drop_database(name)
                except Exception as exc:
                    log(f"warning: could not drop database {name!r} ({exc}); drop it by hand")
    meta["seconds"] = round(time.monotonic() - began, 1)
    meta["loadavg_end"] = os.getloadavg()
    rows = summarise(cases, measurements, opts.systems, opts)
    print(render(rows, opts.systems, meta))
    if opts.json:
        document = {"meta": meta, "rows": rows,
                    "measurements": [m.__dict__ for m in measurements]}
        Path(opts.json).write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
        log(f"results written to {opts.json}")
    log(f"done in {meta['seconds']:g} s")
    return 1 if any(m.error for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
