"""examples/django_app end to end, as a user runs it: migrate, a worker, runserver, HTTP
requests (request -> commit -> worker -> result), and a request that fails after enqueueing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from djhelpers import ROOT, wait_for

EXAMPLE = ROOT / "examples" / "django_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def example_env(database_dsn):
    name = f"pgqdj_example_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("PGQUEUE_", "PGQ_DJANGO_", "DJANGO_")) or k == "DATABASE_URL")}
    env.update(DATABASE_URL=conninfo.make_conninfo(database_dsn, dbname=name),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    yield env
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def manage(env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=timeout)


def request(url: str, body: dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_example_request_to_result(example_env, tmp_path: Path) -> None:
    for command in (("check",), ("makemigrations", "--check", "--dry-run"), ("migrate",)):
        done = manage(example_env, *command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    port = free_port()
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("server", "worker")}
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload",
                               f"127.0.0.1:{port}"], cwd=EXAMPLE, env=example_env,
                              stdout=logs["server"], stderr=subprocess.STDOUT)
    worker = None
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                return False

        wait_for(up, timeout=30, message="runserver")
        # A request that fails after enqueueing leaves nothing (ATOMIC_REQUESTS).
        status, _ = request(f"{base}/orders/", {"customer": "Bob", "items": [], "fail": True})
        assert status == 500
        status, created = request(f"{base}/orders/", {
            "customer": "Ada", "items": [{"name": "tea", "price": 3.5}, {"name": "cake", "price": 4}]})
        assert status == 201, created
        with psycopg.connect(example_env["DATABASE_URL"], autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (2,)
            assert conn.execute("SELECT count(*) FROM orders_order").fetchone() == (1,)
        worker = subprocess.Popen([sys.executable, "manage.py", "pgqueue", "work"], cwd=EXAMPLE,
                                  env=example_env, stdout=logs["worker"], stderr=subprocess.STDOUT)

        def done() -> dict | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            status, shown = request(f"{base}/orders/{created['order']}/")
            assert status == 200, shown
            return shown if shown["job_status"] == "succeeded" and \
                shown["result_status"] == "SUCCESSFUL" else None

        shown = wait_for(done, timeout=60, interval=0.2, message="both jobs of the order")
        assert shown["confirmation_sent"] is True and shown["total"] == "7.50"
        assert shown["result_value"] == "7.5" and shown["attempts"] == 1
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for log in logs.values():
            log.close()
