"""Inspection: every transition leaves its event, the views are right, the operator CLI works."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

import pgqueue
from helpers import events
from pgqueue.worker import outcomes
from pgqueue.worker.connections import BorrowedConnection
from sqlrunner import claim, finish, maintain, register


@pytest.fixture
def t(app: pgqueue.App):
    return app.task(name="t")(lambda *args: None)


def stop(app: pgqueue.App, admin: psycopg.Connection, runner: int, reason: str) -> None:
    """What a runner's clean stop runs: mark it stopped, hand back what it still runs."""
    conn = BorrowedConnection(admin)
    with admin.transaction():
        conn.run(app.queries.raw("runner_end"), {"runner_id": runner, "state": "stopped", "reason": reason})
        conn.run(app.queries.raw("runner_hand_back"), {"runner_id": runner, "reason": reason})


def transitions(admin: psycopg.Connection, schema: str, job_id: int) -> list[tuple]:
    return [(e[0], e[1], e[2]) for e in events(admin, schema, job_id)]


def test_every_transition_leaves_one_event(app, t, admin) -> None:
    schema = app.settings.schema
    runner = register(app, admin)

    ok = t.enqueue()
    claim(app, admin, runner)
    assert finish(app, admin, outcomes.Outcome(ok.id, runner, 1, "succeeded", result="1", reason="succeeded")) == {ok.id}
    assert transitions(admin, schema, ok.id) == [
        (None, "queued", 0), ("queued", "running", 1), ("running", "succeeded", 1)]

    retried = t.enqueue()
    claim(app, admin, runner)
    finish(app, admin, outcomes.Outcome(retried.id, runner, 1, "queued", error='{"type": "E"}', failed=True,
                                        reason="retry in 0.0 s: E"))
    claim(app, admin, runner)
    finish(app, admin, outcomes.Outcome(retried.id, runner, 2, "failed", error='{"type": "E"}', failed=True,
                                        reason="failed after 2 failed attempts: E"))
    assert transitions(admin, schema, retried.id) == [
        (None, "queued", 0), ("queued", "running", 1), ("running", "queued", 1),
        ("queued", "running", 2), ("running", "failed", 2)]
    assert retried.info()["failures"] == 2

    crashed = t.enqueue()
    claim(app, admin, runner)
    # Silent for a minute, on a lease far shorter than the server's uptime (a server that
    # started less than a lease ago grants every runner a full lease).
    admin.execute(f"UPDATE \"{schema}\".runners SET heartbeat_at = now() - interval '1 minute', "
                  "dead_after = 0.5 WHERE id = %s", (runner,))
    maintain(app, admin)
    history = events(admin, schema, crashed.id)
    assert [(e[0], e[1]) for e in history] == [(None, "queued"), ("queued", "running"), ("running", "queued")]
    assert history[-1][3] == runner
    assert history[-1][4].startswith(f"runner {runner} declared dead: no heartbeat for 6")
    assert crashed.info()["crashes"] == 1

    cancelled = t.enqueue()
    cancelled.cancel()
    assert transitions(admin, schema, cancelled.id) == [(None, "queued", 0), ("queued", "cancelled", 0)]

    runner2 = register(app, admin)
    handed = t.enqueue()
    assert claim(app, admin, runner2, limit=5)[0].id == crashed.id  # the crashed job, first in line
    stop(app, admin, runner2, "handed back: worker stopping")
    assert transitions(admin, schema, handed.id)[-1] == ("running", "queued", 1)
    assert transitions(admin, schema, crashed.id)[-1] == ("running", "queued", 2)

    # A retry of a job whose cancellation was requested meanwhile ends it as cancelled.
    runner3 = register(app, admin)
    doomed = t.enqueue()
    assert [j.id for j in claim(app, admin, runner3, limit=5)] == [crashed.id, handed.id, doomed.id]
    assert doomed.cancel() == "running"
    finish(app, admin, outcomes.Outcome(doomed.id, runner3, 1, "queued", error='{"type": "E"}', failed=True,
                                        reason="retry in 1.0 s: E"))
    assert doomed.status() == "cancelled"
    assert events(admin, schema, doomed.id)[-1][4] == "cancelled (requested while running): retry in 1.0 s: E"

    # A write for an attempt that is no longer current changes nothing and writes no event.
    assert finish(app, admin, outcomes.Outcome(handed.id, runner2, 1, "succeeded", result="1")) == set()
    assert transitions(admin, schema, handed.id)[-1] == ("queued", "running", 2)
    assert (handed.info()["status"], handed.info()["runner_id"]) == ("running", runner3)

    # The history never disagrees with the rows: every job's last event is its status.
    mismatched = admin.execute(f"""
        SELECT j.id FROM "{schema}".jobs j
        JOIN LATERAL (SELECT to_status FROM "{schema}".job_events e WHERE e.job_id = j.id
                      ORDER BY e.id DESC LIMIT 1) last ON true
        WHERE last.to_status <> j.status""").fetchall()
    assert mismatched == []


def test_queue_stats_on_a_seeded_database(app, t, admin) -> None:
    """Queued, scheduled and running come from the partial indexes; finished counts from the
    throughput rollup the finishing statements write (the last 24 hours)."""
    schema = app.settings.schema
    runner = register(app, admin)
    done = t.options(queue="mail").enqueue()
    old = t.options(queue="mail").enqueue()
    claim(app, admin, runner, limit=2, queues=["mail"])
    finish(app, admin, outcomes.Outcome(old.id, runner, 1, "failed", error='{"type": "E"}', failed=True,
                                        reason="failed"))
    # The failure happened 5 minutes ago (its minute of the rollup, moved back).
    admin.execute(f"""UPDATE "{schema}".throughput SET minute = minute - interval '5 minutes'
                      WHERE failed > 0""")
    finish(app, admin, outcomes.Outcome(done.id, runner, 1, "succeeded", result="1", reason="succeeded"))
    app.enqueue_many(t, [()] * 4)                               # 4 queued (default)
    t.options(queue="mail").enqueue()                           # 1 queued (mail)
    t.options(queue="mail", delay=3600).enqueue()               # 1 scheduled (mail)
    claim(app, admin, runner, limit=2, queues=["default"])      # 2 of default running
    admin.execute(f"""UPDATE "{schema}".jobs SET run_at = now() - interval '90 seconds'
                      WHERE queue = 'mail' AND status = 'queued' AND run_at <= now()""")
    rows = {r[0]: r[1:] for r in admin.execute(
        f"""SELECT queue, queued, scheduled, running, succeeded, failed, cancelled,
                   extract(epoch FROM oldest_queued_age)::int, succeeded_last_minute, failed_last_minute,
                   succeeded_last_hour, failed_last_hour
            FROM "{schema}".queue_stats""").fetchall()}
    assert rows["default"][:6] == (2, 0, 2, 0, 0, 0)
    assert rows["mail"][:6] == (1, 1, 0, 1, 1, 0)
    assert 89 <= rows["mail"][6] <= 120
    assert rows["mail"][7:] == (1, 0, 1, 1)


def test_runner_health_tells_alive_from_dead(app, t, admin) -> None:
    schema = app.settings.schema
    alive = register(app, admin)
    silent = register(app, admin)
    stopped = register(app, admin)
    t.enqueue()
    claim(app, admin, alive, limit=1)
    admin.execute(f"""UPDATE "{schema}".runners SET heartbeat_at = now() - interval '1 minute' WHERE id = %s""",
                  (silent,))
    stop(app, admin, stopped, "stopped")
    rows = {r[0]: r[1:] for r in admin.execute(
        f'SELECT id, state, alive, running_jobs FROM "{schema}".runner_health').fetchall()}
    assert rows[alive] == ("running", True, 1)
    assert rows[silent] == ("running", False, 0)
    assert rows[stopped] == ("stopped", False, 0)


def test_job_timeline_joins_jobs_and_runners(app, t, admin) -> None:
    schema = app.settings.schema
    runner = register(app, admin)
    job = t.enqueue()
    claim(app, admin, runner)
    rows = admin.execute(
        f"""SELECT to_status, task, queue, runner_host, runner_pid, since_previous IS NOT NULL
            FROM "{schema}".job_timeline WHERE job_id = %s ORDER BY event_id""", (job.id,)).fetchall()
    assert rows == [("queued", "t", "default", None, None, False),
                    ("running", "t", "default", "test-host", 4242, True)]


def test_current_job_inside_a_task(wapp, start_worker) -> None:
    start_worker()
    job = wapp.tasks["flaky"].enqueue(0)
    assert job.result(timeout=20) == 1  # flaky returns current_job().attempt


# ---------------------------------------------------------------- the CLI


def cli(database_dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=database_dsn, PGQUEUE_SCHEMA=schema)
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def seeded(app, t, admin):
    schema = app.settings.schema
    runner = register(app, admin)
    jobs = [t.enqueue(), t.options(queue="mail").enqueue(), t.enqueue(), t.enqueue()]
    claim(app, admin, runner, limit=1)
    finish(app, admin, outcomes.Outcome(jobs[0].id, runner, 1, "failed",
                                        error='{"type": "ValueError", "message": "bad", "traceback": "Traceback: here"}',
                                        failed=True, reason="failed after 1 failed attempt: ValueError: bad"))
    admin.execute(f"""UPDATE "{schema}".jobs SET status = 'succeeded', finished_at = now() - interval '10 days',
                      result = '42' WHERE id = %s""", (jobs[2].id,))
    return jobs


def test_cli_status(app, seeded, database_dsn) -> None:
    schema = app.settings.schema
    text = cli(database_dsn, schema, "status")
    assert text.returncode == 0, text.stderr
    assert "default" in text.stdout and "mail" in text.stdout and "Runners: 1 alive" in text.stdout
    data = json.loads(cli(database_dsn, schema, "status", "--json").stdout)
    by_queue = {q["queue"]: q for q in data["queues"]}
    # The failure is in the last 24 hours; the success was set 10 days back by hand (no rollup).
    assert (by_queue["default"]["failed"], by_queue["default"]["succeeded"], by_queue["mail"]["queued"]) == (1, 0, 1)
    assert data["runners"][0]["alive"] is True


def test_cli_jobs_with_filters(app, seeded, database_dsn) -> None:
    schema = app.settings.schema
    data = json.loads(cli(database_dsn, schema, "jobs", "--json").stdout)
    assert [j["id"] for j in data] == sorted((j.id for j in seeded), reverse=True)
    failed = json.loads(cli(database_dsn, schema, "jobs", "--status", "failed", "--json").stdout)
    assert [j["id"] for j in failed] == [seeded[0].id]
    mail = json.loads(cli(database_dsn, schema, "jobs", "--queue", "mail", "--task", "t", "--since", "1h",
                          "--json").stdout)
    assert [j["id"] for j in mail] == [seeded[1].id]
    assert len(json.loads(cli(database_dsn, schema, "jobs", "--limit", "2", "--json").stdout)) == 2
    assert "failed" in cli(database_dsn, schema, "jobs").stdout
    one_line_error(cli(database_dsn, schema, "jobs", "--status", "done"), "--status 'done' is not a job status")
    one_line_error(cli(database_dsn, schema, "jobs", "--since", "yesterday"), "--since 'yesterday' is neither")


def test_cli_job_detail(app, seeded, database_dsn) -> None:
    schema = app.settings.schema
    result = cli(database_dsn, schema, "job", str(seeded[0].id))
    assert result.returncode == 0, result.stderr
    assert "ValueError: bad" in result.stdout and "Traceback: here" in result.stdout
    assert "failed after 1 failed attempt" in result.stdout and "test-host" in result.stdout
    data = json.loads(cli(database_dsn, schema, "job", str(seeded[2].id), "--json").stdout)
    assert data["result"] == 42 and data["timeline"][0]["reason"] == "enqueued"
    one_line_error(cli(database_dsn, schema, "job", "999999"), "there is no job 999999")


def test_cli_retry_and_cancel(app, t, seeded, database_dsn, admin) -> None:
    schema = app.settings.schema
    result = cli(database_dsn, schema, "retry", str(seeded[0].id))
    assert result.returncode == 0 and "queued again" in result.stdout, result.stderr
    row = seeded[0].info()
    assert (row["status"], row["failures"]) == ("queued", 0)
    assert events(admin, schema, seeded[0].id)[-1][4] == "retried by user"
    one_line_error(cli(database_dsn, schema, "retry", str(seeded[2].id)), "only failed jobs can be retried")
    one_line_error(cli(database_dsn, schema, "retry", "999999"), "there is no job 999999")
    one_line_error(cli(database_dsn, schema, "retry"), "give the id of a failed job, or --failed")

    other = app.task(name="other")(lambda: None)
    failed_ids = [t.enqueue().id, t.enqueue().id, other.enqueue().id]
    admin.execute(f"""UPDATE "{schema}".jobs SET status = 'failed', finished_at = now() WHERE id = ANY(%s)""",
                  (failed_ids,))
    result = cli(database_dsn, schema, "retry", "--failed", "--task", "t")
    assert result.stdout.strip() == "2 failed jobs queued again", result.stderr
    assert app.job(failed_ids[2]).status() == "failed"

    result = cli(database_dsn, schema, "cancel", str(seeded[3].id))
    assert result.returncode == 0 and "is cancelled" in result.stdout
    one_line_error(cli(database_dsn, schema, "cancel", str(seeded[2].id)), "already succeeded")


def test_cli_prune(app, t, seeded, database_dsn, admin) -> None:
    schema = app.settings.schema
    many = app.enqueue_many(t, [()] * 2500)
    admin.execute(f"""UPDATE "{schema}".jobs SET status = 'succeeded', finished_at = now() - interval '8 days'
                      WHERE id = ANY(%s)""", ([j.id for j in many],))
    result = cli(database_dsn, schema, "prune", "--older-than", "7d", "--batch", "500")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 2501 finished jobs older than 7d")
    left = admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0]
    assert left == len(seeded) - 1
    orphan_events = admin.execute(
        f"""SELECT count(*) FROM "{schema}".job_events e
            WHERE NOT EXISTS (SELECT 1 FROM "{schema}".jobs j WHERE j.id = e.job_id)""").fetchone()[0]
    assert orphan_events == 0
    one_line_error(cli(database_dsn, schema, "prune", "--older-than", "soon"), "'soon' is not a duration")


def test_cli_commands_on_an_unmigrated_schema_say_to_migrate(database_dsn, schema_name) -> None:
    for args in (("status",), ("jobs",), ("job", "1")):
        one_line_error(cli(database_dsn, schema_name, *args), f"run `pgqueue --schema {schema_name} migrate`")
