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


def test_the_embedded_server_is_private(server: EmbeddedServer) -> None:
    """Not trust on TCP: a generated password, kept in a file only its owner can read."""
    import os
    import stat

    dsn = server.ensure_running()
    mode = stat.S_IMODE(os.stat(server.password_file).st_mode)
    assert mode == 0o600, f"the password file is mode {oct(mode)}: other local users could read it"
    port = server.status()["port"]
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=5)
    hba = (server.data / "pg_hba.conf").read_text().splitlines()
    assert not [line for line in hba if line.strip() and not line.startswith("#") and line.split()[-1] == "trust"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_old_trusting_data_folder_gets_a_password(server: EmbeddedServer) -> None:
    server.ensure_running()
    hba = server.data / "pg_hba.conf"
    owner = hba.stat()
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    server.password_file.unlink()
    server.stop()
    dsn = server.ensure_running()  # what an older pgqueue left behind: given a password now
    assert server.password_file.exists()
    active = [line for line in hba.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert active and all(line.split()[-1] == "scram-sha-256" for line in active), active
    assert hba.stat().st_uid == owner.st_uid
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    port = server.status()["port"]
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=5)
