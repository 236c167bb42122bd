"""The enqueue side of ``benchmarks/compare.py``, run with each system's own Python.

``compare.py`` starts this file as a subprocess with the interpreter of the system
under test (the worktree's venv for pgqueue, ``benchmarks/.venvs/<peer>`` for a peer)
and ``benchmarks/peers`` on ``PYTHONPATH``::

    python harness.py --module pgqueuer_app bulk   --task noop --count 20000
    python harness.py --module pgqueuer_app single --task noop --duration 3
    python harness.py --module pgqueuer_app paced  --task noop --count 200 --spacing 0.025

``--module`` names the system's app module in this folder; it provides a ``Client``
class (see ``pgqueue_app.Client``) whose methods may be plain or ``async``:

* ``open()`` / ``close()``: connect (outside the timing) and disconnect;
* ``enqueue_one(task, arg)``: one job in its own transaction, returns its id;
* ``enqueue_many(task, count, arg)``: ``count`` jobs in one call, returns their ids.

The database comes from ``$COMPARE_DSN``. Only the standard library is used here, so
the file runs unchanged in every venv.

Protocol (one JSON object per line on stdout; stderr is free-form):

* every command connects, then prints ``{"event": "ready"}`` and waits for a line on
  stdin (``go``) before it starts, so several clients start together and the connection
  is never part of a measurement;
* at the end it prints ``{"event": "done", ...}`` with ``count``, ``seconds`` and, for
  ``bulk``/``paced``, the job ids it created; on an error, ``{"event": "error",
  "message": ...}`` and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import sys
import time
import traceback
from typing import Any


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def call(method: Any, *args: Any) -> Any:
    """Call a Client method that may be sync or async."""
    result = method(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def wait_for_go() -> None:
    emit(event="ready")
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    client = importlib.import_module(opts.module).Client()
    await call(client.open)
    try:
        if opts.command == "single":
            for _ in range(opts.warmup):  # prepared statements, pool, caches: outside the clock
                await call(client.enqueue_one, opts.task, opts.arg)
            wait_for_go()
            count = 0
            began = time.perf_counter()
            end = began + opts.duration
            while True:
                await call(client.enqueue_one, opts.task, opts.arg)
                count += 1
                if time.perf_counter() >= end:
                    break
            return {"count": count, "seconds": time.perf_counter() - began, "warmup": opts.warmup}
        if opts.command == "bulk":
            wait_for_go()
            began = time.perf_counter()
            ids = await call(client.enqueue_many, opts.task, opts.count, opts.arg)
            seconds = time.perf_counter() - began
            return {"count": len(ids), "seconds": seconds, "ids": [int(i) for i in ids]}
        if opts.command == "paced":
            wait_for_go()
            ids = []
            began = time.monotonic()
            for i in range(opts.count):
                pause = began + i * opts.spacing - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # the schedule spaces the jobs; timing is the database's
                ids.append(int(await call(client.enqueue_one, opts.task, opts.arg)))
            return {"count": len(ids), "seconds": time.monotonic() - began, "ids": ids}
        raise SystemExit(f"unknown command {opts.command!r}")
    finally:
        await call(client.close)


def main() -> int:
    parser = argparse.ArgumentParser(description="enqueue jobs for compare.py")
    parser.add_argument("--module", required=True, help="the system's app module in benchmarks/peers")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("single", "bulk", "paced"):
        p = sub.add_parser(name)
        p.add_argument("--task", required=True, choices=("noop", "sleep"))
        p.add_argument("--arg", type=float, default=None, help="seconds, for the sleep task")
        if name == "single":
            p.add_argument("--duration", type=float, required=True)
            p.add_argument("--warmup", type=int, default=10)
        else:
            p.add_argument("--count", type=int, required=True)
        if name == "paced":
            p.add_argument("--spacing", type=float, required=True)
    opts = parser.parse_args()
    try:
        module = importlib.import_module(opts.module)
        # A module may name the event loop its library runs on (pgqueuer's uses uvloop).
        with asyncio.Runner(loop_factory=getattr(module, "LOOP_FACTORY", None)) as runner:
            result = runner.run(run(opts))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent, then fail
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        emit(event="error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 1
    emit(event="done", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
