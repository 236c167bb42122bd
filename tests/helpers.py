"""Test helpers: waiting on conditions with deadlines, and real worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import psycopg

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message} (last value: {value!r})")
        time.sleep(interval)


class Worker:
    """A real `pgqueue work` process running tests/workerapp.py."""

    def __init__(self, dsn: str, schema: str, log_path: Path, *args: str,
                 env: dict[str, str] | None = None, app: str = "workerapp:app",
                 prefix: list[str] | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items()
                    if not (k.startswith("PGQUEUE_") or k == "DATABASE_URL")}
        full_env.update(
            PGQUEUE_DSN=dsn,
            PGQUEUE_SCHEMA=schema,
            PGAPPNAME=f"pgqueue-test-{schema}",
            PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), full_env.get("PYTHONPATH", "")]),
            PGQUEUE_LOG_LEVEL="DEBUG",
        )
        full_env.update(env or {})
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "pgqueue.cli", "--app", app, "work", *args],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def runner_id(self, timeout: float = 20.0) -> int:
        """The id of this process's current runner row, once registered."""
        def find() -> int | None:
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n{self.log()}"
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                row = conn.execute(
                    f'SELECT id FROM "{self.schema}".runners WHERE pid = %s AND state = %s '
                    "ORDER BY id DESC LIMIT 1", (self.pid, "running")).fetchone()
            return row[0] if row else None
        return wait_for(find, timeout=timeout, message=f"worker {self.pid} to register")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.pid} did not exit within {timeout} s:\n{self.log()}") from None

    def stop(self) -> None:
        # A --processes supervisor's children run in sessions of their own: kill them too, or
        # they would outlive the test.
        children = _children(self.proc.pid) if self.proc.poll() is None else []
        for pid in [self.proc.pid, *children]:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def job_rows(conn: psycopg.Connection, schema: str, where: str = "TRUE", params: Any = ()) -> list[dict]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f'SELECT * FROM "{schema}".jobs WHERE {where} ORDER BY id', params).fetchall()


def events(conn: psycopg.Connection, schema: str, job_id: int) -> list[tuple]:
    return conn.execute(
        f'SELECT from_status, to_status, attempt, runner_id, reason FROM "{schema}".job_events '
        "WHERE job_id = %s ORDER BY id", (job_id,)).fetchall()
