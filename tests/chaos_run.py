"""A chaos run: real worker processes, a stream of enqueues, and faults from a seeded generator.

Faults (one at a time, each followed by a measure of how long the system took to recover):

* ``sigkill``: a worker is SIGKILLed (a replacement starts); recovered when every job it held
  was claimed again (or finished);
* ``sigstop``: a worker is SIGSTOPped until its lease ran out and its jobs were claimed again,
  then SIGCONTed: it finds its lease lost, drops its outcomes and registers again;
* ``sigterm``: a worker is told to stop (a replacement starts): its running jobs finish within
  the shutdown timeout or are handed back; it must exit 0;
* ``terminate``: ``pg_terminate_backend`` of one of a worker's connections: recovered when the
  worker holds its liveness lock on as many sessions as before (behind a pooler, which keeps
  the server sessions, when the next outcome is written);
* ``restart_fast`` / ``restart_immediate``: the (private) server is restarted; recovered when
  the first outcome after it is written;
* ``failover``: the primary is stopped and its streaming standby promoted (tests/replication.py);
  recovered when the first outcome is written on the new primary.

``PGQUEUE_CHAOS_FAULTS=sigkill,sigstop`` keeps only those classes (per-class figures).
The seed drives the order of faults, the victims and the workload; it is printed and is set by
``PGQUEUE_CHAOS_SEED``. Timing still depends on the machine, so a replay is the same sequence
of faults, not the same interleaving. After the faults, the run waits for every job to end and
hands the database to tests/chaos_checker.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
import pytest

import chaos_checker
import pgqueue
from helpers import Worker, wait_for
from pgqueue import sqlfiles

PROCESS_FAULTS = ("sigkill", "sigstop", "sigterm", "terminate")
SERVER_FAULTS = ("restart_fast", "restart_immediate")
# Faults of the server (or of the cluster) that the run's ``server_fault`` callable performs.
CLUSTER_FAULTS = (*SERVER_FAULTS, "failover", "failover_immediate")
# Short leases keep a SIGSTOP fault short: declared dead after 2 s of silence.
WORKER_ARGS = ("--concurrency", "4", "--heartbeat-interval", "0.5", "--runner-dead-after", "2",
               "--shutdown-timeout", "1", "--poll-interval", "0.5")
# A job whose runners die under it again and again is failed by the crash budget: in a run
# that kills workers on purpose that would be the faults' doing, not the job's.
WORKER_ENV = {"PGQUEUE_MAX_CRASHES": "1000"}
OUTCOME_KINDS = ["succeeded", "failed", "retry_scheduled", "cancelled"]


# Read at import (collection): the tests' App fixtures clear every PGQUEUE_* variable, these
# included, before a test body runs.
CHAOS_ENV = {k: v for k, v in os.environ.items() if k.startswith("PGQUEUE_CHAOS")}


def seed_from_env() -> int:
    text = CHAOS_ENV.get("PGQUEUE_CHAOS_SEED", "").strip()
    return int(text) if text else random.SystemRandom().randrange(1, 2**31)


def long_mode(config: Any) -> bool:
    return bool(config.getoption("--chaos-long")) or CHAOS_ENV.get("PGQUEUE_CHAOS", "") == "long"


def duration(config: Any, short: float, long: float) -> float:
    """Seconds of faults: ``short`` in the default run, ``long`` with --chaos-long; with
    PGQUEUE_CHAOS_SECONDS, that many in long mode."""
    if not long_mode(config):
        return short
    text = CHAOS_ENV.get("PGQUEUE_CHAOS_SECONDS", "").strip()
    return float(text) if text else long


class Observer:
    """A direct connection for watching the run, reconnected after a restart or failover."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection | None = None

    def rows(self, sql: str, params: Any = ()) -> list[tuple]:
        deadline = time.monotonic() + 60
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                return self._conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def one(self, sql: str, params: Any = ()) -> Any:
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class Fault:
    kind: str
    victim: int | None
    recovery: float | None = None
    note: str = ""


@dataclass
class Outcome:
    seed: int
    label: str
    faults: list[Fault] = field(default_factory=list)
    report: chaos_checker.Report | None = None
    enqueued: int = 0
    enqueue_errors: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: From the workers' logs: leases found lost (a zombie came back), outcomes refused by
    #: the fence in the database.
    leases_lost: int = 0
    fenced_out: int = 0

    def table(self) -> dict[str, Any]:
        """Per fault class: how many, recovery median and max (seconds); and the checker's totals."""
        classes: dict[str, Any] = {}
        for kind in sorted({f.kind for f in self.faults}):
            times = [f.recovery for f in self.faults if f.kind == kind and f.recovery is not None]
            classes[kind] = {"injected": sum(f.kind == kind for f in self.faults),
                             "recovery_median_s": round(statistics.median(times), 3) if times else None,
                             "recovery_max_s": round(max(times), 3) if times else None}
        return {"label": self.label, "seed": self.seed, "seconds": round(self.seconds, 1),
                "enqueued": self.enqueued, "enqueue_errors": self.enqueue_errors,
                "faults": classes, "checker": self.report.summary() if self.report else None,
                "leases_lost": self.leases_lost, "outcomes_fenced_out": self.fenced_out,
                "run_problems": self.problems}

    def publish(self) -> None:
        """Print the summary; append it to the JSON-lines file PGQUEUE_CHAOS_REPORT names."""
        table = self.table()
        print(f"\nchaos run {self.label}: seed {self.seed} (replay: PGQUEUE_CHAOS_SEED={self.seed})")
        print(json.dumps(table, indent=1, sort_keys=True))
        target = CHAOS_ENV.get("PGQUEUE_CHAOS_REPORT")
        if target:
            with open(target, "a") as out:
                out.write(json.dumps(table, sort_keys=True) + "\n")


class ChaosRun:
    """One run. ``worker_dsn`` is what workers and the ledger use (direct, a pooler, a
    multi-host DSN); ``observe_dsn`` reaches the server directly (or the current primary)."""

    def __init__(self, *, label: str, app: pgqueue.App, worker_dsn: str, observe_dsn: str,
                 start_worker: Callable[..., Worker], seed: int, faults: tuple[str, ...],
                 duration: float, workers: int = 3, warmup: float = 0.0,
                 server_fault: Callable[[str], Any] | None = None, direct: bool = True,
                 extra_worker_args: tuple[str, ...] = ()) -> None:
        self.label = label
        self.app = app
        self.schema = app.settings.schema
        self.worker_dsn = worker_dsn
        self.watch = Observer(observe_dsn)
        self._start = start_worker
        self.rng = random.Random(seed)
        self.load_rng = random.Random(seed + 1)
        chosen = CHAOS_ENV.get("PGQUEUE_CHAOS_FAULTS", "").strip()
        if chosen:  # one class at a time, for per-class figures (docs/chaos.md)
            faults = tuple(f for f in faults if f in chosen.split(","))
            if not faults:
                pytest.skip(f"PGQUEUE_CHAOS_FAULTS={chosen} leaves no fault for the {label} run")
        self.faults = faults
        self.duration = duration
        self.size = workers
        self.server_fault = server_fault
        self.warmup = warmup
        self.direct = direct
        self.worker_args = (*WORKER_ARGS, *extra_worker_args)
        self.workers: list[Worker] = []
        self.every_worker: list[Worker] = []
        self.expected: dict[int, str] = {}
        self.crashes: list[Any] = []  # server clock as each server crash began
        self.outcome = Outcome(seed=seed, label=label)
        self._stop_load = threading.Event()

    # ------------------------------------------------------------------ workload

    def start_worker(self) -> Worker:
        worker = self._start(*self.worker_args, dsn=self.worker_dsn, env=WORKER_ENV)
        worker.runner_id(timeout=60)
        self.workers.append(worker)
        self.every_worker.append(worker)
        return worker

    def _enqueue_loop(self) -> None:
        work, fail = self.app.tasks["chaos_work"], self.app.tasks["chaos_fail"]
        index = 0
        while not self._stop_load.is_set():
            index += 1
            roll = self.load_rng.random()
            try:
                if roll < 0.05:
                    job, want = fail.enqueue(index), "failed"
                else:
                    seconds = round(self.load_rng.uniform(0.05, 1.5), 2)
                    job, want = work.enqueue(index, seconds, fail_first=roll < 0.15), "succeeded"
            except (pgqueue.PgQueueError, psycopg.Error):
                # Down (a restart): not acknowledged, so not expected. (Committed anyway, if the
                # reply was lost: the job runs, unchecked.)
                self.outcome.enqueue_errors += 1
                self._stop_load.wait(0.2)
                continue
            self.expected[job.id] = want
            self._stop_load.wait(self.load_rng.uniform(0.02, 0.15))

    # -------------------------------------------------------------------- faults

    def _now(self) -> Any:
        return self.watch.one("SELECT clock_timestamp()")

    def _held(self, runner: int) -> list[tuple[int, int]]:
        return self.watch.rows(f"""SELECT id, attempts FROM "{self.schema}".jobs
                                   WHERE status = 'running' AND runner_id = %s""", (runner,))

    def _moved_on(self, held: list[tuple[int, int]], since: Any, runner: int) -> float | None:
        """Seconds from ``since`` until every held attempt was claimed again or finished; when
        nothing was held, until the runner was declared dead or stopped."""
        if not held:
            at = self.watch.one(f"""SELECT stopped_at FROM "{self.schema}".runners
                                    WHERE id = %s AND state <> 'running'""", (runner,))
            return None if at is None else max((at - since).total_seconds(), 0.0)
        times = []
        for job_id, attempt in held:
            at = self.watch.one(
                f"""SELECT min(at) FROM "{self.schema}".job_events WHERE job_id = %s AND
                    ((kind = 'claimed' AND attempt > %s) OR (attempt = %s AND kind IN ('succeeded', 'failed',
                     'cancelled')))""", (job_id, attempt, attempt))
            if at is None:
                return None
            times.append(max((at - since).total_seconds(), 0.0))
        return max(times)

    def _lock_holders(self, runner: int) -> set[int]:
        return {r[0] for r in self.watch.rows(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = (%s::int)::oid AND objid = ((%s::bigint %% 2147483648)::int)::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (sqlfiles.runner_lock_class(self.schema), runner))}

    def inject(self, kind: str) -> Fault:
        if kind in CLUSTER_FAULTS:
            return self._server_fault(kind)
        worker = self.rng.choice(self.workers)
        runner = worker.runner_id(timeout=60)
        fault = Fault(kind, runner)
        since = self._now()
        held = self._held(runner)
        if kind == "sigkill":
            worker.signal(signal.SIGKILL)
            self.workers.remove(worker)
            self.start_worker()
            fault.recovery = until(lambda: self._moved_on(held, since, runner), timeout=60,
                                      message=f"the jobs of SIGKILLed runner {runner} to run again")
        elif kind == "sigstop":
            worker.signal(signal.SIGSTOP)
            try:
                fault.recovery = until(lambda: self._moved_on(held, since, runner), timeout=60,
                                          message=f"the jobs of SIGSTOPped runner {runner} to run again")
            finally:
                worker.signal(signal.SIGCONT)
            # Back, it learns its lease is gone and registers anew (or dies trying: a defect).
            wait_for(lambda: worker.runner_id(timeout=60) != runner, timeout=60,
                     message=f"the SIGCONTed worker {worker.pid} to register again")
        elif kind == "sigterm":
            worker.signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
            if code != 0:
                self.outcome.problems.append(f"runner {runner} exited {code} after SIGTERM")
            self.workers.remove(worker)
            self.start_worker()
            fault.recovery = until(lambda: self._moved_on(held, since, runner), timeout=60,
                                      message=f"the jobs of stopped runner {runner} to finish or run again")
        elif kind == "terminate":
            fault.recovery = self._terminate(runner, since)
        else:
            raise ValueError(kind)
        if kind == "terminate" and self.watch.one(
                f'SELECT state FROM "{self.schema}".runners WHERE id = %s', (runner,)) != "running":
            self.outcome.problems.append(f"runner {runner} was declared dead after a cut connection")
        return fault

    def _terminate(self, runner: int, since: Any) -> float:
        started = time.monotonic()
        if self.direct:
            holders = wait_for(lambda: self._lock_holders(runner), timeout=30,
                               message=f"runner {runner}'s sessions")
            pid = self.rng.choice(sorted(holders))
            self.watch.rows("SELECT pg_terminate_backend(%s)", (pid,))
            wait_for(lambda: pid not in (h := self._lock_holders(runner)) and len(h) >= len(holders),
                     timeout=30, message=f"runner {runner} to take its liveness lock again")
            return time.monotonic() - started
        # Behind a pooler the server sessions are the pooler's, and carry the application name
        # of the last client linked to them: cut one of those our workers used (and nobody
        # else's: the server may be shared).
        # A session that replaced a cut one has no name until a worker's transaction runs on it.
        pids = wait_for(lambda: [r[0] for r in self.watch.rows(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid",
            (f"pgqueue-test-{self.schema}",))], timeout=30, message="a server session the workers used")
        self.watch.rows("SELECT pg_terminate_backend(%s)", (self.rng.choice(pids),))
        at = wait_for(lambda: self.watch.one(
            f"""SELECT min(at) FROM "{self.schema}".job_events WHERE at > %s AND kind = ANY(%s)""",
            (since, OUTCOME_KINDS)), timeout=60, message="an outcome after the cut connection")
        return max((at - since).total_seconds(), 0.0)

    def _server_fault(self, kind: str) -> Fault:
        assert self.server_fault is not None, f"{kind} needs a private server (or cluster)"
        since = self._now()
        if kind.endswith("_immediate"):
            self.crashes.append(since)  # the checker's window for claims a crash forgot
        follow_up = self.server_fault(kind)
        at = wait_for(lambda: self.watch.one(
            f"""SELECT min(at) FROM "{self.schema}".job_events WHERE at > %s AND kind = ANY(%s)""",
            (since, OUTCOME_KINDS)), timeout=90, message=f"an outcome after the {kind}")
        if callable(follow_up):
            follow_up()  # e.g. a new standby after a failover: not part of the recovery time
        return Fault(kind, None, max((at - since).total_seconds(), 0.0))

    # ----------------------------------------------------------------------- run

    def run(self) -> Outcome:
        began = time.monotonic()
        with psycopg.connect(self.watch.dsn, autocommit=True) as conn:
            chaos_checker.create_ledger(conn, self.schema)
        for _ in range(self.size):
            self.start_worker()
        loader = threading.Thread(target=self._enqueue_loop, name="chaos-enqueue", daemon=True)
        loader.start()
        self._stop_load.wait(self.warmup)
        try:
            # Every class at least once, in a seeded order; more rounds while time remains.
            while True:
                order = list(self.faults)
                self.rng.shuffle(order)
                for kind in order:
                    # A seeded pause between faults: work flows normally for a moment.
                    time.sleep(self.rng.uniform(0.3, 1.2))
                    self.outcome.faults.append(self.inject(kind))
                if time.monotonic() - began > self.duration:
                    break
        finally:
            self._stop_load.set()
            loader.join(timeout=30)
        self.outcome.enqueued = len(self.expected)
        ids = sorted(self.expected)
        wait_for(lambda: self.watch.one(
            f"""SELECT count(*) FROM "{self.schema}".jobs WHERE id = ANY(%s)
                AND status IN ('succeeded', 'failed', 'cancelled')""", (ids,)) >= len(ids) or self._gone(ids),
            timeout=120, interval=0.2, message="every enqueued job to end")
        for worker in list(self.workers):
            worker.signal(signal.SIGTERM)
        for worker in self.workers:
            code = worker.wait(timeout=60)
            if code != 0:
                self.outcome.problems.append(f"worker {worker.pid} exited {code} at the end:\n{worker.log()[-2000:]}")
        with psycopg.connect(self.watch.dsn, autocommit=True) as conn:
            self.outcome.report = chaos_checker.check(conn, self.schema, self.expected, self.crashes)
        logs = [w.log() for w in self.every_worker]
        self.outcome.leases_lost = sum(log.count(" lost its lease (") for log in logs)
        self.outcome.fenced_out = sum(log.count("reclaimed meanwhile (fenced)") for log in logs)
        self.outcome.seconds = time.monotonic() - began
        self.watch.close()
        self.outcome.publish()
        return self.outcome

    def _gone(self, ids: list[int]) -> bool:
        """Jobs missing from the table will never end: let the checker say they were lost."""
        present = self.watch.one(f'SELECT count(*) FROM "{self.schema}".jobs WHERE id = ANY(%s)', (ids,))
        finished = self.watch.one(f"""SELECT count(*) FROM "{self.schema}".jobs WHERE id = ANY(%s)
                                      AND status IN ('succeeded', 'failed', 'cancelled')""", (ids,))
        return present < len(ids) and finished == present


def assert_clean(outcome: Outcome) -> None:
    """The run's verdict, with the seed to replay it."""
    report = outcome.report
    assert report is not None
    replay = f"replay with PGQUEUE_CHAOS_SEED={outcome.seed}"
    assert report.ok and not outcome.problems, (
        f"chaos run {outcome.label} failed ({replay}):\n{report.explain()}\n"
        + "\n".join(f"  RUN: {p}" for p in outcome.problems))
    assert report.jobs > 0 and report.executions >= report.jobs, (
        f"the run did too little to prove anything ({replay}): {report.summary()}")


def restarter(server: Any) -> Callable[[str], None]:
    """Restarts of a private EmbeddedServer (``restart_fast``, ``restart_immediate``): ``pg_ctl
    stop -m <mode>`` (through the server's own runner, which runs pg_ctl as the server's
    account), then a start."""
    def restart(kind: str) -> None:
        mode = kind.removeprefix("restart_")
        binaries = server._binaries()
        with server._locked():
            # Another pytest session of this account may have made the shared temporary folder
            # private again (pytest does, at start): the server's account must still reach it.
            server._prepare_ownership(binaries)
            server._run(binaries, "pg_ctl", "-D", str(server.data), "-m", mode, "-w", "-t", "60", "stop")
        server.ensure_running()
    return restart


def until(measure: Callable[[], float | None], *, timeout: float, message: str) -> float:
    """Wait until ``measure`` gives a number (0.0 included) and return it."""
    return wait_for(lambda: (value := measure()) is not None and (value,), timeout=timeout,
                    message=message)[0]
