"""pgqueue behind a real PgBouncer (tests/pgbouncer.py), in transaction and session mode.

Transaction mode: pgqueue finds the pooler by itself ('auto': no prepared statements, no
session settings, no liveness lock) and enqueue, job.result() and `pgqueue work --no-listen`
work; prepared statements forced on fail with an error that says what to change. Session mode:
LISTEN/NOTIFY wakes workers and waiters. And the chaos run, through the transaction pooler.
"""

from __future__ import annotations

import psycopg
import pytest

import pgqueue
from chaos_run import PROCESS_FAULTS, ChaosRun, assert_clean, duration, seed_from_env
from conftest import register_worker_tasks
from helpers import wait_for
from pgbouncer import PgBouncer

pytestmark = pytest.mark.slow


@pytest.fixture
def bouncer(database_dsn, tmp_path):
    """Start PgBouncers in front of the test server: bouncer("transaction" | "session")."""
    started: list[PgBouncer] = []

    def start(mode: str) -> PgBouncer:
        pooler = PgBouncer(database_dsn, tmp_path / f"pgbouncer-{mode}-{len(started)}", mode)
        started.append(pooler)
        return pooler.start()

    yield start
    for pooler in started:
        pooler.stop()


def pooled_app(make_app, wapp: pgqueue.App, dsn: str, **settings: object) -> pgqueue.App:
    """An App on the test's (already migrated) schema that connects through ``dsn``."""
    return register_worker_tasks(make_app(dsn=dsn, **settings), None)


def test_transaction_mode_is_detected_and_everything_works(bouncer, make_app, wapp, start_worker, admin) -> None:
    pooler = bouncer("transaction")
    app = pooled_app(make_app, wapp, pooler.dsn, listen=False)
    with app.database.connection() as conn:
        from pgqueue.worker.connections import reaches_server_directly

        assert not reaches_server_directly(conn), "PgBouncer was taken for a direct connection"
        assert conn.prepare_threshold is None, "'auto' left prepared statements on behind PgBouncer"
    with psycopg.connect(wapp.database.dsn) as direct:
        assert reaches_server_directly(direct), "a direct connection was taken for a pooler"
    worker = start_worker("--no-listen", "--poll-interval", "0.2", dsn=pooler.dsn)
    runner = worker.runner_id()
    jobs = [app.tasks["add"].enqueue(i, i) for i in range(30)]  # the same statement, 30 times
    assert [job.result(timeout=30) for job in jobs] == [2 * i for i in range(30)]
    assert "instant recovery off (a connection pooler is in between" in worker.log()
    # With listen left on, job.result() still returns: its LISTEN may sit on any server session,
    # so it relies on its own re-checks.
    listening = pooled_app(make_app, wapp, pooler.dsn)
    assert listening.tasks["add"].enqueue(20, 22).result(timeout=30) == 42
    liveness = admin.execute(f'SELECT liveness FROM "{wapp.settings.schema}".runners WHERE id = %s',
                             (runner,)).fetchone()[0]
    assert liveness is False, "behind a pooler the runner must not rely on its liveness lock"


def test_prepared_statements_forced_on_in_transaction_mode_say_what_to_change(bouncer, make_app, wapp) -> None:
    pooler = bouncer("transaction")
    for prepared, fails in (("auto", False), ("on", True)):
        app = pooled_app(make_app, wapp, pooler.dsn, listen=False, prepared_statements=prepared, pool_size=1)
        for i in range(8):  # psycopg prepares a statement from its sixth execution on
            app.tasks["add"].enqueue(i, i)
        # Another client takes the server session the App used: its next statement lands on
        # another one, which never saw the App's prepared statements.
        with psycopg.connect(pooler.dsn, autocommit=True) as other:
            with other.transaction():
                other.execute("SELECT 1")
                if fails:
                    with pytest.raises(pgqueue.ConfigurationError,
                                       match="transaction mode is in between; set prepared_statements = off"):
                        app.tasks["add"].enqueue(1, 1)
                else:
                    app.tasks["add"].enqueue(1, 1)
        app.close()


def test_session_mode_with_listen(bouncer, make_app, wapp, start_worker, admin) -> None:
    """LISTEN works through a session pooler: with a 30 s poll, only a NOTIFY can wake the
    worker in time, and job.result() is woken by the finishing statement's notification."""
    pooler = bouncer("session")
    app = pooled_app(make_app, wapp, pooler.dsn)
    worker = start_worker("--poll-interval", "30", dsn=pooler.dsn)
    runner = worker.runner_id()
    schema = wapp.settings.schema
    for i in range(3):
        wait_for(lambda: admin.execute(f'SELECT waiting FROM "{schema}".runners WHERE id = %s',
                                       (runner,)).fetchone()[0], message="the worker to wait for work")
        assert app.tasks["add"].enqueue(i, 1).result(timeout=10) == i + 1
    assert "instant recovery off (a connection pooler is in between" in worker.log()


@pytest.mark.chaos
def test_chaos_through_transaction_mode(bouncer, make_app, wapp, start_worker, database_dsn, request) -> None:
    pooler = bouncer("transaction")
    app = pooled_app(make_app, wapp, pooler.dsn, listen=False)
    run = ChaosRun(label="pgbouncer-transaction", app=app, worker_dsn=pooler.dsn, observe_dsn=database_dsn,
                   start_worker=start_worker, seed=seed_from_env(), faults=PROCESS_FAULTS,
                   duration=duration(request.config, 8, 180), direct=False,
                   extra_worker_args=("--no-listen",))
    assert_clean(run.run())
