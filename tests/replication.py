"""A primary and a streaming-replication standby of the tests' own, and failover between them.

Both are embedded servers (pgqueue.embedded, the same binaries, password authentication: the
standby is a base backup of the primary, so it has the same password). The standby is made
with ``pg_basebackup -R`` (it streams from the primary, with ``primary_conninfo`` written for
it) and started with ``pg_ctl``: the embedded server's own start waits for a server that is
"ready", and a standby never is. Clients use the multi-host DSN, ``target_session_attrs =
read-write``: libpq tries each host in turn and keeps the one that accepts writes.

``failover(mode)``: the primary is stopped (``fast``: a clean shutdown, which sends every WAL
record to the connected standby before it ends; ``immediate``: a crash, which loses what was
not yet sent unless replication is synchronous) and the standby promoted. ``rebuild()`` makes
the old primary a standby of the new one (a fresh base backup), so failovers can go on.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import conninfo

from pgqueue.embedded import EmbeddedServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """One server of the pair: an embedded server's folder, started and stopped with pg_ctl."""

    def __init__(self, directory: Path) -> None:
        self.server = EmbeddedServer(directory)
        self.port: int | None = None

    def pg_ctl(self, *args: str) -> None:
        server = self.server
        with server._locked():  # the embedded server's own lock and account handling
            # The server's account must reach its folder, even if another pytest session of
            # this account has made the shared temporary folder private again meanwhile.
            server._prepare_ownership(server._binaries())
            server._run(server._binaries(), "pg_ctl", "-D", str(server.data), *args)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.server.logfile), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.server.data / "postmaster.pid").exists()

    def is_primary(self, password: str) -> bool:
        with psycopg.connect(self.dsn(password), autocommit=True, connect_timeout=3) as conn:
            return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]

    def dsn(self, password: str) -> str:
        return f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{self.port}/postgres"


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.nodes = [Node(directory / "a"), Node(directory / "b")]
        first = self.nodes[0].server
        first.ensure_running()
        self.password = first._password() or ""
        self.nodes[0].port = first._running_port()
        self.primary, self.standby = self.nodes
        self.failovers = 0
        self._base_backup(self.standby, self.primary)
        self.standby.start()
        self.wait_streaming()

    @property
    def dsn(self) -> str:
        """The multi-host DSN workers and clients use."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return (f"postgresql://postgres:{quote(self.password, safe='')}@{hosts}/postgres"
                "?target_session_attrs=read-write&connect_timeout=3")

    def _base_backup(self, node: Node, source: Node) -> None:
        server = node.server
        if server.data.exists():
            shutil.rmtree(server.data)
        server.directory.mkdir(parents=True, exist_ok=True)
        account = server._run_as()
        if account is not None:
            os.chown(server.directory, account.pw_uid, account.pw_gid)
        source_info = conninfo.make_conninfo(host="127.0.0.1", port=str(source.port), user="postgres",
                                             password=self.password)
        server._run(server._binaries(), "pg_basebackup", "-D", str(server.data), "-R", "-X", "stream",
                    "-c", "fast", "-d", source_info)
        # A synchronous standby name copied from the source would make the new standby, once
        # promoted, wait for a standby of its own at every commit.
        auto = server.data / "postgresql.auto.conf"
        auto.write_text("".join(line for line in auto.read_text().splitlines(keepends=True)
                                if not line.startswith("synchronous_standby_names")))
        server.password_file.write_text(self.password + "\n")
        server.password_file.chmod(0o600)
        server.logfile.touch()
        # A rebuilt node keeps its port: it is in the clients' multi-host DSN.
        node.port = node.port or _free_port()
        server._write_port(node.port)

    def wait_streaming(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(self.primary.dsn(self.password), autocommit=True) as conn:
                if conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0]:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby never streamed; see {self.standby.server.logfile}")
            time.sleep(0.1)

    def synchronous(self, on: bool) -> None:
        """Make the primary's commits wait for the standby (or not)."""
        with psycopg.connect(self.primary.dsn(self.password), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{'*' if on else ''}'")
            conn.execute("SELECT pg_reload_conf()")

    def failover(self, mode: str = "fast") -> None:
        """Stop the primary, promote the standby; the two swap roles."""
        self.primary.stop(mode)
        self.standby.pg_ctl("-w", "-t", "60", "promote")
        deadline = time.monotonic() + 60
        while not self.standby.is_primary(self.password):
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby was not promoted; see {self.standby.server.logfile}")
            time.sleep(0.1)
        self.primary, self.standby = self.standby, self.primary
        self.failovers += 1

    def rebuild(self) -> None:
        """The stopped old primary comes back as a standby of the new one."""
        self._base_backup(self.standby, self.primary)
        self.standby.start()
        self.wait_streaming()

    def stop(self) -> None:
        for node in self.nodes:
            if node.running():
                try:
                    node.stop("immediate")
                except Exception:
                    from pgqueue.embedded import kill_server

                    kill_server(node.server.directory)
