"""Failover: workers on a multi-host DSN (``target_session_attrs=read-write``) while the
primary is stopped and its streaming standby promoted (tests/replication.py). They reconnect
to the new primary, no committed job is lost, and every duplicate is one the history explains
(tests/chaos_checker.py).

Default run: one clean failover (``pg_ctl stop -m fast`` sends the standby every WAL record
before the primary ends: nothing acknowledged is lost even with asynchronous replication).
``--chaos-long``: failovers for three minutes, rebuilding a standby after each, alternating
with crash failovers (``-m immediate``) under synchronous replication, which is what keeps
acknowledged commits through a crash.
"""

from __future__ import annotations

import psycopg
import pytest

from chaos_run import ChaosRun, assert_clean, duration, long_mode, seed_from_env
from conftest import register_worker_tasks
from replication import Cluster

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path, make_app):
    pair = Cluster(tmp_path / "cluster")
    try:
        app = make_app(dsn=pair.dsn)
        app.migrate()
        with psycopg.connect(pair.dsn, autocommit=True) as conn:
            register_worker_tasks(app, conn)
        yield pair, app
    finally:
        pair.stop()


def test_workers_follow_a_failover(cluster, start_worker, request) -> None:
    pair, app = cluster
    long = long_mode(request.config)

    def fault(kind: str):
        if kind == "failover_immediate":
            pair.synchronous(True)
            pair.failover("immediate")
        else:
            pair.synchronous(False)
            pair.failover("fast")
        return pair.rebuild if long else None

    run = ChaosRun(label="failover", app=app, worker_dsn=pair.dsn, observe_dsn=pair.dsn,
                   start_worker=start_worker, seed=seed_from_env(),
                   faults=("failover", "failover_immediate") if long else ("failover",),
                   duration=duration(request.config, 0, 180), server_fault=fault, warmup=2.0)
    outcome = run.run()
    assert pair.failovers == len(outcome.faults) >= 1, "the run did not fail over"
    assert_clean(outcome)
