"""Jobs scheduled for later: out of the claim index until their time is near; claims stay cheap."""

from __future__ import annotations

import re

import psycopg

import pgqueue
from pgqueue.worker.reaper import reap


def register(app: pgqueue.App, admin: psycopg.Connection) -> int:
    return admin.execute(app.queries.runner_register, {
        "host": "h", "pid": 1, "queues": None, "concurrency": 10, "version": "test",
        "heartbeat_interval": 1, "dead_after": 10}).fetchone()[0]


def test_far_jobs_wait_outside_the_claim_index_until_promoted(app, admin) -> None:
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    soon = task.options(delay=1).enqueue()
    later = task.options(delay=3600).enqueue()
    due = dict(admin.execute(f'SELECT id, due FROM "{schema}".jobs').fetchall())
    assert (due[soon.id], due[later.id]) == (True, False)
    # Its time comes near: the reaper tick promotes it, no earlier.
    assert reap(admin, app.queries, max_crashes=3).promoted == 0
    admin.execute(f"UPDATE \"{schema}\".jobs SET run_at = now() - interval '1 s' WHERE id = %s", (later.id,))
    assert reap(admin, app.queries, max_crashes=3).promoted == 1
    runner = register(app, admin)
    rows = admin.execute(app.queries.job_claim, {"runner_id": runner, "limit": 5, "queues": None,
                                                 "can_wait": False}).fetchall()
    assert [r[3] for r in rows] == [later.id]  # `soon` is in the index but not yet due


def test_claiming_does_not_walk_a_large_schedule(app, admin) -> None:
    """Guards the claim plan: 20,000 jobs scheduled for tomorrow cost a claim nothing."""
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    app.enqueue_many(task, [()] * 20_000, delay=86_400, priority=5)
    now_job = task.enqueue()
    admin.execute(f'ANALYZE "{schema}".jobs')
    runner = register(app, admin)
    with admin.transaction(force_rollback=True):
        plan = "\n".join(r[0] for r in admin.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + app.queries.job_claim,
            {"runner_id": runner, "limit": 10, "queues": None, "can_wait": False}).fetchall())
    assert "jobs_claim_idx" in plan, plan
    assert "rows=1 loops=1" in plan  # the one due job, claimed
    total = re.search(r"Buffers: shared hit=(\d+)", plan)
    assert total and int(total.group(1)) < 120, (
        f"the claim touched {total.group(1) if total else '?'} buffers: is it walking scheduled jobs?\n{plan}")
    assert now_job.status() == "queued"  # the EXPLAIN's claim was rolled back


def test_a_delayed_job_runs_when_its_time_comes(wapp, start_worker) -> None:
    start_worker("--heartbeat-interval", "0.5", "--runner-dead-after", "2")
    job = wapp.tasks["add"].options(delay=7).enqueue(1, 1)
    assert wapp.database.fetch(f'SELECT due FROM "{wapp.settings.schema}".jobs WHERE id = %(id)s',
                               {"id": job.id})[0]["due"] is False
    assert job.result(timeout=30) == 2
    row = job.info()
    assert row["started_at"] >= row["run_at"]
