"""A runner played by a test: the worker's own statements, run by hand on a test connection.

Tests use these to set up exact situations (a job claimed by a runner that then goes silent,
an outcome written by a zombie) without a worker process in the way.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

import pgqueue
from pgqueue import sqlfiles
from pgqueue.worker import claimer, completer, outcomes
from pgqueue.worker.connections import BorrowedConnection
from pgqueue.worker.maintenance import Maintenance, PassResult


def register(app: pgqueue.App, conn: psycopg.Connection, **extra: Any) -> int:
    """A runner row (no liveness lock unless ``liveness=True``: its process is this test)."""
    params = {"host": "test-host", "pid": 4242, "queues": None, "concurrency": 5, "version": "test",
              "heartbeat_interval": 1, "dead_after": 10, "liveness": False, "max_crashes": None,
              "lock_class": sqlfiles.runner_lock_class(app.settings.schema), **extra}
    return BorrowedConnection(conn).run_one(app.queries.raw("runner_register"), params)[0]


def claim(app: pgqueue.App, conn: psycopg.Connection, runner: int, limit: int = 1,
          queues: list[str] | None = None) -> list[outcomes.Claimed]:
    """Claim like the worker does (mode chosen as the worker would)."""
    request = claimer.Claim.serving(runner, limit, tuple(queues) if queues else None)
    return claimer.claim(BorrowedConnection(conn), app.queries, request, app.settings.max_args_bytes).jobs


def finish(app: pgqueue.App, conn: psycopg.Connection, *outs: outcomes.Outcome) -> set[int]:
    """Write outcomes (fenced) as the worker does; the ids written."""
    pending = [completer.Pending(o) for o in outs]
    rows = BorrowedConnection(conn).run(app.queries.raw("job_finish"), completer.finish_params(pending, None))
    return {row[1] for row in rows if row[0] == "done"}


def maintain(app: pgqueue.App, conn: psycopg.Connection, *, runner_id: int | None = None,
             max_crashes: int = 3, dead_after: float = 10.0, process_checks: bool = True,
             steady: bool = True) -> PassResult:
    """One maintenance pass, as the elected runner would run it. ``steady``: as if passes had
    been running all along (no gap before this one, which would grant every runner a lease)."""
    schema = app.settings.schema
    if steady:
        conn.execute(f"UPDATE \"{schema}\".maintenance SET last_pass_at = now() - interval '1 ms' "
                     "WHERE last_pass_at < now() - interval '1 ms'")
    passes = Maintenance(queries=app.queries, interval=0.001, dead_after=dead_after,
                         max_crashes=max_crashes, process_checks=process_checks,
                         statement_timeout=5.0)
    return passes.run_once(BorrowedConnection(conn), runner_id)


def outcome_json(value: Any) -> str:
    return json.dumps(value)
