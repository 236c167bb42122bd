"""Crash recovery, measured: SIGKILL a worker mid-job, time until another one finishes.

Each run: a fresh schema; Worker-1 starts and takes three jobs that each sleep
``--job-seconds`` (8, like ``pgqueue demo``); once they have run for a second, Worker-2
starts and Worker-1 is killed with SIGKILL. Reported, from the kill:

* recovered: every job is back in the queue (its "declared dead" event is written);
* complete: every job has succeeded on Worker-2.

Settings: ``--fast`` uses the demo's (heartbeat 0.5 s, dead after 2 s); without it the
defaults (2 s, 10 s). Medians over ``--runs`` (5).

    .venv/bin/python benchmarks/recovery.py            # defaults
    .venv/bin/python benchmarks/recovery.py --fast     # the demo's settings
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent


def wait(what: str, condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_worker(dsn: str, schema: str, extra: list[str], log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=dsn, PGQUEUE_SCHEMA=schema, PGQUEUE_LOG_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "--app", "benchapp:app", "work",
                             "--concurrency", "3", *extra], env=env, stdout=log, stderr=subprocess.STDOUT)


def one_run(dsn: str, job_seconds: float, extra: list[str]) -> tuple[float, float]:
    import pgqueue

    schema = f"recovery_{uuid.uuid4().hex[:8]}"
    app = pgqueue.App(dsn, schema=schema)
    app.task(name="sleep")(lambda seconds: seconds)
    app.migrate()
    workers: list[subprocess.Popen] = []
    log = tempfile.TemporaryFile()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            q = f'"{schema}"'

            def one(sql: str, *params):
                return conn.execute(sql, params).fetchone()

            first = start_worker(dsn, schema, extra, log)
            workers.append(first)
            runner1 = wait("worker 1", lambda: one(f"SELECT id FROM {q}.runners WHERE pid = %s", first.pid))[0]
            ids = [app.tasks["sleep"].enqueue(job_seconds).id for _ in range(3)]
            wait("jobs running on worker 1", lambda: one(
                f"SELECT count(*) = 3 AND now() - max(started_at) > interval '1 s' FROM {q}.jobs "
                "WHERE id = ANY(%s) AND status = 'running' AND runner_id = %s", ids, runner1)[0])
            second = start_worker(dsn, schema, extra, log)
            workers.append(second)
            wait("worker 2", lambda: one(f"SELECT id FROM {q}.runners WHERE pid = %s", second.pid))
            first.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            first.wait(timeout=10)
            wait("re-queue", lambda: one(
                f"SELECT count(DISTINCT job_id) = 3 FROM {q}.job_events WHERE job_id = ANY(%s) "
                "AND reason LIKE 'runner %%declared dead%%'", ids)[0])
            recovered = time.monotonic() - killed
            wait("completion", lambda: one(
                f"SELECT count(*) = 3 FROM {q}.jobs WHERE id = ANY(%s) AND status = 'succeeded'", ids)[0],
                timeout=job_seconds + 60)
            complete = time.monotonic() - killed
            return recovered, complete
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        app.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN",
                                                        "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--job-seconds", type=float, default=8.0)
    parser.add_argument("--fast", action="store_true", help="heartbeat 0.5 s, dead after 2 s (the demo's)")
    args = parser.parse_args()
    extra = ["--heartbeat-interval", "0.5", "--runner-dead-after", "2"] if args.fast else []
    label = "heartbeat 0.5 s, dead after 2 s" if args.fast else "defaults: heartbeat 2 s, dead after 10 s"
    results = []
    for run in range(1, args.runs + 1):
        recovered, complete = one_run(args.dsn, args.job_seconds, extra)
        results.append((recovered, complete))
        print(f"  run {run}/{args.runs}: kill -> recovered {recovered:.1f} s, kill -> complete {complete:.1f} s",
              file=sys.stderr)
    rec = [r for r, _ in results]
    com = [c for _, c in results]
    print(f"crash recovery ({label}; {args.job_seconds:g} s jobs; {args.runs} runs)")
    print(f"  kill -> jobs re-queued : median {statistics.median(rec):.1f} s (min {min(rec):.1f}, max {max(rec):.1f})")
    print(f"  kill -> jobs completed : median {statistics.median(com):.1f} s (min {min(com):.1f}, max {max(com):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
