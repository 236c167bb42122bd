"""The chaos checker: what must hold after any run of faults, read from the database alone.

Inputs: the jobs a run enqueued (id -> the state each must end in), the ledger that the chaos
tasks write as they run (``<schema>.ledger``: one ``start`` and one ``end`` row per execution,
keyed by job, attempt and runner), the jobs table and the ``job_events`` history. It checks:

* **nothing lost**: every enqueued job is still there, with its ``enqueued`` event;
* **the expected end**: every job ended in the state expected of its task;
* **the history is one story**: replayed event by event, each job goes queued -> claimed ->
  exactly one end of that attempt -> ...; an outcome for an attempt that is not the current one,
  or written by a runner that does not hold it, is a **stale write applied** (a broken fence);
  so is a job row whose result or counters disagree with its history;
* **every duplicate explained**: an execution in the ledger belongs to a claimed attempt (two
  runners in one attempt would be a broken claim); each execution that is not the job's
  final one ended, in the history, by a crash (process gone), a lost lease (no heartbeat), a
  hand-back, or the task's own failure (a retry). One more cause exists only in runs with
  server crashes (``crashes``: when each began): claims commit asynchronously, so a crash can
  forget a claim that nothing durable followed yet. Such an execution's attempt is in no claim
  of the history (or in another runner's), and its first ledger row was written after a crash:
  had the task written it before, that synchronous commit would have made the claim durable.

Used by the chaos runs (direct, behind PgBouncer, across a failover) and checked itself by
tests/test_chaos_checker.py, which breaks a fence and deletes a job by hand.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

LEDGER_DDL = """CREATE TABLE IF NOT EXISTS "{schema}".ledger (
    job_id bigint NOT NULL, attempt int NOT NULL, runner_id bigint NOT NULL, pid int NOT NULL,
    note text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, attempt, runner_id, note))"""

# Events that end an attempt. The outcomes are written by the runner that ran it, fenced; the
# others by whoever re-queued it (the reaper, a stopping or reconciling runner).
OUTCOMES = {"succeeded", "failed", "retry_scheduled", "cancelled", "superseded"}
REQUEUES = {"crashed", "handed_back"}
TERMINAL = {"succeeded", "failed", "cancelled"}
# A ledger mark: the execution's first row was written after a server crash of the run.
AFTER_A_CRASH = "written after a crash"
CLAIM_FORGOTTEN = "claim forgotten in a server crash"
CRASH_WINDOW = timedelta(seconds=60)


def create_ledger(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(LEDGER_DDL.format(schema=schema))


@dataclass
class Report:
    jobs: int = 0
    executions: int = 0
    lost: list[int] = field(default_factory=list)
    stale_writes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Executions beyond one per job, by what ended them in the history.
    duplicates: Counter = field(default_factory=Counter)
    #: Executions that ended in the task's own failure (a retry: expected, not a duplicate).
    retries: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stale_writes or self.problems)

    def summary(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "executions": self.executions, "lost": len(self.lost),
                "stale_writes": len(self.stale_writes), "problems": len(self.problems),
                "duplicates": sum(self.duplicates.values()), "duplicate_causes": dict(self.duplicates),
                "retries": self.retries}

    def explain(self) -> str:
        lines = [f"chaos checker: {json.dumps(self.summary(), sort_keys=True)}"]
        lines += [f"  LOST: job {j} was enqueued (committed) but is gone" for j in self.lost]
        lines += [f"  STALE WRITE APPLIED: {s}" for s in self.stale_writes]
        lines += [f"  PROBLEM: {p}" for p in self.problems[:50]]
        return "\n".join(lines)


def duplicate_cause(kind: str, reason: str) -> str:
    """What ended an attempt that ran but did not give the job its outcome."""
    if kind == "handed_back":
        return "hand-back"
    if kind == "crashed":
        if "no heartbeat" in reason:
            return "lost lease"
        if "process gone" in reason:
            return "crash"
        return "crash (runner not alive)"
    return kind


def check(conn: psycopg.Connection, schema: str, expected: dict[int, str],
          crashes: list[Any] | None = None) -> Report:
    """Check a run: ``expected`` maps every job id the run enqueued to its expected end state;
    ``crashes``: the server's clock as each server crash of the run began."""
    ids = sorted(expected)
    report = Report(jobs=len(ids))
    jobs = {r[0]: r for r in conn.execute(
        f'SELECT id, status, attempts, failures, result, runner_id FROM "{schema}".jobs '
        "WHERE id = ANY(%s)", (ids,)).fetchall()}
    history: dict[int, list[tuple]] = defaultdict(list)
    for row in conn.execute(
            f'SELECT job_id, kind, from_status, to_status, attempt, runner_id, reason '
            f'FROM "{schema}".job_events WHERE job_id = ANY(%s) ORDER BY job_id, id', (ids,)):
        history[row[0]].append(row[1:])
    ledger: dict[int, dict[tuple[int, int], set[str]]] = defaultdict(lambda: defaultdict(set))
    for job_id, attempt, runner_id, note, written_at in conn.execute(
            f'SELECT job_id, attempt, runner_id, note, min(at) OVER (PARTITION BY job_id, attempt, runner_id) '
            f'FROM "{schema}".ledger WHERE job_id = ANY(%s)', (ids,)):
        ledger[job_id][(attempt, runner_id)].add(note)
        # A task blocked by the crash writes its first row as soon as the server is back.
        if any(crash < written_at <= crash + CRASH_WINDOW for crash in crashes or ()):
            ledger[job_id][(attempt, runner_id)].add(AFTER_A_CRASH)

    for job_id in ids:
        row = jobs.get(job_id)
        if row is None:
            report.lost.append(job_id)
            continue
        _check_job(report, job_id, row, expected[job_id], history.get(job_id, []), ledger.get(job_id, {}))
    return report


def _check_job(report: Report, job_id: int, row: tuple, want: str, events: list[tuple],
               runs: dict[tuple[int, int], set[str]]) -> None:
    _, status, attempts, failures, result, runner_id = row
    if not events or events[0][0] != "enqueued":
        report.lost.append(job_id)  # its row is there, its enqueue is not: rewritten, not ours
        return
    state, attempt, holder = "queued", 0, None
    claims: dict[int, int] = {}        # attempt -> claiming runner
    ended: dict[int, tuple[str, str]] = {}  # attempt -> (kind, reason) of its end
    winner: tuple[int, int] | None = None   # (attempt, runner) whose outcome the job kept
    for kind, from_status, to_status, ev_attempt, ev_runner, reason in events[1:]:
        if kind == "claimed":
            if state != "queued" or ev_attempt <= attempt:
                report.problems.append(f"job {job_id}: claimed (attempt {ev_attempt}) while {state} "
                                       f"at attempt {attempt}")
            state, attempt, holder = "running", ev_attempt, ev_runner
            claims[ev_attempt] = ev_runner
        elif kind in OUTCOMES or kind in REQUEUES:
            fenced_ok = state == "running" and ev_attempt == attempt and (
                kind in REQUEUES or ev_runner == holder)
            if not fenced_ok:
                report.stale_writes.append(
                    f"job {job_id}: {kind} of attempt {ev_attempt} by runner {ev_runner} applied while the "
                    f"job was {state} at attempt {attempt} (runner {holder}): a fenced-out write went through")
            if ev_attempt in ended:
                report.stale_writes.append(f"job {job_id}: attempt {ev_attempt} ended twice "
                                           f"({ended[ev_attempt][0]}, then {kind})")
            ended.setdefault(ev_attempt, (kind, reason))
            state, holder = to_status, None
            if kind in OUTCOMES and to_status in TERMINAL:
                winner = (ev_attempt, ev_runner)
        elif kind in ("cancel_requested",):
            continue
        else:
            report.problems.append(f"job {job_id}: unexpected event {kind!r} ({from_status} -> {to_status})")
            state = to_status
    if status != state:
        report.problems.append(f"job {job_id}: the row says {status}, its history ends {state}")
    if status != want:
        report.problems.append(f"job {job_id}: ended {status}, expected {want}")
    if attempts != attempt:
        report.stale_writes.append(f"job {job_id}: the row counts {attempts} attempts, its history {attempt}")
    if status == "succeeded":
        if not isinstance(result, dict) or (result.get("attempt"), result.get("runner")) != winner:
            report.stale_writes.append(
                f"job {job_id}: holds the result {result!r}, but its history says attempt/runner {winner} "
                "succeeded: an outcome other than the winning attempt's was applied")
    # Executions: each belongs to a claimed attempt; each beyond the winning one is explained.
    for (run_attempt, run_runner), notes in sorted(runs.items()):
        if "start" not in notes:
            continue
        report.executions += 1
        if claims.get(run_attempt) != run_runner:
            if AFTER_A_CRASH in notes:
                report.duplicates[CLAIM_FORGOTTEN] += 1
                continue
            report.problems.append(f"job {job_id}: runner {run_runner} ran attempt {run_attempt}, which "
                                   f"the history gives to runner {claims.get(run_attempt)}")
            continue
        if winner == (run_attempt, run_runner):
            continue
        end = ended.get(run_attempt)
        if end is None:
            report.problems.append(f"job {job_id}: attempt {run_attempt} ran and the history never ended it")
        elif end[0] in ("retry_scheduled", "failed"):
            report.retries += 1
        elif end[0] in REQUEUES:
            report.duplicates[duplicate_cause(*end)] += 1
        else:
            report.problems.append(f"job {job_id}: attempt {run_attempt} ran and ended {end[0]}, "
                                   f"but the job kept attempt {winner}")
    if status == "succeeded" and winner is not None and "end" not in runs.get(winner, set()):
        report.problems.append(f"job {job_id}: succeeded by attempt {winner} that the ledger never saw end")
