"""pgqueue's side of ``benchmarks/compare.py``: the tasks its worker runs, and the client.

The worker: ``pgqueue --dsn DSN --app pgqueue_app:app work`` (this folder on
``PYTHONPATH``); the App reads ``PGQUEUE_DSN`` and ``PGQUEUE_SCHEMA`` like any other.
Only pgqueue's public API is used (``App``, ``@app.task``, ``task.enqueue``,
``app.enqueue_many``), so the comparison keeps working while the core changes.

Tasks are plain ``def`` functions, pgqueue's usual form (they run on the worker's
threads). ``COMPARE_PGQUEUE_TASKS=async`` registers ``async def`` versions instead (run
on the worker's event loop), for a like-for-like look at the peers, whose tasks are
``async def``.
"""

from __future__ import annotations

import asyncio
import os
import time

import pgqueue

app = pgqueue.App()

if os.environ.get("COMPARE_PGQUEUE_TASKS", "sync") == "async":

    @app.task(name="noop")
    async def noop() -> None:
        return None

    @app.task(name="sleep")
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

else:

    @app.task(name="noop")
    def noop() -> None:
        return None

    @app.task(name="sleep")
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


def _args(task: str, arg: float | None) -> tuple:
    return () if task == "noop" else (arg,)


class Client:
    """Enqueues through pgqueue's public API with its own pool (sync calls)."""

    def open(self) -> None:
        self.app = pgqueue.App(os.environ["COMPARE_DSN"])
        self.tasks = {
            "noop": self.app.task(name="noop")(lambda: None),
            "sleep": self.app.task(name="sleep")(lambda seconds: None),
        }
        self.app.check_schema()  # opens the pool outside any measurement

    def close(self) -> None:
        self.app.close()

    def enqueue_one(self, task: str, arg: float | None) -> int:
        return self.tasks[task].enqueue(*_args(task, arg)).id

    def enqueue_many(self, task: str, count: int, arg: float | None) -> list[int]:
        jobs = self.app.enqueue_many(self.tasks[task], [_args(task, arg)] * count)
        return [job.id for job in jobs]
