"""The embedded PostgreSQL server: what pgqueue uses when no DSN is configured anywhere.

Data lives in ``<project root>/.pgqueue/`` and is kept between runs. The first
process that needs the server initialises the directory (``initdb``) and starts the
server (``pg_ctl start``); every later process (the app, workers, the CLI) finds it
running and connects. It keeps running until ``pgqueue embedded stop``.

Invariants:

* One file lock (``.pgqueue/lock``) serialises init, start and stop between
  processes, so two processes starting at once never run ``initdb`` twice.
* The server listens on 127.0.0.1 only, on a port chosen free at first start and
  written into its ``postgresql.conf``; no Unix socket (its path could exceed the
  104-byte limit in deep project folders). It is private: password authentication
  (scram-sha-256) with a password generated at ``initdb`` and kept in
  ``.pgqueue/password`` (mode 0600), so another local account cannot connect. A data
  folder made by an older pgqueue with trust authentication is given a password at its
  next start.
* Binaries come from the ``pgserver`` package (PostgreSQL inside a wheel: the
  ``embedded`` extra), else from the machine (``pg_ctl`` on PATH, ``pg_config``,
  Debian's ``/usr/lib/postgresql/*/bin``). A data directory is only ever opened by
  binaries of the major version that created it.
* PostgreSQL refuses to run as root. Under root the server runs as the ``postgres``
  account when there is one, else ``nobody``; the data folder is given to that
  account, and a folder above it that the account cannot search is given the search
  (x) bit for others, with a warning naming the folder.

Not handled: several machines sharing one project folder over a network drive.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from . import errors

logger = logging.getLogger(__name__)

_CONF_MARK = "# --- pgqueue embedded server ---"
_START_TIMEOUT = 60


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    major: int
    origin: str

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _major_version(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not (postgres.exists() and (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()):
        return None
    try:
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def find_binaries() -> list[Binaries]:
    """Every usable PostgreSQL installation, best first (pgserver, then the machine's)."""
    candidates: list[tuple[Path, str]] = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append((Path(spec.origin).parent / "pginstall" / "bin", "pgserver package"))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append((Path(on_path).resolve().parent, "pg_ctl on PATH"))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
            candidates.append((Path(out), "pg_config --bindir"))
    for path in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        candidates.append((path, "system PostgreSQL"))
    found: list[Binaries] = []
    seen: set[Path] = set()
    for bindir, origin in candidates:
        bindir = bindir.resolve()
        if bindir in seen:
            continue
        seen.add(bindir)
        major = _major_version(bindir)
        if major is not None:
            found.append(Binaries(bindir, major, origin))
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedServer:
    """A PostgreSQL server whose data lives in ``directory`` (normally ``./.pgqueue``)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).resolve()
        self.data = self.directory / "data"
        self.logfile = self.directory / "server.log"
        self.password_file = self.directory / "password"
        self._lockfile = self.directory / "lock"

    # ------------------------------------------------------------------ public

    def dsn(self, port: int) -> str:
        password = self._password()
        secret = f":{quote(password, safe='')}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{port}/postgres"

    def _password(self) -> str | None:
        try:
            return self.password_file.read_text().strip() or None
        except OSError:
            return None

    def ensure_running(self) -> str:
        """Start the server unless it runs already; return its DSN."""
        port = self._running_port()
        if port is not None:
            return self.dsn(port)
        with self._locked():
            port = self._running_port()
            if port is not None:
                return self.dsn(port)
            binaries = self._binaries()
            if not (self.data / "PG_VERSION").exists():
                self._initdb(binaries)
            port = self._start(binaries)
            if self._trusts_anyone():
                self._make_private(port)
            return self.dsn(port)

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        if not (self.data / "PG_VERSION").exists():
            return False
        with self._locked():
            if self._running_port() is None:
                return False
            binaries = self._binaries()
            self._run(binaries, "pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
                      "-t", str(_START_TIMEOUT), "stop")
            return True

    def status(self) -> dict[str, object]:
        port = self._running_port()
        return {
            "directory": str(self.directory),
            "initialised": (self.data / "PG_VERSION").exists(),
            "running": port is not None,
            "port": port,
            "dsn": self.dsn(port) if port is not None else None,
        }

    # --------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self._lockfile, "a+")
        except OSError as exc:
            raise errors.EmbeddedServerError(
                f"cannot create the embedded server's folder {self.directory}: {exc}; "
                "set PGQUEUE_EMBEDDED_DIR to a writable folder or PGQUEUE_DSN to a server"
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _running_port(self) -> int | None:
        """The port of a live server on this data folder, from postmaster.pid."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another account
        if len(lines) >= 8 and lines[7].strip() not in ("ready", ""):
            # "starting" or "stopping": wait briefly for a final state.
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline:
                time.sleep(0.05)
                try:
                    state = (self.data / "postmaster.pid").read_text().splitlines()[7].strip()
                except (OSError, IndexError):
                    return None
                if state == "ready":
                    break
                if state == "stopping":
                    return None
        return port if _port_answers(port) else None

    def _binaries(self) -> Binaries:
        found = find_binaries()
        if not found:
            raise errors.EmbeddedServerError(
                "no DSN is configured and no PostgreSQL binaries were found for the embedded "
                "server: install them with pip install 'pgqueue[embedded]' (or the machine's "
                "PostgreSQL server package), or set PGQUEUE_DSN to an existing server"
            )
        version_file = self.data / "PG_VERSION"
        if version_file.exists():
            wanted = int(version_file.read_text().strip().split(".")[0])
            for binaries in found:
                if binaries.major == wanted:
                    return binaries
            have = ", ".join(f"{b.major} ({b.origin})" for b in found)
            raise errors.EmbeddedServerError(
                f"{self.data} was created by PostgreSQL {wanted}, but only PostgreSQL {have} is "
                f"installed: install PostgreSQL {wanted}, or move {self.directory} aside to start afresh"
            )
        return found[0]

    def _run_as(self) -> pwd.struct_passwd | None:
        """The account the server runs as: None for the current user, else a non-root one."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        raise errors.EmbeddedServerError(
            "PostgreSQL cannot run as root and there is neither a 'postgres' nor a 'nobody' "
            "account to run it as: run pgqueue as another user, or set PGQUEUE_DSN"
        )

    def _run(self, binaries: Binaries, tool: str, *args: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        account = self._run_as()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        kwargs: dict[str, object] = {}
        if account is not None:
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.directory)
        try:
            result = subprocess.run([binaries.tool(tool), *args], capture_output=True, text=True,
                                    env=env, timeout=_START_TIMEOUT + 30, cwd=self.directory,
                                    **kwargs)  # type: ignore[arg-type]
        except (OSError, subprocess.SubprocessError) as exc:
            raise errors.EmbeddedServerError(f"{tool} failed to run: {exc}") from exc
        if check and result.returncode != 0:
            detail = " ".join((result.stderr or result.stdout).split())[-400:]
            raise errors.EmbeddedServerError(
                f"{tool} failed (exit {result.returncode}) for {self.data}: {detail}"
                + (f"; see {self.logfile}" if tool == "pg_ctl" else "")
            )
        return result

    def _prepare_ownership(self, binaries: Binaries) -> None:
        account = self._run_as()
        if account is None:
            return
        for path in (self.data, self.logfile):
            os.chown(path, account.pw_uid, account.pw_gid)
        # The server's account must be able to reach its data folder and the binaries.
        for target in (self.data, binaries.bindir):
            for folder in target.parents:
                mode = folder.stat().st_mode
                if not mode & stat.S_IXOTH:
                    logger.warning("giving others search permission (o+x) on %s so that the embedded "
                                   "server, which cannot run as root and runs as %r, can reach %s "
                                   "(set PGQUEUE_DSN to a server of your own to avoid this)",
                                   folder, account.pw_name, target)
                    folder.chmod(mode | stat.S_IXOTH)

    def _initdb(self, binaries: Binaries) -> None:
        logger.info("initialising the embedded PostgreSQL %s server in %s (binaries: %s)",
                    binaries.major, self.data, binaries.origin)
        if self.data.exists() and any(self.data.iterdir()):
            raise errors.EmbeddedServerError(
                f"{self.data} exists but holds no PostgreSQL data (no PG_VERSION): move it aside "
                "and try again"
            )
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logfile.touch()
        self._prepare_ownership(binaries)
        password = self._new_password()
        # initdb reads the password from a file the server's account can read; it is
        # deleted at once (the lasting copy is .pgqueue/password, readable by us only).
        pwfile = self.data.parent / "initdb-password"
        pwfile.write_text(password + "\n")
        try:
            account = self._run_as()
            if account is not None:
                os.chown(pwfile, account.pw_uid, account.pw_gid)
            pwfile.chmod(0o600)
            self._run(binaries, "initdb", "-D", str(self.data), "-U", "postgres",
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C")
        finally:
            pwfile.unlink(missing_ok=True)
        self._write_port(self._choose_port())

    def _new_password(self) -> str:
        import secrets

        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        self.password_file.chmod(0o600)
        return password

    def _trusts_anyone(self) -> bool:
        """Whether pg_hba.conf lets anyone in without a password (data made by an older pgqueue)."""
        try:
            lines = (self.data / "pg_hba.conf").read_text().splitlines()
        except OSError:
            return False
        return any(line.split()[-1] == "trust" for line in lines
                   if line.strip() and not line.lstrip().startswith("#"))

    def _make_private(self, port: int) -> None:
        """Give a trust-authenticated server a password, then require it."""
        import psycopg

        logger.warning("the embedded server in %s accepted any local connection without a password "
                       "(created by an older pgqueue): setting a password (kept in %s)",
                       self.directory, self.password_file)
        password = self._new_password()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(psycopg.sql.SQL("ALTER ROLE postgres PASSWORD {}").format(psycopg.sql.Literal(password)))
            hba = self.data / "pg_hba.conf"
            text = "\n".join(
                line if line.lstrip().startswith("#") or not line.strip() or line.split()[-1] != "trust"
                else line.rsplit("trust", 1)[0] + "scram-sha-256"
                for line in hba.read_text().splitlines()) + "\n"
            owner = hba.stat()
            hba.write_text(text)
            os.chown(hba, owner.st_uid, owner.st_gid)
            conn.execute("SELECT pg_catalog.pg_reload_conf()")

    def _choose_port(self) -> int:
        return _free_port()

    def _write_port(self, port: int) -> None:
        conf = self.data / "postgresql.conf"
        text = conf.read_text()
        if _CONF_MARK in text:
            text = text[: text.index(_CONF_MARK)]
        text += (
            f"\n{_CONF_MARK}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
        )
        conf.write_text(text)

    def _start(self, binaries: Binaries) -> int:
        self._prepare_ownership(binaries)
        for attempt in range(3):
            port = self._configured_port()
            if _port_answers(port):
                # Someone else took our port while the server was down: move.
                port = self._choose_port()
                self._write_port(port)
            logger.info("starting the embedded PostgreSQL server in %s on 127.0.0.1:%s",
                        self.data, port)
            result = self._run(binaries, "pg_ctl", "-D", str(self.data), "-l", str(self.logfile),
                               "-w", "-t", str(_START_TIMEOUT), "start", check=False)
            live = self._running_port()
            if result.returncode == 0 and live is not None:
                return live
            log_tail = self._log_tail()
            if "could not bind" in log_tail or "in use" in log_tail:
                self._write_port(self._choose_port())
                continue
            raise errors.EmbeddedServerError(
                f"the embedded PostgreSQL server in {self.data} did not start: "
                f"{' '.join((result.stderr or result.stdout).split())[-300:]} {log_tail[-300:]}"
                f" (full log: {self.logfile})"
            )
        raise errors.EmbeddedServerError(
            f"the embedded PostgreSQL server in {self.data} found no free port after 3 tries"
        )

    def _configured_port(self) -> int:
        text = (self.data / "postgresql.conf").read_text()
        matches = re.findall(r"^port = (\d+)$", text, flags=re.MULTILINE)
        if not matches:
            port = self._choose_port()
            self._write_port(port)
            return port
        return int(matches[-1])

    def _log_tail(self) -> str:
        try:
            return " ".join(self.logfile.read_text(errors="replace").split()[-80:])
        except OSError:
            return ""


def kill_server(directory: Path | str) -> None:
    """Stop an embedded server hard (tests' last resort when pg_ctl stop failed)."""
    data = Path(directory).resolve() / "data"
    with contextlib.suppress(OSError, ValueError, IndexError, ProcessLookupError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
