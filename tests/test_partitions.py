"""Network partitions: a worker host in a network namespace of the test's own loses its link
to the database. Longer than the lease: its jobs run elsewhere, its late writes are fenced out,
it comes back under a new identity and works again. Shorter than the lease: nothing re-runs."""

from __future__ import annotations

import os
import shutil
import signal
import time

import psycopg
import pytest

import netns
from helpers import wait_for

REASON = netns.available()
# CI sets PGQUEUE_REQUIRE_SYSTEM_TOOLS: there a missing `ip` binary is a failure, not a skip
# (other reasons, such as not being root, still skip, saying so).
REQUIRED = bool(os.environ.get("PGQUEUE_REQUIRE_SYSTEM_TOOLS")) and shutil.which("ip") is None
pytestmark = [pytest.mark.slow, pytest.mark.chaos,
              pytest.mark.skipif(REASON is not None and not REQUIRED,
                                 reason=f"no network namespaces here: {REASON}")]
FAST = ("--heartbeat-interval", "0.5", "--runner-dead-after", "2")


@pytest.fixture
def remote(private_server):
    """(host, inside_dsn, outside_dsn, app): a worker host in a namespace, and the server it
    reaches over its link."""
    if REASON is not None:
        pytest.fail(f"CI requires the partition tests' tools: {REASON} (apt-get install iproute2)",
                    pytrace=False)
    server, dsn, app = private_server
    with netns.Host(1) as host:
        netns.serve_on(server.directory, [host.host_address], [host.subnet])
        server.stop()
        dsn = server.ensure_running()
        yield host, dsn.replace("@127.0.0.1:", f"@{host.host_address}:"), dsn, app


def rows(dsn: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def runner_of(dsn: str, schema: str, job_id: int) -> int | None:
    found = rows(dsn, f"""SELECT runner_id FROM "{schema}".jobs WHERE id = %s AND status = 'running'""", job_id)
    return found[0][0] if found else None


def test_a_partition_longer_than_the_lease(remote, start_worker) -> None:
    host, inside, outside, app = remote
    schema = app.settings.schema
    cut_off = start_worker(*FAST, dsn=inside, prefix=host.command())
    first = cut_off.runner_id()
    job = app.tasks["recorded_sleep"].enqueue(6.0)
    wait_for(lambda: runner_of(outside, schema, job.id) == first, message="the job to start on the remote host")
    survivor = start_worker(*FAST, dsn=outside)
    second = survivor.runner_id()
    host.cut()
    cut_at = time.monotonic()
    wait_for(lambda: runner_of(outside, schema, job.id) == second, timeout=30,
             message="the job to run again on this host")
    reason = rows(outside, f'SELECT reason FROM "{schema}".runners WHERE id = %s', first)[0][0]
    assert reason.startswith("no heartbeat"), reason  # its sessions live on in the server: the lease decided
    wait_for(lambda: time.monotonic() - cut_at > 5.0, message="five seconds of partition")
    host.heal()
    assert job.result(timeout=40) == "slept 6.0"
    # The cut-off attempt ran to its end too, but its outcome was never applied.
    wait_for(lambda: f"runner {first} lost its lease" in cut_off.log(), timeout=30,
             message="the cut-off worker to learn it lost its lease")
    history = rows(outside, f"""SELECT to_status, attempt, runner_id, kind FROM "{schema}".job_events
                                WHERE job_id = %s ORDER BY id""", job.id)
    finishes = [h for h in history if h[3] in ("succeeded", "failed", "retry_scheduled")]
    assert finishes == [("succeeded", 2, second, "succeeded")], history
    # It came back under a new id and works again.
    again = wait_for(lambda: (r := rows(outside, f"""SELECT id FROM "{schema}".runners WHERE pid = %s
                                                  AND state = 'running' AND id <> %s""", cut_off.pid, first))
                     and r[0][0], timeout=30, message="the cut-off worker to register again")
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(timeout=60) == 0
    done = app.tasks["add"].enqueue(20, 22)
    assert done.result(timeout=30) == 42
    assert done.info()["runner_id"] is None and rows(
        outside, f"""SELECT runner_id FROM "{schema}".job_events WHERE job_id = %s AND kind = 'claimed'""",
        done.id) == [(again,)]


def test_a_partition_shorter_than_the_lease_reruns_nothing(remote, start_worker) -> None:
    """Default settings (10 s lease): a second and a half without network is ridden out."""
    host, inside, outside, app = remote
    schema = app.settings.schema
    remote_worker = start_worker(dsn=inside, prefix=host.command())
    runner = remote_worker.runner_id()
    job = app.tasks["recorded_sleep"].enqueue(4.0)
    wait_for(lambda: runner_of(outside, schema, job.id) == runner, message="the job to start on the remote host")
    start_worker(dsn=outside).runner_id()  # a live runner here, whose passes would reap the remote one
    host.cut()
    cut_at = time.monotonic()
    wait_for(lambda: time.monotonic() - cut_at > 1.5, message="a second and a half without network")
    host.heal()
    assert job.result(timeout=30) == "slept 4.0"
    assert rows(outside, f"SELECT count(*) FROM \"{schema}\".runners WHERE state = 'dead'") == [(0,)]
    assert rows(outside, f"""SELECT count(*) FROM "{schema}".executions WHERE note = 'start'""") == [(1,)]
