"""The chaos run on a server of the test's own: SIGKILL, SIGSTOP past the lease, SIGTERM,
pg_terminate_backend and fast and immediate restarts, from a seeded generator, while jobs
stream in; then the checker over the ledger and the history (tests/chaos_checker.py).

Short by default (one round of every fault and a little more); ``--chaos-long`` (or
``PGQUEUE_CHAOS=long``) runs for five minutes. ``PGQUEUE_CHAOS_SEED`` replays a sequence;
``PGQUEUE_CHAOS_REPORT=file.jsonl`` collects the summary tables (docs/chaos.md).
"""

from __future__ import annotations

import pytest

from chaos_run import PROCESS_FAULTS, SERVER_FAULTS, ChaosRun, assert_clean, duration, restarter, seed_from_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_chaos_every_fault_class(private_server, start_worker, request) -> None:
    server, dsn, app = private_server
    run = ChaosRun(label="direct", app=app, worker_dsn=dsn, observe_dsn=dsn, start_worker=start_worker,
                   seed=seed_from_env(), faults=PROCESS_FAULTS + SERVER_FAULTS,
                   duration=duration(request.config, 15, 300), server_fault=restarter(server))
    assert_clean(run.run())
