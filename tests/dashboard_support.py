"""Helpers of the dashboard and metrics tests: calling a WSGI app in-process, rows written
straight into a schema (states that would take workers seconds to reach), free ports, and a
real HTTP server in a thread."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg
import pytest


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def call(app: Callable[..., Any], path: str, *, method: str = "GET", form: Any = None,
         headers: dict[str, str] | None = None, script_name: str = "", host: str = "127.0.0.1:8089",
         remote_user: str | None = None) -> Result:
    """One request to a WSGI app, in-process. POSTs come from the dashboard's own origin unless
    ``headers`` say otherwise."""
    path, _, query = path.partition("?")
    body = urllib.parse.urlencode(form, doseq=True).encode() if form is not None else b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": script_name, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": host.split(":")[0], "SERVER_PORT": host.split(":")[1] if ":" in host else "80",
        "HTTP_HOST": host, "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded" if form is not None else "",
    }
    if method == "POST" and headers is None:
        headers = {"Sec-Fetch-Site": "same-origin"}
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    if remote_user:
        environ["REMOTE_USER"] = remote_user
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"] = int(status.split()[0])
        captured["headers"] = {k.lower(): v for k, v in response_headers}

    chunks = app(environ, start_response)
    data = b"".join(chunks)
    return Result(captured["status"], captured["headers"], data)


@pytest.fixture
def dashboards(app: Any) -> Iterator[Callable[..., Any]]:
    """``dashboards(**options)``: a dashboard of the test's App, closed at the end (import it
    into a test module to use it)."""
    from pgqueue.dashboard import make_app

    made = []

    def make(**options: Any) -> Any:
        dashboard = make_app(app, **options)
        made.append(dashboard)
        return dashboard

    yield make
    for dashboard in made:
        dashboard.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(app: Callable[..., Any]) -> Iterator[str]:
    """A WSGI app on a real HTTP server at 127.0.0.1 (any free port), in a thread: its base URL."""
    from pgqueue.dashboard.server import make_server

    server = make_server(app, "127.0.0.1", 0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 10.0) -> Result:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Result(response.status, {k.lower(): v for k, v in response.headers.items()},
                          response.read())
    except urllib.error.HTTPError as exc:
        return Result(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


# ------------------------------------------------------------------- rows by hand

def add_runner(conn: psycopg.Connection, schema: str, *, state: str = "running", heartbeat_ago: float = 0.0,
               started_ago: float = 60.0, stopped_ago: float | None = None, reason: str | None = None,
               lost_reason: str | None = None, host: str = "host-a", pid: int = 4242,
               concurrency: int = 4) -> int:
    return conn.execute(
        f'INSERT INTO "{schema}".runners (host, pid, concurrency, version, state, started_at, heartbeat_at, '
        "stopped_at, reason, lost_reason) VALUES (%s, %s, %s, 'test', %s, now() - make_interval(secs => %s), "
        "now() - make_interval(secs => %s), now() - make_interval(secs => %s), %s, %s) RETURNING id",
        (host, pid, concurrency, state, started_ago, heartbeat_ago, stopped_ago, reason, lost_reason),
    ).fetchone()[0]


def add_job(conn: psycopg.Connection, schema: str, *, task: str = "add", queue: str = "default",
            status: str = "queued", args: Any = (1, 2), kwargs: Any = None, priority: int = 0,
            runner_id: int | None = None, attempts: int | None = None, error: Any = None,
            result: Any = None, run_in: float = 0.0, key: str | None = None, ago: float = 5.0) -> int:
    """A job in the given status with a plausible history (enqueued, claimed, outcome)."""
    attempts = attempts if attempts is not None else (0 if status == "queued" else 1)
    finished = status in ("succeeded", "failed", "cancelled")
    job_id = conn.execute(
        f'INSERT INTO "{schema}".jobs (task, queue, status, args, kwargs, priority, run_at, due, attempts, '
        "failures, runner_id, error, result, key, enqueued_at, started_at, finished_at) VALUES "
        "(%s, %s, %s, %s::jsonb, %s::jsonb, %s, now() + make_interval(secs => %s), %s, %s, %s, %s, "
        "%s::jsonb, %s::jsonb, %s, now() - make_interval(secs => %s), "
        "CASE WHEN %s THEN now() - make_interval(secs => %s / 2) END, CASE WHEN %s THEN now() END) "
        "RETURNING id",
        (task, queue, status, json.dumps(list(args)), json.dumps(kwargs or {}), priority, run_in,
         run_in <= 0, attempts, 1 if status == "failed" else 0,
         runner_id if status == "running" else None,
         json.dumps(error) if error is not None else None,
         json.dumps(result) if result is not None else None, key, ago,
         status != "queued", ago, finished),
    ).fetchone()[0]
    events = [("enqueued", None, "queued", 0, None, "enqueued", None)]
    if status != "queued":
        events.append(("claimed", "queued", "running", attempts, runner_id, "claimed", None))
    if finished:
        events.append((status, "running", status, attempts, runner_id, status,
                       json.dumps(error) if error is not None else None))
    for kind, before, after, attempt, runner, reason, err in events:
        conn.execute(
            f'INSERT INTO "{schema}".job_events (job_id, at, from_status, to_status, attempt, runner_id, '
            "kind, reason, error) VALUES (%s, now() - make_interval(secs => %s), %s, %s, %s, %s, %s, %s, "
            "%s::jsonb)",
            (job_id, ago if kind == "enqueued" else ago / 2 if kind == "claimed" else 0.0, before, after,
             attempt, runner, kind, reason, err))
    return job_id


ERROR = {"type": "ValueError", "message": "bad input 42",
         "traceback": 'Traceback (most recent call last):\n  File "tasks.py", line 3, in fail\n'
                      '    raise ValueError("bad input 42")\nValueError: bad input 42\n'}


def seed_world(conn: psycopg.Connection, schema: str) -> dict[str, Any]:
    """Runners alive, dead and stopped, and jobs in every state (by hand: no worker needed)."""
    alive = add_runner(conn, schema, host="host-b", pid=2002)
    dead = add_runner(conn, schema, state="dead", heartbeat_ago=30, stopped_ago=20, host="host-a", pid=1001,
                      reason="process gone (no session of it is left; last heartbeat 0.6 s ago)",
                      lost_reason="process gone")
    stopped = add_runner(conn, schema, state="stopped", stopped_ago=100, started_ago=500, host="host-c",
                         pid=3003, reason="stopped")
    jobs = {
        "queued": add_job(conn, schema, status="queued", args=[1, 2]),
        "urgent": add_job(conn, schema, status="queued", args=[3, 4], priority=10),
        "scheduled": add_job(conn, schema, status="queued", run_in=3600, queue="mail", task="send"),
        "running": add_job(conn, schema, status="running", runner_id=alive, task="sleep", args=[30]),
        "orphan": add_job(conn, schema, status="running", runner_id=dead, task="sleep", args=[60]),
        "succeeded": add_job(conn, schema, status="succeeded", runner_id=alive, result=3),
        "failed": add_job(conn, schema, status="failed", runner_id=alive, task="fail", args=["x"], error=ERROR),
        "cancelled": add_job(conn, schema, status="cancelled", runner_id=None, task="sleep", args=[5]),
    }
    conn.execute(f'INSERT INTO "{schema}".throughput (queue, minute, runner_id, succeeded, failed, retried) '
                 "VALUES ('default', date_trunc('minute', now()), %s, 7, 2, 1), "
                 "('default', date_trunc('minute', now()) - interval '5 minutes', %s, 12, 0, 3)", (alive, alive))
    return {"alive": alive, "dead": dead, "stopped": stopped, "jobs": jobs, "schema": schema}


def seed_controls(app: Any, conn: psycopg.Connection) -> dict[str, Any]:
    """Queues under control and schedules in each state, on top of :func:`seed_world`:

    * queue ``mail`` paused by ``ops`` ("provider down"), ``payments`` limited (5 running, 100
      starts a minute), and two jobs of ``default`` blocked behind a lock;
    * schedule ``minutely`` (overlap skip, catch-up skip): five ticks missed, one fired (its job
      is queued), the next one skipped for overlap; ``nightly`` (Europe/Berlin) that never ran;
      ``retired``, declared only by a runner that stopped: orphaned.
    """
    import datetime as dt

    from pgqueue import schedules as schedules_module
    from pgqueue.worker.connections import BorrowedConnection
    from pgqueue.worker.firing import Firing
    from sqlrunner import register

    world = seed_world(conn, app.settings.schema)
    schema = app.settings.schema
    app.queues.pause("mail", reason="provider down", by="ops")
    app.queues.limit("payments", concurrency=5, rate=100, per=60, by="ops")
    locked = app.task(name="locked", lock="account:1")(lambda: None)
    for _ in range(3):
        locked.enqueue()
    noop = app.task(name="noop")(lambda *args, **kwargs: None)
    app.schedule(noop, id="minutely", cron="* * * * *", overlap="skip", catch_up="skip")
    app.schedule(noop, id="nightly", cron="30 3 * * *", timezone="Europe/Berlin")
    app.schedule(noop, id="retired", cron="@daily")
    gone = register(app, conn)
    schedules_module.sync(app, BorrowedConnection(conn), gone)
    conn.execute(f"UPDATE \"{schema}\".runners SET state = 'stopped', stopped_at = now() WHERE id = %s", (gone,))
    del app.schedules.declared["retired"]  # the code of the runner that runs now no longer has it
    live = register(app, conn)
    schedules_module.sync(app, BorrowedConnection(conn), live)
    # Fire with the clock pinned: tick T on time after five missed ones, then T + 1 min while
    # T's job is still queued (overlap skip).
    tick = conn.execute("SELECT date_trunc('minute', now()) - interval '10 minutes'").fetchone()[0]
    conn.execute(f'UPDATE "{schema}".schedules SET next_run_at = %s WHERE id = %s',
                 (tick - dt.timedelta(minutes=5), "minutely"))
    firing = Firing(queries=app.queries)
    firing.run_once(BorrowedConnection(conn), live, now=tick + dt.timedelta(seconds=1))
    firing.run_once(BorrowedConnection(conn), live, now=tick + dt.timedelta(minutes=1, seconds=1))
    fired = conn.execute(f'SELECT job_id FROM "{schema}".schedule_events WHERE schedule_id = %s '
                         "AND kind = 'fired'", ("minutely",)).fetchall()
    assert len(fired) == 1, f"the seed expected one fired tick of 'minutely', not {fired}"
    return {**world, "live_runner": live, "gone_runner": gone, "fired_job": fired[0][0], "tick": tick}
