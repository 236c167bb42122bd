"""How durable a claim is: claims commit asynchronously by default (``synchronous_claims``),
outcomes always synchronously; a claim that a server crash forgot makes the job run again,
and never twice at once on the runner that still runs it."""

from __future__ import annotations

import psycopg
import pytest

from helpers import events, wait_for
from pgqueue.worker import claimer, outcomes
from pgqueue.worker.connections import BorrowedConnection
from sqlrunner import finish, register


def _commit_mode_of(conn: psycopg.Connection, run) -> str:
    """synchronous_commit as the transaction of ``run`` would commit with it."""
    with conn.transaction(force_rollback=True):
        run()
        return conn.execute("SHOW synchronous_commit").fetchone()[0]


@pytest.mark.parametrize("synchronous, expected", [(False, "off"), (True, "on")])
def test_a_claim_commits_without_waiting_for_the_disk_unless_asked(app, admin, database_dsn,
                                                                   synchronous, expected) -> None:
    schema = app.settings.schema
    runner = register(app, admin)
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, due) VALUES ('t', true)""")
    with psycopg.connect(database_dsn) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        conn.rollback()
        request = claimer.Claim.serving(runner, 5, None, synchronous=synchronous)
        claimed = []

        def claim() -> None:
            claimed.extend(claimer.claim(BorrowedConnection(conn), app.queries, request,
                                         app.settings.max_args_bytes).jobs)

        assert _commit_mode_of(conn, claim) == expected
        assert len(claimed) == 1, "the claim took the job"
        # Local to the claim's transaction: the session keeps its own setting.
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        conn.rollback()


def test_an_outcome_always_waits_for_the_disk(app, admin, database_dsn) -> None:
    schema = app.settings.schema
    runner = register(app, admin)
    admin.execute(f"""INSERT INTO "{schema}".jobs (task, due) VALUES ('t', true)""")
    job = claimer.claim(BorrowedConnection(admin), app.queries, claimer.Claim.serving(runner, 1, None),
                        app.settings.max_args_bytes).jobs[0]
    with psycopg.connect(database_dsn) as conn:
        written: set[int] = set()
        mode = _commit_mode_of(conn, lambda: written.update(
            finish(app, conn, outcomes.succeeded(job, None))))
        assert written == {job.id} and mode == "on"


def test_a_claim_a_crash_forgot_reruns_the_job_but_never_twice_on_the_same_runner(wapp, start_worker, admin) -> None:
    """The database forgets a claim (as a crash right after an asynchronous commit does: the
    job is queued again, its attempt counter and the claim's event gone) while the runner still
    runs the job. The runner claims it again under the same attempt: it must not start a
    second execution; the running one's outcome is the new claim's."""
    schema = wapp.settings.schema
    worker = start_worker("--concurrency", "2")
    runner = worker.runner_id()
    job = wapp.tasks["recorded_sleep"].enqueue(3.0)
    wait_for(lambda: admin.execute(f'SELECT count(*) FROM "{schema}".executions WHERE job_id = %s',
                                   (job.id,)).fetchone()[0] == 1, message="the job to start")
    with admin.transaction():
        forgotten = admin.execute(
            f"""UPDATE "{schema}".jobs SET status = 'queued', runner_id = NULL, started_at = NULL,
                    attempts = attempts - 1
                WHERE id = %s AND status = 'running' RETURNING id""", (job.id,)).fetchone()
        admin.execute(f"""DELETE FROM "{schema}".job_events WHERE job_id = %s AND kind = 'claimed'""",
                      (job.id,))
    assert forgotten, "the job had ended before its claim could be forgotten: make it longer"
    wait_for(lambda: job.status() == "running", timeout=20, message="the runner to claim the job again")
    assert job.result(timeout=20) == "slept 3.0"
    wait_for(lambda: admin.execute(f'SELECT count(*) FROM "{schema}".executions WHERE job_id = %s',
                                   (job.id,)).fetchone()[0] >= 2, message="the execution to end")
    ran = admin.execute(f"""SELECT runner_id, attempt, note FROM "{schema}".executions WHERE job_id = %s
                            ORDER BY at""", (job.id,)).fetchall()
    assert ran == [(runner, 1, "start"), (runner, 1, "end")], ran
    steps = [(e[0], e[1], e[2], e[3]) for e in events(admin, schema, job.id)]
    assert steps == [(None, "queued", 0, None), ("queued", "running", 1, runner),
                     ("running", "succeeded", 1, runner)], steps
    assert job.info()["attempts"] == 1
    assert "claimed again after a server crash forgot its claim" in worker.log()
    assert "synchronous claims off" in worker.log(), "the start-up line says how claims commit"
