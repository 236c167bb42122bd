"""examples/flask_app end to end, as a user runs it: `flask pgqueue migrate`, `flask init-db`,
a real `flask pgqueue work` process, HTTP requests (request -> commit -> worker -> result), a
request that fails after enqueueing; then the example's own tests (pgqueue.testing, eager)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from example_support import example_db, example_url  # noqa: F401 - example_db: a fixture
from helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flask_app"


def _env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("PGQUEUE_", "FLASK_")) or k == "DATABASE_URL")}
    env.update(DATABASE_URL=example_url(dsn), PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLE),
                                                                   env.get("PYTHONPATH", "")]))
    return env


def flask_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "shop:create_app", *args],
                          cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_flask_example_end_to_end(example_db, tmp_path, monkeypatch) -> None:
    env = _env(example_db())
    for args in (["pgqueue", "migrate"], ["init-db"]):
        done = flask_cli(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "shop:create_app", "pgqueue",
                               "work", "--concurrency", "4"], cwd=EXAMPLE, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"])
        monkeypatch.syspath_prepend(str(EXAMPLE))
        from shop import create_app
        from shop.extensions import pgq

        app = create_app({"TESTING": False, "PROPAGATE_EXCEPTIONS": False})
        client = app.test_client()
        response = client.post("/orders", json={"item": "tea", "quantity": 3})
        assert response.status_code == 201, response.get_data(as_text=True)
        created = response.get_json()
        with app.app_context():
            result = pgq.job(created["job"]).result(timeout=30)
        assert result == f"order {created['order']} confirmed: 3 x tea"
        order = wait_for(lambda: client.get(f"/orders/{created['order']}").get_json(),
                         message="the order")
        assert order["status"] == "confirmed", "the worker's task committed through db.session"
        assert client.get(f"/jobs/{created['job']}").get_json()["status"] == "succeeded"

        assert client.post("/orders", json={"item": "tea", "fail": True}).status_code == 500
        with app.app_context():
            from shop.extensions import db
            from sqlalchemy import text

            jobs = db.session.execute(text("SELECT count(*) FROM pgqueue.jobs")).scalar_one()
            orders = db.session.execute(text("SELECT count(*) FROM \"order\"")).scalar_one()
            db.session.remove()
            db.engine.dispose()
        assert (jobs, orders) == (1, 1), "the failed request left neither its order nor its job"
        pgq.get_app(app).close()

        status = flask_cli(env, "pgqueue", "status")
        assert status.returncode == 0 and "succeeded" in status.stdout, status.stdout + status.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = None
        log.close()
        for module in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
            del sys.modules[module]
    output = (tmp_path / "worker.log").read_text(errors="replace")
    assert code == 0, f"the worker did not stop cleanly on SIGTERM ({code}):\n{output}"
    assert "stopped: 1 claimed" in output, output


@pytest.mark.slow
def test_flask_example_own_tests_pass(example_db) -> None:
    env = _env(example_db())
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_shop.py"], cwd=EXAMPLE, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout
