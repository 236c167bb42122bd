"""examples/fastapi_app end to end, as a user runs it: `pgqueue migrate`, a real `pgqueue work`
process, a real uvicorn on 127.0.0.1, HTTP requests (request -> commit -> worker -> result),
a request that fails after enqueueing; then the example's own tests (ASGI transport,
pgqueue.testing)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_for
from example_support import example_db, example_url  # noqa: F401 - example_db: a fixture

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fastapi_app"

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


def _env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("PGQUEUE_") or k == "DATABASE_URL")}
    env.update(DATABASE_URL=example_url(dsn),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLE), env.get("PYTHONPATH", "")]))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, log: Path) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"{proc.args} did not stop on SIGTERM:\n{log.read_text(errors='replace')}")


@pytest.mark.slow
def test_fastapi_example_end_to_end(example_db, tmp_path) -> None:  # noqa: F811
    env = _env(example_db())
    migrate = subprocess.run([sys.executable, "-m", "pgqueue.cli", "migrate"], cwd=EXAMPLE, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    port = _free_port()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    with open(web_log, "wb") as web_out, open(worker_log, "wb") as worker_out:
        web = subprocess.Popen([sys.executable, "-m", "uvicorn", "shopapi.main:api", "--host", "127.0.0.1",
                                "--port", str(port)], cwd=EXAMPLE, env=env, stdout=web_out,
                               stderr=subprocess.STDOUT)
        worker = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "--app", "shopapi.tasks:queue",
                                   "work"], cwd=EXAMPLE, env=env, stdout=worker_out,
                                  stderr=subprocess.STDOUT)
        codes: dict[str, int | None] = {}
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                assert web.poll() is None, web_log.read_text(errors="replace")
                try:
                    return httpx.get(f"{base}/orders/0", timeout=2).status_code == 404
                except httpx.TransportError:
                    return False

            wait_for(up, timeout=30, interval=0.1, message="uvicorn to serve")
            with httpx.Client(base_url=base, timeout=30) as client:
                response = client.post("/orders", json={"item": "tea", "quantity": 3})
                assert response.status_code == 201, response.text
                created = response.json()
                job = client.get(f"/jobs/{created['job']}", params={"wait": 20}).json()
                assert job == {"id": created["job"], "status": "succeeded",
                               "result": f"order {created['order']} confirmed: 3 x tea"}, job
                order = client.get(f"/orders/{created['order']}").json()
                assert order["status"] == "confirmed", order
                failed = client.post("/orders", json={"item": "cake", "fail": True})
                assert failed.status_code == 402, failed.text
                assert client.get(f"/jobs/{created['job'] + 1}").status_code == 404, \
                    "the failed request's job vanished with its transaction"
                assert client.get(f"/orders/{created['order'] + 1}").status_code == 404
        finally:
            codes["web"] = _stop(web, web_log)
            codes["worker"] = _stop(worker, worker_log)
    web_output, worker_output = web_log.read_text(errors="replace"), worker_log.read_text(errors="replace")
    # uvicorn shuts down cleanly, then re-raises the SIGTERM it caught (exit status -15).
    assert codes["web"] in (0, -signal.SIGTERM) and "Application shutdown complete" in web_output, \
        web_output
    assert codes["worker"] == 0 and "1 succeeded" in worker_output, worker_output


@pytest.mark.slow
def test_fastapi_example_own_tests_pass(example_db) -> None:  # noqa: F811
    env = _env(example_db())
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_shopapi.py"], cwd=EXAMPLE, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
