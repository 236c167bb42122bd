"""Claiming: what the claim loop asks for, and the claimed rows turned into jobs to start.

``job_claim`` claims up to the free slots in one statement, in one of three modes chosen from
the queues a runner serves, each mode a statement of its own (``job_claim_all``, ...):
``all`` (one ordered scan of ``jobs_ready_idx``: the same cost however many queues hold jobs),
``one`` (one ordered scan of that queue's range of ``jobs_claim_idx``) or ``many`` (the head
of each served queue read without locks, and only the chosen rows locked). It locks only the
rows it claims.

Queue controls: every claim reads the paused and the limited queues (``claim_guard``) and never
takes their jobs; the state row tells the runner which they are, so its next claims leave them
out by mode (a paused queue's backlog is never scanned) and it claims a limited queue's jobs
in mode ``limited``, one statement per queue, at most what the queue's limits allow. A runner
serving no limited queue never runs that mode: only limited queues pay for their limits.

Claimed rows arrive with their arguments as JSON text, decoded here one row at a time: a row
the worker cannot decode (nesting deeper than the decoder allows, an integer over Python's
digit limit, a hand-written non-array) fails that job alone, at once and not retried, and its
batch-mates run. So does a row whose arguments are over ``max_args_bytes`` (the statement does
not even send those).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .. import sqlfiles
from . import outcomes
from .connections import ServiceConnection


def claim_mode(queues: tuple[str, ...] | None, excluded: list[str] | None) -> tuple[str, str | None]:
    """How a runner serving ``queues`` claims: 'all', 'one' (with the queue) or 'many'."""
    if queues is None:
        return ("all", None) if not excluded else ("many", None)
    if len(queues) == 1 and not excluded:
        return "one", queues[0]
    return "many", None


@dataclass
class Claim:
    """What one claim asks for."""

    runner_id: int
    limit: int
    mode: str  # 'all' | 'one' | 'many' | 'limited'
    queue: str | None = None
    queues: list[str] | None = None
    excluded: list[str] | None = None
    can_wait: bool = False
    #: Whether the claim's commit waits for the disk (setting ``synchronous_claims``).
    synchronous: bool = False

    @classmethod
    def limited(cls, runner_id: int, limit: int, queue: str, synchronous: bool = False) -> "Claim":
        """A claim of the limited queue ``queue``: at most what its limits allow now."""
        return cls(runner_id, limit, "limited", queue=queue, synchronous=synchronous)

    @classmethod
    def serving(cls, runner_id: int, limit: int, queues: tuple[str, ...] | None,
                excluded: list[str] | None = None, can_wait: bool = False,
                synchronous: bool = False) -> "Claim":
        mode, queue = claim_mode(queues, excluded)
        return cls(runner_id, limit, mode, queue=queue,
                   queues=list(queues) if mode == "many" and queues else None,
                   excluded=excluded or None, can_wait=can_wait, synchronous=synchronous)

    @property
    def statement(self) -> str:
        """The name of this mode's claim statement (``job_claim_all``, ...)."""
        return f"job_claim_{self.mode}"

    def params(self, max_args: int) -> dict[str, Any]:
        return {"runner_id": self.runner_id, "limit": self.limit, "mode": self.mode,
                "queue": self.queue, "queues": self.queues, "excluded": self.excluded,
                "can_wait": self.can_wait, "max_args": max_args, "synchronous": self.synchronous}


@dataclass
class Claimed:
    alive: bool
    more: bool = False
    became_waiting: bool = False
    #: The queues under control as this claim saw them (None: not read, a pause was committing).
    paused: frozenset[str] | None = None
    limited: frozenset[str] | None = None
    jobs: list[outcomes.Claimed] = field(default_factory=list)
    #: Attempts claimed that cannot run (their arguments): their failure, to be written.
    failures: list[outcomes.Outcome] = field(default_factory=list)
    #: The claimed jobs that hold a lock's slot (their outcome is written with a release).
    locked_ids: set[int] = field(default_factory=set)


def decode_claimed(row: tuple, runner_id: int, max_args: int) -> tuple[outcomes.Claimed | None,
                                                                      outcomes.Outcome | None]:
    """A claimed row as a job to start, or, when its arguments cannot be used, the failure
    of that attempt."""
    (_, _, _, _, job_id, task, args_text, kwargs_text, queue, attempt, failures, max_attempts,
     cancel, args_size, meta_text, waited, locked, _, _, _) = row

    def stub() -> outcomes.Claimed:  # the job as its failure describes it
        return outcomes.Claimed(job_id, task, [], {}, queue, attempt, failures, max_attempts,
                                bool(cancel), runner_id, locked=bool(locked))

    if args_text is None or kwargs_text is None:
        return None, outcomes.not_runnable(
            stub(), "ArgumentsTooLarge",
            f"the job's arguments take {args_size} bytes stored, over max_args_bytes ({max_args}): "
            "pass a reference (an id, a path) instead of the data")
    try:
        # Most jobs carry no kwargs and no meta: no decoder call for those.
        args = json.loads(args_text) if args_text != "[]" else []
        kwargs = json.loads(kwargs_text) if kwargs_text != "{}" else {}
        meta = json.loads(meta_text) if meta_text and meta_text != "{}" else {}
    except (ValueError, RecursionError) as exc:
        return None, outcomes.not_runnable(
            stub(), "ArgumentsNotDecodable",
            f"the job's arguments cannot be decoded here ({type(exc).__name__}: "
            f"{str(exc)[:200]}); enqueue JSON that Python can read back: nesting under 1000 "
            "levels, integers under 4300 digits")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return None, outcomes.not_runnable(
            stub(), "ArgumentsNotDecodable",
            "the job's args must be a JSON array and its kwargs a JSON object")
    return outcomes.Claimed(job_id, task, args, kwargs, queue, attempt, failures, max_attempts,
                            bool(cancel), runner_id, meta if isinstance(meta, dict) else {},
                            float(waited or 0.0), bool(locked)), None


def claim(conn: ServiceConnection, queries: sqlfiles.Queries, request: Claim,
          max_args: int) -> Claimed:
    """Run ``job_claim``. Database errors propagate."""
    rows = conn.run(queries.raw(request.statement), request.params(max_args))
    state = rows[0]
    paused, limited = state[17], state[18]
    result = Claimed(alive=bool(state[1]), more=bool(state[2]), became_waiting=bool(state[3]),
                     paused=None if paused is None else frozenset(paused),
                     limited=None if limited is None else frozenset(limited))
    for row in rows[1:]:
        if row[16]:
            result.locked_ids.add(row[4])
        job, failure = decode_claimed(row, request.runner_id, max_args)
        if job is not None:
            result.jobs.append(job)
        elif failure is not None:
            result.failures.append(failure)
    return result
