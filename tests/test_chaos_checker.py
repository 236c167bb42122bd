"""The chaos checker catches what it claims to: one real job crashes under a worker and runs
again (the checker passes and explains the duplicate); then the database is broken by hand, as
a defect would break it: a zombie's outcome applied by pgqueue's own outcome statement with its
fence cut out, a job deleted, an execution nobody claimed, a crash missing from the history."""

from __future__ import annotations

import re
import signal

import psycopg
import pytest

import chaos_checker
from helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# The fence of job_finish (sql/queries/execution.sql), stated in each of its three CTEs.
FENCE = re.compile(r"j\.runner_id IS NOT DISTINCT FROM o\.runner_id AND j\.attempts = o\.attempt\s+"
                   r"AND j\.status = 'running'")


@pytest.fixture
def crashed_job(wapp, start_worker, admin):
    """(job id, first runner, second runner): attempt 1 SIGKILLed on one worker, attempt 2 run
    to its end on another."""
    schema = wapp.settings.schema
    chaos_checker.create_ledger(admin, schema)
    first = start_worker()
    first_runner = first.runner_id()
    job = wapp.tasks["chaos_work"].enqueue(1, 30.0)
    wait_for(lambda: admin.execute(f"""SELECT count(*) FROM "{schema}".ledger WHERE job_id = %s""",
                                   (job.id,)).fetchone()[0] == 1, message="attempt 1 to start")
    first.signal(signal.SIGKILL)
    first.wait()
    # The second attempt is short: the job's arguments are rewritten before it is claimed.
    admin.execute(f"""UPDATE "{schema}".jobs SET args = '[1, 0.1]' WHERE id = %s""", (job.id,))
    second = start_worker()
    second_runner = second.runner_id()
    assert job.result(timeout=30) == {"index": 1, "attempt": 2, "runner": second_runner}
    return job.id, first_runner, second_runner


def check(admin: psycopg.Connection, schema: str, job_id: int, want: str = "succeeded") -> chaos_checker.Report:
    return chaos_checker.check(admin, schema, {job_id: want})


def test_a_clean_crash_passes_and_its_duplicate_is_explained(crashed_job, wapp, admin) -> None:
    job_id, _, _ = crashed_job
    report = check(admin, wapp.settings.schema, job_id)
    assert report.ok, report.explain()
    assert report.executions == 2 and dict(report.duplicates) == {"crash": 1}, report.explain()


def test_a_zombie_outcome_applied_through_a_broken_fence_is_reported(crashed_job, wapp, admin) -> None:
    """The attempt-1 worker comes back and writes its outcome with job_finish, fence removed."""
    job_id, first_runner, _ = crashed_job
    schema = wapp.settings.schema
    broken, cuts = FENCE.subn("TRUE", wapp.queries["job_finish"])
    assert cuts == 3, ("job_finish no longer states its fence as this test expects: update FENCE "
                       "so that the test still removes every copy of it")
    admin.execute(broken, {
        "ids": [job_id], "runner_ids": [first_runner], "attempts": [1], "statuses": ["succeeded"],
        "results": ['{"index": 1, "attempt": 1, "runner": %d}' % first_runner], "errors": [None],
        "delays": [0.0], "failed": [False], "reasons": ["succeeded"], "writer": first_runner})
    report = check(admin, schema, job_id)
    assert not report.ok
    assert any("a fenced-out write went through" in s for s in report.stale_writes), report.explain()
    assert any("other than the winning attempt" in s for s in report.stale_writes), report.explain()


def test_a_stale_result_written_into_the_row_alone_is_reported(crashed_job, wapp, admin) -> None:
    """A write that leaves no event (an UPDATE that bypasses the statement) still shows: the row
    disagrees with its history."""
    job_id, first_runner, _ = crashed_job
    schema = wapp.settings.schema
    admin.execute(f"""UPDATE "{schema}".jobs SET result = jsonb_build_object('index', 1, 'attempt', 1,
                      'runner', %s::bigint) WHERE id = %s""", (first_runner, job_id))
    report = check(admin, schema, job_id)
    assert len(report.stale_writes) == 1 and "holds the result" in report.stale_writes[0], report.explain()


def test_a_deleted_job_is_lost(crashed_job, wapp, admin) -> None:
    job_id, _, _ = crashed_job
    schema = wapp.settings.schema
    admin.execute(f'DELETE FROM "{schema}".jobs WHERE id = %s', (job_id,))
    report = check(admin, schema, job_id)
    assert report.lost == [job_id] and not report.ok, report.explain()
    admin.execute(f'DELETE FROM "{schema}".job_events WHERE job_id = %s', (job_id,))
    assert check(admin, schema, job_id).lost == [job_id]


def test_unexplained_executions_and_wrong_ends_are_reported(crashed_job, wapp, admin) -> None:
    job_id, first_runner, second_runner = crashed_job
    schema = wapp.settings.schema
    assert check(admin, schema, job_id, want="failed").problems == [
        f"job {job_id}: ended succeeded, expected failed"]
    # A second runner in attempt 2: a claim that was not exclusive.
    admin.execute(f"""INSERT INTO "{schema}".ledger (job_id, attempt, runner_id, pid, note)
                      VALUES (%s, 2, %s, 0, 'start')""", (job_id, first_runner))
    report = check(admin, schema, job_id)
    assert any(f"runner {first_runner} ran attempt 2" in p for p in report.problems), report.explain()
    admin.execute(f"""DELETE FROM "{schema}".ledger WHERE job_id = %s AND attempt = 2 AND runner_id = %s""",
                  (job_id, first_runner))
    # The crash that explains attempt 1's execution, gone from the history.
    admin.execute(f"""DELETE FROM "{schema}".job_events WHERE job_id = %s AND kind = 'crashed'""", (job_id,))
    report = check(admin, schema, job_id)
    assert any("attempt 1 ran and the history never ended it" in p for p in report.problems), report.explain()
    assert not report.ok


def test_an_execution_a_crash_forgot_the_claim_of_is_explained_only_by_a_crash(crashed_job, wapp, admin) -> None:
    """Claims commit asynchronously: a server crash can forget one, and its runner's execution
    then belongs to no claim. That is a duplicate explained by the crash only when the
    execution's first ledger row came after a crash of the run (and not too long after)."""
    job_id, first_runner, _ = crashed_job
    schema = wapp.settings.schema
    admin.execute(f"""INSERT INTO "{schema}".ledger (job_id, attempt, runner_id, pid, note)
                      VALUES (%s, 2, %s, 0, 'start')""", (job_id, first_runner))
    written_at = admin.execute(f"""SELECT at FROM "{schema}".ledger WHERE job_id = %s AND attempt = 2
                                   AND runner_id = %s""", (job_id, first_runner)).fetchone()[0]
    no_crash = check(admin, schema, job_id)
    assert any(f"runner {first_runner} ran attempt 2" in p for p in no_crash.problems), no_crash.explain()
    before = chaos_checker.check(admin, schema, {job_id: "succeeded"},
                                 crashes=[written_at + chaos_checker.CRASH_WINDOW / 2])
    assert not before.ok, "a crash after the execution's first row cannot have forgotten its claim"
    long_before = chaos_checker.check(admin, schema, {job_id: "succeeded"},
                                      crashes=[written_at - chaos_checker.CRASH_WINDOW * 2])
    assert not long_before.ok, "a crash long before the execution does not explain it"
    crashed = chaos_checker.check(admin, schema, {job_id: "succeeded"},
                                  crashes=[written_at - chaos_checker.CRASH_WINDOW / 60])
    assert crashed.ok, crashed.explain()
    assert crashed.duplicates[chaos_checker.CLAIM_FORGOTTEN] == 1, crashed.explain()
