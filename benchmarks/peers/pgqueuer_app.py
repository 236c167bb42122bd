"""PgQueuer's side of ``benchmarks/compare.py``: the worker factory and the client.

The worker: ``python pgqueuer_app.py [--batch-size N] [--max-concurrent-tasks N]``
runs ``pgqueuer.run("pgqueuer_app:main", ...)``, PgQueuer's documented programmatic
equivalent of ``pgq run pgqueuer_app:main`` (same supervisor, signal handling and
defaults), on uvloop as ``pgq run`` does. It is used instead of ``pgq run`` because
``pgq run`` fails at start-up in pgqueuer 1.6.0 with the typer release pip resolves
today (0.29: ``AttributeError: 'str' object has no attribute 'name'`` from its
``--log-level`` parser); options not given keep ``pgqueuer.run``'s defaults.
Without ``pgq run``'s logging set-up, PgQueuer logs only warnings and errors
(Python's last-resort handler), like the other systems here (all at WARNING).

The factory is the quick start's: an ``@asynccontextmanager`` that opens one asyncpg
connection (the recommended driver) and yields ``PgQueuer.from_asyncpg_connection``.
Entrypoints are ``async def`` (PgQueuer accepts nothing else). The database comes from
``$COMPARE_DSN``.

The client enqueues with ``Queries(AsyncpgDriver(conn)).enqueue(...)``, PgQueuer's
documented producer API: one entrypoint per call is one INSERT statement (its own
transaction); lists of entrypoints/payloads/priorities are one batched statement.
The sleep job's payload is its duration in seconds, as text.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg
import uvloop
import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

# pgq run runs its managers on uvloop when it is installed (a dependency of pgqueuer);
# the harness runs the client on the same loop.
LOOP_FACTORY = uvloop.new_event_loop


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(dsn=os.environ["COMPARE_DSN"])
    try:
        pgq = PgQueuer.from_asyncpg_connection(connection)

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        @pgq.entrypoint("sleep")
        async def sleep(job: Job) -> None:
            await asyncio.sleep(float(job.payload or b"0"))

        yield pgq
    finally:
        await connection.close()


def _payload(task: str, arg: float | None) -> bytes | None:
    return None if task == "noop" else repr(arg).encode()


class Client:
    async def open(self) -> None:
        self.connection = await asyncpg.connect(dsn=os.environ["COMPARE_DSN"])
        self.queries = Queries(AsyncpgDriver(self.connection))

    async def close(self) -> None:
        await self.connection.close()

    async def enqueue_one(self, task: str, arg: float | None) -> int:
        (job_id,) = await self.queries.enqueue(task, _payload(task, arg))
        return job_id

    async def enqueue_many(self, task: str, count: int, arg: float | None) -> list[int]:
        return await self.queries.enqueue([task] * count, [_payload(task, arg)] * count, [0] * count)


def worker(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run a PgQueuer worker on pgqueuer_app:main")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-concurrent-tasks", type=int)
    opts = parser.parse_args(argv)
    options = {k: v for k, v in vars(opts).items() if v is not None}  # unset: pgqueuer's defaults
    uvloop.run(pgqueuer.run("pgqueuer_app:main", **options))
    return 0


if __name__ == "__main__":
    sys.exit(worker())
