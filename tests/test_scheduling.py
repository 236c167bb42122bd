"""Jobs scheduled for later: out of the claim index until their time is near; claims stay cheap."""

from __future__ import annotations

import re

import psycopg

import pgqueue
from sqlrunner import claim, maintain, register


def test_later_jobs_wait_outside_the_claim_indexes_until_promoted(app, admin) -> None:
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    now = task.enqueue()
    soon = task.options(delay=1).enqueue()
    later = task.options(delay=3600).enqueue()
    due = dict(admin.execute(f'SELECT id, due FROM "{schema}".jobs').fetchall())
    assert (due[now.id], due[soon.id], due[later.id]) == (True, False, False)
    # Its time comes: the maintenance pass promotes it, no earlier.
    assert maintain(app, admin).promoted == 0
    admin.execute(f"UPDATE \"{schema}\".jobs SET run_at = now() - interval '1 s' WHERE id = %s", (later.id,))
    assert maintain(app, admin).promoted == 1
    runner = register(app, admin)
    assert [j.id for j in claim(app, admin, runner, limit=5)] == [now.id, later.id]


def test_claiming_does_not_walk_a_large_schedule(app, admin) -> None:
    """Guards the claim plan: 20,000 jobs scheduled for tomorrow cost a claim nothing."""
    schema = app.settings.schema
    task = app.task(name="t")(lambda: None)
    app.enqueue_many(task, [()] * 20_000, delay=86_400, priority=5)
    now_job = task.enqueue()
    admin.execute(f'ANALYZE "{schema}".jobs')
    runner = register(app, admin)
    from pgqueue.worker import claimer

    params = claimer.Claim(runner, 10, "all").params(app.settings.max_args_bytes)
    # A worker's session has compiled the claim's PL/pgSQL guard long before: so does this one
    # (its first call reads the catalogs, a hundred buffers that are not the claim's).
    admin.execute(f'SELECT * FROM "{schema}".claim_guard()')
    with admin.transaction(force_rollback=True):
        plan = "\n".join(r[0] for r in admin.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + app.queries.job_claim_all, params).fetchall())
    assert "jobs_ready_idx" in plan, plan
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
