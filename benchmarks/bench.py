"""pgqueue benchmarks against a real PostgreSQL server.

Run from the repository root::

    .venv/bin/python benchmarks/bench.py                 # every scenario, 3 runs each
    .venv/bin/python benchmarks/bench.py --only drain,latency --runs 5
    .venv/bin/python benchmarks/bench.py --json results.json

Every run of every scenario gets a fresh schema (``bench_<random>``), created with
``App.migrate()`` and dropped afterwards (``DROP SCHEMA ... CASCADE``), so runs do not
see each other's rows. Each number reported is the median of ``--runs`` runs (min and
max are shown next to it). Progress goes to stderr, the table to stdout.

Scenarios (``--only`` takes a comma-separated list of these names):

``drain``
    Throughput of ONE worker process draining a backlog of ``--jobs`` no-op jobs.
    The backlog is written first with ``app.enqueue_many`` while no worker runs; then
    ``python -m pgqueue.cli --app benchapp:app work`` starts as a subprocess (default
    settings, then ``--concurrency 1``, ``--concurrency 10`` and any ``--concurrency N``
    given here). The bench polls the jobs table every ~50 ms, with a deadline, until no
    job is queued or running, then checks that every job succeeded. The rate is taken
    from the database clock only: ``N / (max(finished_at) - min(started_at))``, so the
    worker's start-up time is not counted. The worker is then stopped with SIGTERM and
    must exit with status 0.

``enqueue``
    Single-job transactions: a loop of ``task.enqueue()`` (one autocommit statement per
    job, the App's own pool) for a fixed wall time (``--duration``, 3 s), from 1 client
    and from 4 concurrent clients. Each client is its own process (multiprocessing,
    spawn start method) with its own App; all start together on an event, after a few
    warm-up enqueues. Rate = sum over clients of jobs / elapsed seconds. Measured twice:

    * no NOTIFY: no runner is waiting, so the insert trigger sends no notification;
    * NOTIFY: a fake runner row with ``waiting = true`` is inserted first (no worker
      runs), so every enqueue's commit sends a NOTIFY on ``<schema>.jobs``.
    * with 8 clients, also an idle worker running the jobs as they come (after work it
      lingers, its row saying it does not wait: few enqueues notify), against no runner.

    The table shows both and the ratio NOTIFY / no NOTIFY.

``enqueue_many``
    One ``app.enqueue_many`` call of ``--jobs`` jobs (one statement), timed by the
    client's wall clock (argument encoding included; the pool is opened, and its connection
    has enqueued ten jobs, beforehand: a session's first call compiles the function).

``latency``
    Enqueue-to-start latency with an idle worker: one worker (default settings) starts;
    once its ``runners`` row says ``waiting = true`` (it sleeps in LISTEN), single jobs
    are enqueued one at a time, ``--latency-spacing`` (25 ms) apart, ``--latency-jobs``
    (200) of them. Once all succeeded, each job's latency is ``started_at - enqueued_at``
    (both database clock: the enqueue transaction's start, the claim's). Reported: p50,
    p95, p99 in milliseconds (per run; the table shows the median over runs).

Every wait has a deadline; workers and client processes are stopped in ``finally``
blocks; a worker that dies has its log (stdout and stderr, kept in a temp file) shown.
A scenario that fails is reported as FAILED in the table and the others still run; the
exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import queue as queue_module
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql as pgsql

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing pgqueue
    sys.path.insert(0, str(REPO_ROOT))

import pgqueue  # noqa: E402
from pgqueue.db import mask_dsn, normalise_dsn  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SCENARIOS = ("drain", "enqueue", "enqueue_many", "latency")
TASK_NAME = "noop"  # the task benchmarks/benchapp.py registers

POLL = 0.05  # seconds between polls of the database while waiting
WORKER_READY_TIMEOUT = 30.0  # worker start-up until its runner row waits
WORKER_STOP_TIMEOUT = 45.0  # SIGTERM until exit (the worker's shutdown_timeout is 30 s)
CLIENT_READY_TIMEOUT = 60.0  # spawned enqueue client: start-up, import, connect, warm-up
WARMUP_ENQUEUES = 10  # per enqueue client, before the clock starts (psycopg prepares at 5)


class BenchError(Exception):
    """A scenario could not be measured; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------- database helpers

def connect(dsn: str) -> psycopg.Connection:
    """An autocommit admin connection (the bench's own queries: polling, checks, cleanup)."""
    return psycopg.connect(normalise_dsn(dsn), autocommit=True, connect_timeout=5)


def query_one(dsn: str, query: str | pgsql.Composable, params: Any = None) -> tuple[Any, ...]:
    with connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def table(schema: str, name: str) -> pgsql.Composable:
    return pgsql.Identifier(schema, name)


def noop() -> None:
    """The bench's side of the `noop` task (the worker runs benchapp.noop)."""
    return None


def make_app(dsn: str, schema: str) -> tuple[pgqueue.App, Any]:
    """An App on ``schema`` with the `noop` task registered under the worker's name."""
    app = pgqueue.App(dsn, schema=schema)
    task = app.task(name=TASK_NAME)(noop)
    return app, task


@contextlib.contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    """A new pgqueue schema ``bench_<random>``, migrated; dropped (CASCADE) afterwards."""
    schema = f"bench_{secrets.token_hex(4)}"
    app = pgqueue.App(dsn, schema=schema)
    try:
        app.migrate()
    finally:
        app.close()
    try:
        yield schema
    finally:
        try:
            with connect(dsn) as conn:
                conn.execute("SET lock_timeout = '15s'")
                conn.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(schema)))
        except Exception as exc:  # keep the original error, if any; say what is left behind
            log(f"warning: could not drop schema {schema!r} ({exc}); drop it by hand")


def wait_until(what: str, predicate: Callable[[], Any], timeout: float,
               check: Callable[[], None] | None = None,
               progress: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` every POLL seconds until it returns a true value (returned).

    ``check`` runs before each poll and may raise (e.g. the worker died); after
    ``timeout`` seconds a BenchError names what was awaited and, with ``progress``,
    where things stood.
    """
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
        time.sleep(POLL)


def status_counts(dsn: str, schema: str) -> str:
    with connect(dsn) as conn:
        rows = conn.execute(pgsql.SQL("SELECT status, count(*) FROM {} GROUP BY status ORDER BY status")
                            .format(table(schema, "jobs"))).fetchall()
    return ", ".join(f"{status}: {count}" for status, count in rows) or "no jobs"


def wait_all_succeeded(dsn: str, schema: str, expected: int, timeout: float,
                       check: Callable[[], None] | None = None) -> None:
    """Wait until no job is queued or running (both lookups use partial indexes, so polling
    every 50 ms costs the server next to nothing), then require all ``expected`` jobs to
    have succeeded."""
    jobs = table(schema, "jobs")
    unfinished = pgsql.SQL(
        "SELECT NOT EXISTS (SELECT FROM {jobs} WHERE status = 'queued') "
        "AND NOT EXISTS (SELECT FROM {jobs} WHERE status = 'running')").format(jobs=jobs)
    with connect(dsn) as conn:
        wait_until(f"{expected} jobs to succeed in schema {schema!r}",
                   lambda: conn.execute(unfinished).fetchone()[0], timeout,
                   check=check, progress=lambda: status_counts(dsn, schema))
        total, succeeded = conn.execute(
            pgsql.SQL("SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM {}").format(jobs)
        ).fetchone()
    if total != expected or succeeded != expected:
        raise BenchError(f"expected {expected} succeeded jobs, found {status_counts(dsn, schema)}")


# ------------------------------------------------------------------------ worker

class Worker:
    """One ``pgqueue work`` subprocess on a schema, its output kept in a temp file.

    Use as a context manager: on leaving, a worker still running is stopped (SIGTERM,
    then SIGKILL); ``stop()`` is the clean path that requires exit status 0.
    """

    def __init__(self, dsn: str, schema: str, args: list[str]) -> None:
        self.args = args
        self.label = " ".join(args) or "default settings"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}  # defaults only
        env.update(PGQUEUE_DSN=dsn, PGQUEUE_SCHEMA=schema, PGQUEUE_LOG_LEVEL="WARNING",
                   PYTHONPATH=os.pathsep.join(p for p in (str(BENCH_DIR), str(REPO_ROOT),
                                                          os.environ.get("PYTHONPATH")) if p))
        self._env = env
        self._log = tempfile.TemporaryFile(prefix="pgqueue-bench-worker-")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Worker":
        command = [sys.executable, "-m", "pgqueue.cli", "--app", "benchapp:app", "work", *self.args]
        # cwd: the benchmarks folder, whose nearest pyproject.toml (the repository's) has no
        # [tool.pgqueue] table, so "default settings" are pgqueue's defaults.
        self.proc = subprocess.Popen(command, env=self._env, cwd=BENCH_DIR, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            self._log.close()

    def output(self, last: int = 40) -> str:
        self._log.flush()
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in lines[-last:]) or "    | (no output)"

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"the worker ({self.label}) exited with status {code}; its output:\n"
                             f"{self.output()}")

    def stop(self) -> None:
        """SIGTERM, wait for the exit, and require status 0."""
        assert self.proc is not None
        self.check_alive()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise BenchError(f"the worker ({self.label}) did not exit within {WORKER_STOP_TIMEOUT:g} s "
                             f"of SIGTERM (killed); its output:\n{self.output()}") from None
        if code != 0:
            raise BenchError(f"the worker ({self.label}) exited with status {code} after SIGTERM "
                             f"(expected 0); its output:\n{self.output()}")


# ---------------------------------------------------------------------- results

@dataclass
class Result:
    """One line of the table: the per-run values of one measurement and their median."""

    section: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values and not self.error else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["median"] = self.median
        return data


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


# --------------------------------------------------------------- scenario: drain

def drain_once(dsn: str, jobs: int, worker_args: list[str], timeout: float) -> tuple[float, int]:
    """One drain run: returns (jobs/s by the database clock, the runner's concurrency)."""
    with fresh_schema(dsn) as schema:
        app, task = make_app(dsn, schema)
        try:
            app.enqueue_many(task, [()] * jobs)
        finally:
            app.close()
        with Worker(dsn, schema, worker_args) as worker:
            wait_all_succeeded(dsn, schema, jobs, timeout, check=worker.check_alive)
            worker.stop()
        seconds, concurrency = query_one(dsn, pgsql.SQL(
            "SELECT extract(epoch FROM (SELECT max(finished_at) - min(started_at) FROM {jobs})), "
            "(SELECT max(concurrency) FROM {runners})"
        ).format(jobs=table(schema, "jobs"), runners=table(schema, "runners")))
    if not seconds or seconds <= 0:
        raise BenchError(f"drain took {seconds!r} s by the database clock: cannot compute a rate")
    return jobs / float(seconds), concurrency


def bench_drain(opts: argparse.Namespace) -> list[Result]:
    settings: list[int | str | None] = [None, 1, 10]
    settings += [c for c in opts.concurrency if c not in settings]
    settings.append("processes 2")  # two worker processes under one supervisor (two cores)
    results = []
    for concurrency in settings:
        if concurrency == "processes 2":
            args, name, label = ["--processes", "2"], "--processes 2", "1 worker, --processes 2 (2 processes)"
        else:
            args = [] if concurrency is None else ["--concurrency", str(concurrency)]
            name = "default settings" if concurrency is None else f"--concurrency {concurrency}"
            label = f"1 worker, {name}"
        result = Result("drain", label, "jobs/s")
        results.append(result)
        try:
            for run in range(1, opts.runs + 1):
                rate, actual = drain_once(opts.dsn, opts.jobs, args, opts.drain_timeout)
                if concurrency is None:
                    result.name = f"1 worker, default settings (concurrency {actual})"
                result.values.append(rate)
                log(f"  drain {name}: run {run}/{opts.runs}: {rate:,.0f} jobs/s")
        except BenchError as exc:
            result.error = str(exc)
            log(f"  drain {name}: FAILED: {exc}")
    return results


# ------------------------------------------------------------- scenario: enqueue

def enqueue_client(index: int, dsn: str, schema: str, duration: float, start: Any, out: Any) -> None:
    """A spawned client process: warm up, wait for the start event, enqueue single jobs
    (one autocommit transaction each) for ``duration`` seconds, report (count, elapsed)."""
    try:
        app, task = make_app(dsn, schema)
        try:
            for _ in range(WARMUP_ENQUEUES):
                task.enqueue()
            out.put(("ready", index, None))
            if not start.wait(CLIENT_READY_TIMEOUT):
                out.put(("error", index, "the start signal never came"))
                return
            count = 0
            began = time.perf_counter()
            end = began + duration
            while True:
                task.enqueue()
                count += 1
                if time.perf_counter() >= end:
                    break
            out.put(("done", index, (count, time.perf_counter() - began)))
        finally:
            app.close()
    except BaseException:  # report anything, including KeyboardInterrupt, to the parent
        out.put(("error", index, traceback.format_exc()))


def wait_idle(dsn: str, schema: str, worker: Worker) -> None:
    """Until the worker's runner row says it waits for work (it sleeps in LISTEN)."""
    waiting = pgsql.SQL("SELECT EXISTS (SELECT FROM {} WHERE state = 'running' AND waiting)"
                        ).format(table(schema, "runners"))
    with connect(dsn) as conn:
        wait_until("the worker's runner row to say waiting = true",
                   lambda: conn.execute(waiting).fetchone()[0], WORKER_READY_TIMEOUT,
                   check=worker.check_alive)


def enqueue_once(dsn: str, clients: int, notify: bool | str, duration: float) -> float:
    """One run: ``clients`` processes enqueueing for ``duration`` s; returns jobs/s.
    ``notify``: False (no runner waits), True (a fake runner waits forever: a NOTIFY per
    enqueue) or "worker" (a real worker, idle at the start, runs the jobs)."""
    with fresh_schema(dsn) as schema, contextlib.ExitStack() as stack:
        if notify == "worker":
            wait_idle(dsn, schema, stack.enter_context(Worker(dsn, schema, [])))
        elif notify:
            # A runner that is "running" and "waiting": every enqueue's trigger now sends a
            # NOTIFY. No process listens and no reaper runs, so the row stays as it is.
            with connect(dsn) as conn:
                conn.execute(pgsql.SQL(
                    "INSERT INTO {} (host, pid, concurrency, version, waiting) "
                    "VALUES ('bench', 0, 1, 'bench', true)").format(table(schema, "runners")))
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=enqueue_client, args=(i, dsn, schema, duration, start, out),
                             name=f"bench-enqueue-{i}", daemon=True) for i in range(clients)]
        try:
            for proc in procs:
                proc.start()

            def receive(kind: str, timeout: float) -> dict[int, Any]:
                got: dict[int, Any] = {}
                deadline = time.monotonic() + timeout
                while len(got) < clients:
                    try:
                        message, index, payload = out.get(timeout=max(deadline - time.monotonic(), 0.01))
                    except queue_module.Empty:
                        dead = [p.name for p in procs if not p.is_alive()]
                        raise BenchError(f"enqueue clients: timed out after {timeout:g} s waiting for "
                                         f"{clients - len(got)} client(s) to be {kind}"
                                         + (f" (exited: {', '.join(dead)})" if dead else "")) from None
                    if message == "error":
                        raise BenchError(f"enqueue client {index} failed:\n{payload}")
                    got[index] = payload
                return got

            receive("ready", CLIENT_READY_TIMEOUT)
            start.set()
            done = receive("done", duration + CLIENT_READY_TIMEOUT)
            for proc in procs:
                proc.join(10)
            counts = sum(count for count, _ in done.values())
            # Each client's own rate, summed: the aggregate throughput of the clients.
            rate = sum(count / elapsed for count, elapsed in done.values())
            # Cross-check with the database: every reported enqueue is a row.
            (rows,) = query_one(dsn, pgsql.SQL("SELECT count(*) FROM {}").format(table(schema, "jobs")))
            expected = counts + clients * WARMUP_ENQUEUES
            if rows != expected:
                raise BenchError(f"clients reported {expected} enqueues but the jobs table has {rows} rows")
            if notify is True:
                (still_waiting,) = query_one(dsn, pgsql.SQL(
                    "SELECT count(*) FROM {} WHERE state = 'running' AND waiting").format(table(schema, "runners")))
                if still_waiting != 1:
                    raise BenchError("the fake waiting runner row changed during the run")
            return rate
        finally:
            start.set()  # let clients stuck before the start finish
            for proc in procs:
                if proc.is_alive():
                    proc.join(2)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
            out.close()
            out.join_thread()


def bench_enqueue(opts: argparse.Namespace) -> list[Result]:
    results = []
    medians: dict[tuple[int, bool | str], float] = {}
    for clients in (1, 4, 8):
        for notify in (False, True) if clients < 8 else (False, True, "worker"):
            label = (f"{clients} client{'s' if clients > 1 else ''}, "
                     + {False: "no runner waiting (no NOTIFY)", True: "NOTIFY on every enqueue",
                        "worker": "an idle worker running the jobs"}[notify])
            result = Result("enqueue (one job per transaction)", label, "jobs/s")
            results.append(result)
            try:
                for run in range(1, opts.runs + 1):
                    rate = enqueue_once(opts.dsn, clients, notify, opts.duration)
                    result.values.append(rate)
                    log(f"  enqueue {label}: run {run}/{opts.runs}: {rate:,.0f} jobs/s")
                medians[clients, notify] = result.median  # type: ignore[assignment]
            except BenchError as exc:
                result.error = str(exc)
                log(f"  enqueue {label}: FAILED: {exc}")
        if (clients, False) in medians and (clients, True) in medians:
            ratio = medians[clients, True] / medians[clients, False]
            results.append(Result("enqueue (one job per transaction)",
                                  f"{clients} client{'s' if clients > 1 else ''}: NOTIFY / no NOTIFY",
                                  "ratio", [ratio], note="of the medians"))
        if (clients, False) in medians and (clients, "worker") in medians:
            ratio = medians[clients, "worker"] / medians[clients, False]
            results.append(Result("enqueue (one job per transaction)",
                                  f"{clients} clients: idle worker / no runner", "ratio", [ratio],
                                  note="of the medians; the worker's CPU is the machine's too"))
    return results


# -------------------------------------------------------- scenario: enqueue_many

def enqueue_many_once(dsn: str, jobs: int) -> float:
    with fresh_schema(dsn) as schema:
        app, task = make_app(dsn, schema)
        try:
            app.check_schema()  # opens the pool: the connection is not part of the timing
            # A warm connection, as an application's pool has: the first call on a session
            # compiles enqueue_many's PL/pgSQL and plans its statement (tens of ms).
            app.enqueue_many(task, [()] * 10)
            calls = [()] * jobs
            began = time.perf_counter()
            created = app.enqueue_many(task, calls)
            elapsed = time.perf_counter() - began
        finally:
            app.close()
        if len(created) != jobs:
            raise BenchError(f"enqueue_many returned {len(created)} jobs, expected {jobs}")
    return jobs / elapsed


def bench_enqueue_many(opts: argparse.Namespace) -> list[Result]:
    result = Result("enqueue_many", f"{opts.jobs:,} jobs in one call", "jobs/s")
    try:
        for run in range(1, opts.runs + 1):
            rate = enqueue_many_once(opts.dsn, opts.jobs)
            result.values.append(rate)
            log(f"  enqueue_many: run {run}/{opts.runs}: {rate:,.0f} jobs/s")
    except BenchError as exc:
        result.error = str(exc)
        log(f"  enqueue_many: FAILED: {exc}")
    return [result]


# ------------------------------------------------------------- scenario: latency

def latency_once(dsn: str, count: int, spacing: float) -> dict[str, float]:
    """One run: p50/p95/p99 of started_at - enqueued_at (ms) for jobs sent to an idle worker."""
    with fresh_schema(dsn) as schema:
        app, task = make_app(dsn, schema)
        try:
            app.check_schema()  # open the pool before the first timed enqueue
            with Worker(dsn, schema, []) as worker:
                wait_idle(dsn, schema, worker)
                # One job every `spacing` seconds, on a fixed schedule (the pauses space the
                # jobs out; the measurement itself comes from the database's timestamps).
                began = time.monotonic()
                for i in range(count):
                    pause = began + i * spacing - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    task.enqueue()
                    if i % 20 == 0:
                        worker.check_alive()
                wait_all_succeeded(dsn, schema, count, timeout=30.0, check=worker.check_alive)
                worker.stop()
        finally:
            app.close()
        with connect(dsn) as conn:
            rows = conn.execute(pgsql.SQL(
                "SELECT extract(epoch FROM started_at - enqueued_at) * 1000 FROM {} ORDER BY 1"
            ).format(table(schema, "jobs"))).fetchall()
    latencies = [float(ms) for (ms,) in rows]
    return {f"p{p}": percentile(latencies, p) for p in (50, 95, 99)} | {"max": latencies[-1]}


def bench_latency(opts: argparse.Namespace) -> list[Result]:
    section = f"enqueue-to-start latency, idle worker ({opts.latency_jobs} jobs, {opts.latency_spacing * 1000:g} ms apart)"
    results = {key: Result(section, key, "ms") for key in ("p50", "p95", "p99", "max")}
    try:
        for run in range(1, opts.runs + 1):
            stats = latency_once(opts.dsn, opts.latency_jobs, opts.latency_spacing)
            for key, value in stats.items():
                results[key].values.append(value)
            log(f"  latency: run {run}/{opts.runs}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in stats.items()))
    except BenchError as exc:
        for result in results.values():
            result.error = str(exc)
        log(f"  latency: FAILED: {exc}")
        return [results["p50"]]  # one FAILED line is enough
    return list(results.values())


BENCHES: dict[str, Callable[[argparse.Namespace], list[Result]]] = {
    "drain": bench_drain,
    "enqueue": bench_enqueue,
    "enqueue_many": bench_enqueue_many,
    "latency": bench_latency,
}


# ------------------------------------------------------------------------ output

def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def render(results: list[Result], meta: dict[str, Any]) -> str:
    width = max([len(r.name) for r in results] + [40]) + 2
    lines = [
        f"pgqueue benchmarks: {meta['database']}, PostgreSQL {meta['server_version']}, "
        f"{meta['runs']} run{'s' if meta['runs'] != 1 else ''} each (median, min, max)",
        f"{'':{width}} {'median':>10} {'min':>10} {'max':>10}  unit",
    ]
    section = None
    for result in results:
        if result.section != section:
            section = result.section
            lines.append("")
            lines.append(section)
        if result.error:
            first = result.error.splitlines()[0]
            lines.append(f"  {result.name:{width - 2}} FAILED: {first}")
            continue
        spread = (min(result.values), max(result.values)) if len(result.values) > 1 else (None, None)
        lines.append(f"  {result.name:{width - 2}} {format_value(result.median, result.unit):>10} "
                     f"{format_value(spread[0], result.unit):>10} {format_value(spread[1], result.unit):>10}"
                     f"  {result.unit}{' (' + result.note + ')' if result.note else ''}")
    return "\n".join(lines)


# -------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pgqueue against a real PostgreSQL server (see the module docstring).")
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN") or DEFAULT_DSN,
                        help="PostgreSQL to benchmark against (default: $PGQUEUE_BENCH_DSN, else %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; medians are reported (default 3)")
    parser.add_argument("--jobs", type=int, default=20_000,
                        help="backlog size for drain, and the enqueue_many batch (default 20000)")
    parser.add_argument("--only", action="append", metavar="NAMES",
                        help=f"comma-separated scenarios to run (default all): {', '.join(SCENARIOS)}")
    parser.add_argument("--concurrency", type=int, action="append", default=[], metavar="N",
                        help="also drain with --concurrency N (repeatable; default, 1 and 10 always run)")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds of each enqueue run (default 3)")
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs per latency run (default 200)")
    parser.add_argument("--latency-spacing", type=float, default=0.025,
                        help="seconds between latency enqueues (default 0.025)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="deadline in seconds for one drain run (default 300)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the results as JSON to PATH ('-': JSON on stdout, table on stderr)")
    opts = parser.parse_args(argv)
    selected = [name.strip() for item in (opts.only or [",".join(SCENARIOS)]) for name in item.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    opts.only = [name for name in SCENARIOS if name in selected]
    if opts.runs < 1 or opts.jobs < 1 or opts.latency_jobs < 1:
        parser.error("--runs, --jobs and --latency-jobs must be at least 1")
    if any(c < 1 for c in opts.concurrency):
        parser.error("--concurrency must be at least 1")
    if opts.duration <= 0 or opts.latency_spacing < 0 or opts.drain_timeout <= 0:
        parser.error("--duration and --drain-timeout must be positive, --latency-spacing not negative")
    return opts


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop workers and drop schemas.
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(opts)
    except KeyboardInterrupt as exc:
        log(f"interrupted{f' ({exc})' if str(exc) else ''}: workers and clients stopped, schemas cleaned up")
        return 130


def run(opts: argparse.Namespace) -> int:
    try:
        (version,) = query_one(opts.dsn, "SHOW server_version")
    except Exception as exc:
        log(f"error: cannot connect to {mask_dsn(opts.dsn)}: {' '.join(str(exc).split()).removeprefix('connection failed: ')}")
        return 2
    meta = {
        "database": mask_dsn(opts.dsn), "server_version": version, "runs": opts.runs, "jobs": opts.jobs,
        "scenarios": opts.only, "pgqueue": getattr(pgqueue, "__version__", "?"),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    log(f"pgqueue bench: {meta['database']} (PostgreSQL {version}), scenarios {', '.join(opts.only)}, "
        f"{opts.runs} run{'s' if opts.runs != 1 else ''} each")
    results: list[Result] = []
    began = time.monotonic()
    for name in opts.only:
        log(f"{name}:")
        try:
            results.extend(BENCHES[name](opts))
        except Exception as exc:  # unexpected (not a BenchError): report it, run the rest
            log(f"  {name}: FAILED unexpectedly:\n{traceback.format_exc()}")
            results.append(Result(name, "(scenario)", "", error=f"{type(exc).__name__}: {exc}"))
    meta["seconds"] = round(time.monotonic() - began, 1)
    table_text = render(results, meta)
    if opts.json == "-":
        print(table_text, file=sys.stderr)
    else:
        print(table_text)
    if opts.json:
        document = json.dumps({"meta": meta, "results": [r.to_json() for r in results]}, indent=2)
        if opts.json == "-":
            print(document)
        else:
            Path(opts.json).write_text(document + "\n", encoding="utf-8")
            log(f"results written to {opts.json}")
    log(f"done in {meta['seconds']:g} s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
