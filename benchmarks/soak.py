"""Soak: a steady load for a long time, with a long transaction held open in the middle.

A producer enqueues no-op jobs at a steady rate; worker processes (default settings) run them.
Every ``--sample`` seconds the script records, from the database: jobs finished per second,
the p50/p99 of enqueue-to-start latency of the jobs started in the window, dead rows of
``jobs`` and ``job_events``, and both tables' sizes. At ``--hold-at`` minutes a REPEATABLE READ
transaction takes a snapshot and stays open for ``--hold-minutes`` (it holds the xmin
horizon: no dead row can be cleaned up meanwhile); during the hold ``pgqueue status`` is run
and its warnings kept. The report compares the windows before, during and after the hold: once
the transaction ends the queue must return to its earlier speed without a manual VACUUM.

Not part of the test suite (it takes half an hour by default). It needs a server with
autovacuum on (it refuses another):

    .venv/bin/python benchmarks/soak.py                         # 30 min, hold 5 min at 12.5 min
    .venv/bin/python benchmarks/soak.py --minutes 6 --hold-at 2 --hold-minutes 2   # a short one
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402


def produce(dsn: str, schema: str, rate: float, stop: threading.Event, counter: list[int]) -> None:
    """Enqueue at ``rate`` jobs per second, in batches of a tenth of a second."""
    app, task = bench.make_app(dsn, schema)
    try:
        batch = max(int(rate / 10), 1)
        next_at = time.monotonic()
        while not stop.is_set():
            app.enqueue_many(task, [()] * batch)
            counter[0] += batch
            next_at += batch / rate
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        app.close()


def sample(conn: psycopg.Connection, schema: str, since: float) -> dict[str, float]:
    jobs, events = bench.table(schema, "jobs"), bench.table(schema, "job_events")
    finished, p50, p99 = conn.execute(pgsql.SQL("""
        SELECT count(*) FILTER (WHERE finished_at > now() - make_interval(secs => %(w)s)),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - enqueued_at))
                   FILTER (WHERE started_at > now() - make_interval(secs => %(w)s)),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - enqueued_at))
                   FILTER (WHERE started_at > now() - make_interval(secs => %(w)s))
        FROM {jobs} WHERE started_at > now() - make_interval(secs => %(w)s)
           OR finished_at > now() - make_interval(secs => %(w)s)""").format(jobs=jobs), {"w": since}).fetchone()
    stats = conn.execute("""
        SELECT relname, n_dead_tup, pg_total_relation_size(relid)
        FROM pg_stat_user_tables WHERE schemaname = %s AND relname IN ('jobs', 'job_events')""",
                         (schema,)).fetchall()
    row = {"finished_per_s": finished / since, "p50_ms": (p50 or 0) * 1000, "p99_ms": (p99 or 0) * 1000}
    for name, dead, size in stats:
        row[f"{name}_dead"] = dead
        row[f"{name}_mb"] = size / 1e6
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", bench.DEFAULT_DSN))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--hold-at", type=float, default=12.5, help="minutes in: open the long transaction")
    parser.add_argument("--hold-minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=400.0, help="jobs enqueued per second")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--sample", type=float, default=15.0, help="seconds per sample")
    opts = parser.parse_args(argv)
    with bench.connect(opts.dsn) as conn:
        if conn.execute("SHOW autovacuum").fetchone()[0] != "on":
            # What the soak measures is what autovacuum makes of the dead rows: without it
            # the tables only grow, whatever pgqueue does.
            print("soak: autovacuum is off on this server; run the soak on one with autovacuum on "
                  "(a private cluster: initdb, then --dsn to it)", file=sys.stderr)
            return 2
    with bench.fresh_schema(opts.dsn) as schema:
        stop, counter = threading.Event(), [0]
        producer = threading.Thread(target=produce, args=(opts.dsn, schema, opts.rate, stop, counter),
                                    daemon=True)
        workers = [bench.Worker(opts.dsn, schema, []) for _ in range(opts.workers)]
        for worker in workers:
            worker.__enter__()
        holder: psycopg.Connection | None = None
        warnings: list[str] = []
        rows: list[tuple[float, str, dict[str, float]]] = []
        started = time.monotonic()
        producer.start()
        try:
            with bench.connect(opts.dsn) as conn:
                while (elapsed := time.monotonic() - started) < opts.minutes * 60:
                    time.sleep(opts.sample)
                    for worker in workers:
                        worker.check_alive()
                    minute = (time.monotonic() - started) / 60
                    phase = "before"
                    if holder is None and minute >= opts.hold_at and not warnings:
                        holder = psycopg.connect(opts.dsn)
                        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                        holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(bench.table(schema, "jobs")))
                        bench.log(f"{minute:5.1f} min: a transaction holds the xmin horizon")
                    if holder is not None:
                        phase = "held"
                        # pgqueue status warns of a horizon held for over a minute: ask it
                        # half way through the hold (and at least 70 s in).
                        if not warnings and minute >= opts.hold_at + max(opts.hold_minutes / 2, 70 / 60):
                            out = subprocess.run(
                                [sys.executable, "-m", "pgqueue.cli", "--dsn", opts.dsn, "--schema", schema,
                                 "status"], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(bench.REPO_ROOT)})
                            warnings = [line for line in out.stdout.splitlines() if "warning" in line.lower()
                                        or "horizon" in line.lower()] or ["(no warning)"]
                        if minute >= opts.hold_at + opts.hold_minutes:
                            holder.close()
                            holder = None
                            bench.log(f"{minute:5.1f} min: the long transaction ended")
                    elif warnings:
                        phase = "after"
                    row = sample(conn, schema, opts.sample)
                    rows.append((minute, phase, row))
                    bench.log(f"{minute:5.1f} min [{phase:6}] {row['finished_per_s']:7.0f} jobs/s  "
                              f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                              f"dead jobs {row.get('jobs_dead', 0):>8,.0f}  events {row.get('job_events_dead', 0):>8,.0f}  "
                              f"jobs {row.get('jobs_mb', 0):6.1f} MB  events {row.get('job_events_mb', 0):6.1f} MB")
        finally:
            stop.set()
            producer.join(30)
            if holder is not None:
                holder.close()
            for worker in workers:
                worker.__exit__(None, None, None)
    print(f"\nsoak: {opts.minutes:g} min at {opts.rate:g} jobs/s offered, {opts.workers} worker processes, "
          f"a transaction holding the horizon from {opts.hold_at:g} to {opts.hold_at + opts.hold_minutes:g} min")
    for phase in ("before", "held", "after"):
        chosen = [r for _, p, r in rows if p == phase]
        if not chosen:
            continue
        print(f"  {phase:6}: {statistics.median(r['finished_per_s'] for r in chosen):7.0f} jobs/s, "
              f"p99 latency median {statistics.median(r['p99_ms'] for r in chosen):7.1f} ms, "
              f"max {max(r['p99_ms'] for r in chosen):7.1f} ms; dead rows in jobs at the end of it "
              f"{chosen[-1].get('jobs_dead', 0):,.0f}")
    print("  pgqueue status while the horizon was held:")
    for line in warnings:
        print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
