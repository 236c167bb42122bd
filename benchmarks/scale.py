"""How pgqueue's costs grow: many queues, big tables, a long history, many idle runners.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py                     # every scenario
    .venv/bin/python benchmarks/scale.py --only queues,big

Scenarios:

``queues``
    The cost of one claim of 20 jobs (the worker's own statement and connection settings),
    with one queue holding 20,000 jobs, and with 1,000 queues holding 20 each: by a runner
    serving every queue, one serving a named list of 50 of them, and one serving a single
    queue. Reported per claim: median time, WAL bytes, and row locks beyond the claimed rows
    (counted inside the claim's transaction). Ratios against the one-queue case; the four
    runners claim in turn, round after round, so the ratios come from the same moments.

``big``
    The same claim with 10,000 and with 1,000,000 jobs queued (ratio, interleaved), and the cost of a
    finished job's round trip (claim + outcome) with job_events empty and with 10,000,000
    rows, plus one job's timeline read from the job_timeline view.

``idle``
    ``--idle-workers`` (50) worker processes, idle, on a private server of this benchmark's own
    (the shared one allows 100 connections): statements per second, server CPU (the postgres
    processes' own clock ticks), connections per worker, and maintenance passes per second,
    over ``--idle-seconds`` (30).

Every scenario uses fresh schemas (or its own server) and drops them afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import pgqueue  # noqa: E402
from pgqueue import sqlfiles  # noqa: E402
from pgqueue.worker import claimer, completer, outcomes  # noqa: E402
from pgqueue.worker.connections import OutageLog, ServiceConnection  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Schema:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = f"scale_{uuid.uuid4().hex[:8]}"
        self.app = pgqueue.App(dsn, schema=self.name)

    def __enter__(self) -> "Schema":
        self.app.migrate()
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.close()
        self.admin.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        self.admin.close()

    def sql(self, text: str, *params: Any) -> Any:
        return self.admin.execute(text.replace("S.", f'"{self.name}".'), params)

    def register(self, conn: ServiceConnection) -> int:
        return conn.run_one(self.app.queries.raw("runner_register"), {
            "host": "bench", "pid": os.getpid(), "queues": None, "concurrency": 20, "version": "bench",
            "heartbeat_interval": 2, "dead_after": 3600, "liveness": False, "max_crashes": 3,
            "lock_class": sqlfiles.runner_lock_class(self.name)})[0]


def worker_connection(dsn: str) -> ServiceConnection:
    """A connection set up as the worker sets up its claim connection."""
    return ServiceConnection(dsn, "bench", 5, generic_plans=True, io_timeout=60)


class ClaimProbe:
    """Claims of 20 jobs by one runner serving ``queues``: time, WAL bytes and row locks
    beyond the claimed rows (counted inside the claim's transaction). Each claim commits and
    a statement of its own then puts the jobs back, so every claim finds the same backlog.
    (Not a rolled-back transaction: psycopg forgets its prepared statements at a ROLLBACK,
    and the claims measured would be planned anew each time, which the worker's are not.)"""

    def __init__(self, s: Schema, queues: tuple[str, ...] | None) -> None:
        self.s, self.queues = s, queues
        self.conn = worker_connection(s.dsn)
        self.runner = s.register(self.conn)
        self.times: list[float] = []
        self.wal: list[float] = []
        self.extra: list[int] = []
        self.requeue = f"""UPDATE "{s.name}".jobs
                           SET status = 'queued', runner_id = NULL, attempts = 0, started_at = NULL
                           WHERE id = ANY (%s)"""

    def once(self) -> None:
        pg = self.conn.get()
        request = claimer.Claim.serving(self.runner, 20, self.queues)
        with pg.transaction():
            lsn = pg.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            started = time.perf_counter()
            result = claimer.claim(self.conn, self.s.app.queries, request, 1 << 20)
            self.times.append(time.perf_counter() - started)
            self.wal.append(pg.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)",
                                       (lsn,)).fetchone()[0])
            self.extra.append(pg.execute(f"""SELECT count(*) FROM "{self.s.name}".jobs
                                             WHERE status = 'queued' AND xmax = pg_current_xact_id()::xid""").fetchone()[0])
        assert len(result.jobs) == 20, len(result.jobs)
        pg.execute(self.requeue, ([job.id for job in result.jobs],))

    def summary(self) -> dict[str, float]:
        # The claim ran as the worker's does: prepared, on a generic plan.
        generic = self.conn.get().execute("""SELECT coalesce(sum(generic_plans), 0) FROM pg_prepared_statements
                                             WHERE statement LIKE '%%claim_guard()%%'""").fetchone()[0]
        assert generic > 0, "the claim statement was not prepared"
        self.conn.discard()
        warm = 10  # the first claims prepare the statement and warm the caches
        return {"ms": statistics.median(self.times[warm:]) * 1000,
                "wal": statistics.median(self.wal[warm:]), "extra_locks": max(self.extra)}


def measure_claims(probes: list[ClaimProbe], rounds: int = 120) -> list[dict[str, float]]:
    """Interleaved: each round claims once with every probe, so a noisy moment of a shared
    machine weighs on all of them alike and their ratios hold."""
    for _ in range(rounds):
        for probe in probes:
            probe.once()
    return [probe.summary() for probe in probes]


def seed(s: Schema, queues: int, per_queue: int) -> None:
    s.sql("""INSERT INTO S.jobs (task, queue, due, priority)
             SELECT 't', 'q' || lpad(q::text, 4, '0'), true, 0
             FROM generate_series(1, %s) AS q, generate_series(1, %s) AS n""", queues, per_queue)
    s.sql("VACUUM ANALYZE S.jobs")
    s.sql("CHECKPOINT")  # the seed's writes must not be flushed during the measurement


def scenario_queues(dsn: str, results: dict[str, Any]) -> None:
    with Schema(dsn) as one, Schema(dsn) as many:
        seed(one, 1, 20_000)
        seed(many, 1000, 20)
        base, every, named50, single = measure_claims([
            ClaimProbe(one, None), ClaimProbe(many, None),
            ClaimProbe(many, tuple(f"q{n:04d}" for n in range(1, 51))), ClaimProbe(many, ("q0007",))])
        log(f"  1 queue, runner serving all:           {base}")
        log(f"  1,000 queues, runner serving all:      {every}")
        log(f"  1,000 queues, runner serving 50 named: {named50}")
        log(f"  1,000 queues, runner serving 1:        {single}")
    results["queues"] = {"one_queue": base, "1000_queues_all": every, "1000_queues_50_named": named50,
                         "ratio_all": every["ms"] / base["ms"], "ratio_50": named50["ms"] / base["ms"],
                         "1000_queues_one_served": single}


class RoundTripProbe:
    """One job at a time through the worker's statements: claim(1), then its outcome written."""

    def __init__(self, s: Schema) -> None:
        self.conn = worker_connection(s.dsn)
        self.runner = s.register(self.conn)
        self.queries = s.app.queries
        self.outbox = completer.Outbox()
        self.writer = completer.Completer(
            connection=self.conn, queries=self.queries, outbox=self.outbox, outage=OutageLog(),
            writer=lambda: self.runner, on_written=lambda w: None)
        self.times: list[float] = []

    def once(self) -> None:
        started = time.perf_counter()
        claimed = claimer.claim(self.conn, self.queries, claimer.Claim(self.runner, 1, "all"), 1 << 20)
        for job in claimed.jobs:
            self.outbox.put(outcomes.Outcome(job.id, self.runner, job.attempt, "succeeded",
                                             result="null", reason="succeeded"))
        self.writer.write(self.outbox.take(timeout=0))
        self.times.append(time.perf_counter() - started)

    def median_ms(self) -> float:
        self.conn.discard()
        return statistics.median(self.times[100:]) * 1000


def scenario_big(dsn: str, results: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    with Schema(dsn) as small, Schema(dsn) as large:
        log("  seeding 10,000 and 1,000,000 queued jobs...")
        seed(small, 1, 10_000)
        seed(large, 1, 1_000_000)
        out["claim_10000"], out["claim_1000000"] = measure_claims([ClaimProbe(small, None),
                                                                   ClaimProbe(large, None)])
        log(f"  claim with 10,000 queued: {out['claim_10000']}; with 1,000,000: {out['claim_1000000']}")
    out["claim_ratio"] = out["claim_1000000"]["ms"] / out["claim_10000"]["ms"]
    with Schema(dsn) as empty, Schema(dsn) as s:
        seed(empty, 1, 5000)
        seed(s, 1, 5000)
        log("  seeding 10,000,000 history rows...")
        s.sql("""INSERT INTO S.job_events (job_id, to_status, kind, reason, attempt, at)
                 SELECT n / 3 + 100000000, 'queued', 'enqueued', 'enqueued', 0,
                        now() - interval '30 days' + n * interval '250 ms'
                 FROM generate_series(1, 10000000) AS n""")
        s.sql("VACUUM ANALYZE S.job_events")
        s.sql("CHECKPOINT")
        # Interleaved, job after job: the same moments of the machine for both.
        probes = [RoundTripProbe(empty), RoundTripProbe(s)]
        for _ in range(2000):
            for probe in probes:
                probe.once()
        out["round_trip_empty_history_ms"], out["round_trip_10m_history_ms"] = (
            probe.median_ms() for probe in probes)
        job = s.sql("SELECT max(job_id) FROM S.job_events").fetchone()[0]
        times = []
        for _ in range(50):
            started = time.perf_counter()
            s.sql("SELECT * FROM S.job_timeline WHERE job_id = %s ORDER BY event_id", job).fetchall()
            times.append(time.perf_counter() - started)
        out["timeline_10m_ms"] = statistics.median(times) * 1000
    out["history_ratio"] = out["round_trip_10m_history_ms"] / out["round_trip_empty_history_ms"]
    log(f"  {out}")
    results["big"] = out


def postgres_cpu_seconds(data_dir: Path) -> float:
    """CPU time (user + system) of the server's processes: the postmaster's children."""
    pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    total = 0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid or int(entry.name) == pid:  # ppid
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / ticks


def scenario_idle(workers: int, seconds: float, results: dict[str, Any]) -> None:
    from pgqueue.embedded import EmbeddedServer

    directory = Path(tempfile.mkdtemp(prefix="pgqueue-scale-"))
    server = EmbeddedServer(directory / "server")
    server.ensure_running()
    conf = server.data / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nmax_connections = 400\n")
    server.stop()
    dsn = server.ensure_running()
    procs: list[subprocess.Popen] = []
    try:
        with Schema(dsn) as s:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
            env.update(PGQUEUE_DSN=dsn, PGQUEUE_SCHEMA=s.name, PGQUEUE_LOG_LEVEL="WARNING",
                       PYTHONPATH=str(HERE))
            logfile = tempfile.TemporaryFile()
            for _ in range(workers):
                procs.append(subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "--app", "benchapp:app",
                                               "work"], env=env, stdout=logfile, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 120
            while s.sql("SELECT count(*) FROM S.runners WHERE state = 'running' AND waiting").fetchone()[0] < workers:
                if time.monotonic() > deadline:
                    raise SystemExit("the idle workers did not all start")
                time.sleep(0.5)
            time.sleep(5)  # let start-up settle
            connections = s.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND backend_type = 'client backend'").fetchone()[0] - 1
            stats = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            before_x = s.sql(stats).fetchone()[0]
            before_p = s.sql("SELECT passes FROM S.maintenance").fetchone()[0]
            before_cpu = postgres_cpu_seconds(server.data)
            started = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            cpu = postgres_cpu_seconds(server.data) - before_cpu
            xacts = s.sql(stats).fetchone()[0] - before_x
            passes = s.sql("SELECT passes FROM S.maintenance").fetchone()[0] - before_p
            out = {"workers": workers, "connections": connections,
                   "connections_per_worker": connections / workers,
                   "transactions_per_s": xacts / elapsed, "per_worker_per_s": xacts / elapsed / workers,
                   "server_cpu_percent_of_one_core": 100 * cpu / elapsed,
                   "passes_per_s": passes / elapsed}
            log(f"  {out}")
            results["idle"] = out
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--only", default="queues,big,idle")
    parser.add_argument("--idle-workers", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    steps: dict[str, Callable[[], None]] = {
        "queues": lambda: scenario_queues(args.dsn, results),
        "big": lambda: scenario_big(args.dsn, results),
        "idle": lambda: scenario_idle(args.idle_workers, args.idle_seconds, results),
    }
    for name in args.only.split(","):
        log(f"{name}:")
        steps[name]()
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
