"""procrastinate's side of ``benchmarks/compare.py``: the app its worker loads, and the client.

The worker: ``procrastinate --app procrastinate_app.app worker`` (this folder on
``PYTHONPATH``). The App uses ``PsycopgConnector`` (procrastinate's default connector,
an async psycopg pool with psycopg_pool's defaults) on ``$COMPARE_DSN``. Tasks are
``async def`` (procrastinate runs sync tasks on the event loop's default thread pool,
which has min(32, cores + 4) threads: 6 here).

The client defers with ``task.defer_async()`` (one job, one transaction) and
``task.batch_defer_async(...)`` (one statement for many jobs), both documented.
"""

from __future__ import annotations

import asyncio
import os

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("COMPARE_DSN", "")))


@app.task(name="noop")
async def noop() -> None:
    return None


@app.task(name="sleep")
async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _kwargs(task: str, arg: float | None) -> dict:
    return {} if task == "noop" else {"seconds": arg}


class Client:
    async def open(self) -> None:
        await app.open_async()
        self.tasks = {"noop": noop, "sleep": sleep}

    async def close(self) -> None:
        await app.close_async()

    async def enqueue_one(self, task: str, arg: float | None) -> int:
        return await self.tasks[task].defer_async(**_kwargs(task, arg))

    async def enqueue_many(self, task: str, count: int, arg: float | None) -> list[int]:
        return await self.tasks[task].batch_defer_async(*[_kwargs(task, arg)] * count)
