"""The embedded server: one server per folder, shared by processes, data kept across stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgqueue import errors
from pgqueue.embedded import EmbeddedServer


@pytest.fixture
def server(tmp_path: Path):
    server = EmbeddedServer(tmp_path / ".pgqueue")
    yield server
    server.stop()


def test_processes_starting_at_once_share_one_server(server: EmbeddedServer) -> None:
    code = (
        "import sys; from pgqueue.embedded import EmbeddedServer; "
        f"print(EmbeddedServer({str(server.directory)!r}).ensure_running())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    dsns = {out.strip() for out, _ in outputs}
    assert len(dsns) == 1, dsns
    with psycopg.connect(dsns.pop()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_data_survives_a_stop(server: EmbeddedServer) -> None:
    dsn = server.ensure_running()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    assert server.stop() is True
    assert server.status()["running"] is False
    assert server.stop() is False
    with psycopg.connect(server.ensure_running()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


def test_a_folder_that_is_not_a_data_folder_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / ".pgqueue"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "stray.txt").write_text("not postgres")
    with pytest.raises(errors.EmbeddedServerError, match="holds no PostgreSQL data"):
        EmbeddedServer(directory).ensure_running()
