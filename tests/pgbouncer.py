"""A real PgBouncer of the tests' own, in front of a test server, on a free port.

Debian's ``pgbouncer`` binary, started in the foreground with a configuration written for the
test: ``pool_mode`` transaction or session; authentication as the server wants it (a server
that trusts gets ``auth_type = trust``; a server with a password, such as the embedded one,
gets a userlist holding it, used for the clients and for logging into the server). It refuses
to run as root, so under root it is started with ``-u postgres`` (or nobody).

When the binary is missing: the test fails, saying how to install it, when
``PGQUEUE_REQUIRE_SYSTEM_TOOLS`` is set (CI sets it), else it is skipped with that reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import conninfo

INSTALL = "install Debian's pgbouncer (bash .ci/system-packages.sh, or apt-get install pgbouncer)"


def binary() -> str:
    """The pgbouncer binary, or fail/skip saying why (see the module docstring)."""
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
    if found:
        return found
    if os.environ.get("PGQUEUE_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail(f"pgbouncer is not installed and CI requires it: {INSTALL}", pytrace=False)
    pytest.skip(f"pgbouncer is not installed: {INSTALL}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgBouncer:
    def __init__(self, server_dsn: str, directory: Path, mode: str) -> None:
        self.mode = mode
        self.directory = directory
        self.port = _free_port()
        self.server = conninfo.conninfo_to_dict(server_dsn)
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        """What clients use: the server's user, password and database, through the pooler."""
        password = self.server.get("password")
        secret = f":{quote(password, safe='')}" if password else ""
        user, dbname = self.server.get("user", "postgres"), self.server["dbname"]
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> "PgBouncer":
        self.directory.mkdir(parents=True, exist_ok=True)
        user = self.server.get("user", "postgres")
        password = self.server.get("password")
        (self.directory / "userlist.txt").write_text(f'"{user}" "{password or ""}"\n')
        dbname = self.server["dbname"]
        host, port = self.server.get("host", "127.0.0.1"), self.server.get("port", 5432)
        (self.directory / "pgbouncer.ini").write_text(f"""[databases]
{dbname} = host={host} port={port} dbname={dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = {self.mode}
auth_type = {'scram-sha-256' if password else 'trust'}
auth_file = {self.directory / 'userlist.txt'}
max_client_conn = 500
default_pool_size = 40
logfile = {self.directory / 'pgbouncer.log'}
pidfile = {self.directory / 'pgbouncer.pid'}
""")
        command = [binary()]
        if os.geteuid() == 0:
            account = _account()
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
            for folder in self.directory.parents:  # the account must reach its files
                if not folder.stat().st_mode & 0o001:
                    folder.chmod(folder.stat().st_mode | 0o001)
            command += ["-u", account.pw_name]
        command.append(str(self.directory / "pgbouncer.ini"))
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return self
            except psycopg.OperationalError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"pgbouncer did not start ({exc}):\n{self.log()}") from exc
                time.sleep(0.1)

    def log(self) -> str:
        try:
            return (self.directory / "pgbouncer.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise AssertionError("pgbouncer cannot run as root and there is no postgres or nobody account")
