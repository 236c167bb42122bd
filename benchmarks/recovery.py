"""Crash recovery, measured: a worker fails mid-job, time until another one runs and finishes it.

Each run: a fresh schema; Worker-1 starts and takes three jobs that each sleep
``--job-seconds`` (8, like ``pgqueue demo``); once they have run for a second and Worker-2 is
up, Worker-1 fails in one of three ways (``--fault``, default all three):

* ``kill``: SIGKILL (the OOM killer, a segfault, a container restart). Its sessions end with
  the process: the database sees the liveness lock go, and the next maintenance pass (every
  0.25 s) hands the jobs on.
* ``stop``: SIGSTOP (a paused or frozen process). Its sessions live on: the lease decides
  (``runner_dead_after``, 10 s by default). It is resumed after the run (its late outcomes are
  fenced out).
* ``partition``: its host loses its network (it runs in a network namespace of this
  benchmark's own, whose link is cut). The server keeps its sessions: the lease decides. Needs
  root; uses a private server (started here) listening on the namespace's link.

Reported, from the fault: **rerun** (every job has started again on Worker-2: its claimed
event) and **done** (every job has succeeded). Medians over ``--runs`` (5), with the default
settings unless ``--fast`` (heartbeat 0.5 s, lease 2 s).

    .venv/bin/python benchmarks/recovery.py                  # every fault, defaults
    .venv/bin/python benchmarks/recovery.py --fault kill --runs 20
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
FAULTS = ("kill", "stop", "partition")


def wait(what: str, condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_worker(dsn: str, schema: str, extra: list[str], log, prefix: list[str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=dsn, PGQUEUE_SCHEMA=schema, PGQUEUE_LOG_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "pgqueue.cli", "--app", "benchapp:app",
                             "work", "--concurrency", "3", *extra], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def one_run(dsn: str, job_seconds: float, extra: list[str], fault: str, host=None,
            inside_dsn: str | None = None) -> tuple[float, float, str]:
    import pgqueue

    schema = f"recovery_{uuid.uuid4().hex[:8]}"
    app = pgqueue.App(dsn, schema=schema)
    app.task(name="sleep")(lambda seconds: seconds)
    app.migrate()
    workers: list[subprocess.Popen] = []
    log = tempfile.TemporaryFile()
    stopped: subprocess.Popen | None = None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            q = f'"{schema}"'

            def one(sql: str, *params):
                return conn.execute(sql, params).fetchone()

            first = start_worker(inside_dsn or dsn, schema, extra, log,
                                 prefix=host.command() if host is not None else None)
            workers.append(first)
            runner1 = wait("worker 1", lambda: one(f"SELECT id FROM {q}.runners WHERE pid = %s", first.pid))[0]
            ids = [app.tasks["sleep"].enqueue(job_seconds).id for _ in range(3)]
            wait("jobs running on worker 1", lambda: one(
                f"SELECT count(*) = 3 AND now() - max(started_at) > interval '1 s' FROM {q}.jobs "
                "WHERE id = ANY(%s) AND status = 'running' AND runner_id = %s", ids, runner1)[0])
            second = start_worker(dsn, schema, extra, log)
            workers.append(second)
            runner2 = wait("worker 2", lambda: one(f"SELECT id FROM {q}.runners WHERE pid = %s", second.pid))[0]
            failed_at = time.monotonic()
            if fault == "kill":
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            elif fault == "stop":
                first.send_signal(signal.SIGSTOP)
                stopped = first
            else:
                host.cut()
            wait("rerun", lambda: one(
                f"SELECT count(DISTINCT job_id) = 3 FROM {q}.job_events WHERE job_id = ANY(%s) "
                "AND kind = 'claimed' AND runner_id = %s", ids, runner2)[0], timeout=120)
            rerun = time.monotonic() - failed_at
            wait("completion", lambda: one(
                f"SELECT count(*) = 3 FROM {q}.jobs WHERE id = ANY(%s) AND status = 'succeeded'", ids)[0],
                timeout=job_seconds + 120)
            done = time.monotonic() - failed_at
            how = one(f"SELECT lost_reason FROM {q}.runners WHERE id = %s", runner1)[0]
            return rerun, done, how
    finally:
        if stopped is not None:
            stopped.send_signal(signal.SIGCONT)
        if host is not None:
            host.heal()
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


@contextlib.contextmanager
def partition_rig():
    """A private server, and a worker host in a network namespace that reaches it over a link."""
    import netns
    from pgqueue.embedded import EmbeddedServer

    reason = netns.available()
    if reason:
        raise SystemExit(f"the partition fault needs network namespaces: {reason}")
    directory = Path(tempfile.mkdtemp(prefix="pgqueue-recovery-"))
    server = EmbeddedServer(directory / "server")
    server.ensure_running()
    try:
        with netns.Host(1) as host:
            netns.serve_on(server.directory, [host.host_address], [host.subnet])
            server.stop()
            dsn = server.ensure_running()
            yield dsn, host, dsn.replace("@127.0.0.1:", f"@{host.host_address}:")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN",
                                                        "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--job-seconds", type=float, default=8.0)
    parser.add_argument("--fault", action="append", choices=FAULTS,
                        help="kill, stop or partition (repeatable; default: all three)")
    parser.add_argument("--fast", action="store_true", help="heartbeat 0.5 s, lease 2 s")
    args = parser.parse_args()
    extra = ["--heartbeat-interval", "0.5", "--runner-dead-after", "2"] if args.fast else []
    label = "heartbeat 0.5 s, lease 2 s" if args.fast else "defaults: heartbeat 2 s, lease 10 s"
    print(f"crash recovery ({label}; three {args.job_seconds:g} s jobs; {args.runs} runs each; medians)")
    print(f"  {'fault':<42} {'rerun':>8} {'done':>8}   {'declared dead by'}")
    for fault in args.fault or FAULTS:
        results = []
        rig = partition_rig() if fault == "partition" else contextlib.nullcontext(None)
        with rig as setup:
            for run in range(1, args.runs + 1):
                if setup is None:
                    result = one_run(args.dsn, args.job_seconds, extra, fault)
                else:
                    dsn, host, inside = setup
                    result = one_run(dsn, args.job_seconds, extra, fault, host=host, inside_dsn=inside)
                results.append(result)
                print(f"    {fault} run {run}/{args.runs}: rerun {result[0]:.2f} s, done {result[1]:.2f} s "
                      f"({result[2]})", file=sys.stderr)
        reruns = [r for r, _, _ in results]
        dones = [d for _, d, _ in results]
        how = sorted({h for _, _, h in results})
        name = {"kill": "SIGKILL (process death)", "stop": "SIGSTOP (paused process)",
                "partition": "host loses its network (link cut)"}[fault]
        print(f"  {name:<42} {statistics.median(reruns):>7.2f}s {statistics.median(dones):>7.2f}s   "
              f"{', '.join(how)} (rerun max {max(reruns):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
