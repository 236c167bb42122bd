"""Helpers of the Django tests: ``manage.py`` subprocesses and waiting on conditions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import wait_for  # noqa: E402

__all__ = ["DjangoWorker", "django_env", "manage", "wait_for"]


def django_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that loads the test project's settings."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("PGQUEUE_") or k == "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="settings",
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]),
        PGAPPNAME="pgqueue-django-test",
    )
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
           cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    """``python -m django <args>`` with the test project's settings, to completion."""
    return subprocess.run([sys.executable, "-m", "django", *args], env=env or django_env(),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


class DjangoWorker:
    """A real ``manage.py pgqueue work`` process of the test project."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = django_env(**(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "django", "pgqueue", "work", *args],
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=HERE)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def runner_id(self, dsn: str, schema: str = "pgqueue", timeout: float = 30.0) -> int:
        def find() -> int | None:
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n{self.log()}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(f'SELECT id FROM "{schema}".runners WHERE pid = %s AND '
                                   "state = 'running' ORDER BY id DESC LIMIT 1",
                                   (self.pid,)).fetchone()
            return row[0] if row else None
        return wait_for(find, timeout=timeout, message=f"worker {self.pid} to register")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.pid} did not stop:\n{self.log()}") from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self._log.close()

    def __repr__(self) -> str:
        return f"<DjangoWorker pid {self.pid}>"


def rows(conn: psycopg.Connection, query: str, params: Any = ()) -> list[tuple]:
    return conn.execute(query, params).fetchall()
