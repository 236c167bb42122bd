"""What flow control costs: drain throughput of one worker process (default settings) for no-op
jobs without locks or limits, and for the same jobs under each kind of control, in one run,
interleaved rounds, medians.

Scenarios (each a fresh schema and a backlog of ``--jobs`` no-op jobs):

``plain``
    No lock, no limit: the baseline.
``10 lock keys`` / ``1 lock key``
    Every job holds a lock (``lock="k<n % keys>"``): at most one job per key runs at once.
    With 10 keys at most 10 run at once; with 1 key the jobs run one after another.
``concurrency 10``
    The queue is limited to 10 running jobs over every runner.
``rate 2000/s``
    The queue is limited to 2,000 starts a second (above what one worker does: the cost of
    the bookkeeping, not of the limit).

Also ``--before PATH``: a checkout of an older pgqueue (e.g. ``git worktree add /tmp/before
<commit>``): its plain drain runs in the same rounds, and the table shows the ratio.

    .venv/bin/python benchmarks/flow.py --rounds 3 --jobs 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402  (the shared helpers: schemas, workers, waiting)
from psycopg import sql as pgsql  # noqa: E402

SCENARIOS = ("plain", "10 lock keys", "1 lock key", "concurrency 10", "rate 2000/s")


def drain(dsn: str, scenario: str, jobs: int, timeout: float) -> float:
    """One drain of ``jobs`` no-op jobs under ``scenario``; jobs/s by the database clock."""
    with bench.fresh_schema(dsn) as schema:
        app, task = bench.make_app(dsn, schema)
        try:
            if scenario in ("10 lock keys", "1 lock key"):
                keys = 10 if scenario.startswith("10") else 1
                with app.database.connection() as conn, conn.transaction():
                    for n in range(jobs):
                        task.options(conn=conn, lock=f"k{n % keys}").enqueue()
            else:
                if scenario == "concurrency 10":
                    app.queues.limit("default", concurrency=10)
                elif scenario.startswith("rate"):
                    app.queues.limit("default", rate=2000, per=1.0)
                app.enqueue_many(task, [()] * jobs)
        finally:
            app.close()
        with bench.Worker(dsn, schema, []) as worker:
            bench.wait_all_succeeded(dsn, schema, jobs, timeout, check=worker.check_alive)
            worker.stop()
        (seconds,) = bench.query_one(dsn, pgsql.SQL(
            "SELECT extract(epoch FROM (SELECT max(finished_at) - min(started_at) FROM {}))").format(
                bench.table(schema, "jobs")))
    return jobs / float(seconds)


def drain_before(checkout: Path, dsn: str, jobs: int) -> float:
    """The plain drain of an older checkout, run by its own bench.py in a subprocess."""
    out = subprocess.run(
        [sys.executable, str(checkout / "benchmarks" / "bench.py"), "--dsn", dsn, "--only", "drain",
         "--runs", "1", "--jobs", str(jobs), "--json", "-"],
        env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise bench.BenchError(f"the older checkout's bench failed: {out.stderr[-2000:]}")
    data = json.loads(out.stdout)
    results = data["results"] if isinstance(data, dict) else data
    return results[0]["values"][0]  # its first drain: default settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", bench.DEFAULT_DSN))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--only", help="comma-separated scenarios (default: all)")
    parser.add_argument("--before", type=Path, help="an older checkout whose plain drain to compare")
    parser.add_argument("--timeout", type=float, default=600.0)
    opts = parser.parse_args(argv)
    scenarios = [s.strip() for s in opts.only.split(",")] if opts.only else list(SCENARIOS)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    rates: dict[str, list[float]] = {s: [] for s in scenarios}
    if opts.before:
        rates["plain, before"] = []
    for round_ in range(1, opts.rounds + 1):
        for scenario in rates:
            if scenario == "plain, before":
                rate = drain_before(opts.before, opts.dsn, opts.jobs)
            else:
                rate = drain(opts.dsn, scenario, opts.jobs, opts.timeout)
            rates[scenario].append(rate)
            bench.log(f"round {round_}: {scenario}: {rate:,.0f} jobs/s")
    medians = {s: statistics.median(v) for s, v in rates.items()}
    base = medians.get("plain")
    print(f"\ndrain of {opts.jobs:,} no-op jobs, one worker process, default settings; "
          f"medians of {opts.rounds} interleaved rounds")
    for scenario, median in medians.items():
        ratio = f"{median / base:5.2f}x plain" if base else ""
        runs = ", ".join(f"{v:,.0f}" for v in rates[scenario])
        print(f"  {scenario:<16} {median:9,.0f} jobs/s  {ratio}   ({runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
