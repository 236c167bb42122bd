"""What cron schedules cost the maintenance pass, against a real server.

For each N (``--schedules``, default 10, 1000 and 10000 every-minute schedules in a schema of
their own):

* ``sync``: one runner's start declaring the N schedules (one transaction);
* ``idle look``: the firing step of a pass when none is due (its one ``schedule_due`` probe),
  median and p95 of ``--looks`` calls, in ms;
* ``fire all``: one pass's firing step when all N are due at the same tick (plan, the
  compare-and-swap, N enqueues and events), in ms, and per schedule.

    .venv/bin/python benchmarks/schedules.py [--dsn DSN] [--schedules 10 --schedules 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pgqueue  # noqa: E402
from pgqueue import schedules  # noqa: E402
from pgqueue.worker.connections import BorrowedConnection  # noqa: E402
from pgqueue.worker.firing import Firing  # noqa: E402
from sqlrunner import register  # noqa: E402


def measure(dsn: str, count: int, looks: int) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    app = pgqueue.App(dsn=dsn, schema=schema)
    app.migrate()
    try:
        task = app.task(name="noop")(lambda n: None)
        for n in range(count):
            app.schedule(task, id=f"s{n}", cron="* * * * *", args=(n,))
        with psycopg.connect(dsn, autocommit=True) as conn:
            runner = register(app, conn)
            started = time.perf_counter()
            schedules.sync(app, BorrowedConnection(conn), runner)
            sync_ms = (time.perf_counter() - started) * 1000
            conn.execute(f'ANALYZE "{schema}".schedules')
            firing = Firing(queries=app.queries, batch=max(count, 1))
            borrowed = BorrowedConnection(conn)
            times = []
            for _ in range(looks):
                started = time.perf_counter()
                assert firing.run_once(borrowed, runner).schedules == 0
                times.append((time.perf_counter() - started) * 1000)
            conn.execute(f"UPDATE \"{schema}\".schedules SET next_run_at = date_trunc('minute', now())")
            started = time.perf_counter()
            result = firing.run_once(borrowed, runner)
            fire_ms = (time.perf_counter() - started) * 1000
            assert result.fired == count, result
        times.sort()
        return {"sync_ms": sync_ms, "look_p50_ms": statistics.median(times),
                "look_p95_ms": times[int(len(times) * 0.95)], "fire_ms": fire_ms,
                "fire_per_schedule_ms": fire_ms / count}
    finally:
        app.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN",
                                                        "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--schedules", type=int, action="append")
    parser.add_argument("--looks", type=int, default=500)
    options = parser.parse_args()
    print(f"{'schedules':>9}  {'sync ms':>8}  {'idle look p50/p95 ms':>20}  {'fire all ms':>11}  {'per schedule ms':>15}")
    for count in options.schedules or [10, 1000, 10000]:
        r = measure(options.dsn, count, options.looks)
        print(f"{count:>9}  {r['sync_ms']:>8.1f}  {r['look_p50_ms']:>9.3f} / {r['look_p95_ms']:<8.3f}  "
              f"{r['fire_ms']:>11.1f}  {r['fire_per_schedule_ms']:>15.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
