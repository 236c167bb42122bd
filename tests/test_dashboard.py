"""The dashboard against a real database, in-process (its WSGI app called directly) and over
HTTP: what each page shows, timeouts, the shared cache, actions and their guards, access
control, mounting under Flask, Django and ASGI at a prefix, and the ``pgqueue dashboard``
command. (Real browsers: test_dashboard_browser.py; query plans: test_dashboard_plans.py.)"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from dashboard_support import add_job, call, dashboards, fetch, free_port, seed_world  # noqa: F401 (dashboards: a fixture)
from helpers import wait_for
from pgqueue.dashboard import views

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(app, admin):
    return seed_world(admin, app.settings.schema)


def rows_of(page: str, attribute: str) -> list[str]:
    return re.findall(rf'<tr [^>]*{attribute}="([^"]*)"', page)


# --------------------------------------------------------------------- pages

def test_overview_counts_queues_and_runners_and_flags_jobs_on_dead_runners(world, dashboards) -> None:
    page = call(dashboards(), "/")
    assert page.status == 200, page.text
    text = page.text
    assert rows_of(text, "data-queue") == ["default", "mail"]
    default_row = text.split('data-queue="default"')[1].split("</tr>")[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", default_row, flags=re.S)
    numbers = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
    assert numbers[1] == "2" and numbers[4] == "2"  # ready, running
    assert numbers[5] == "19" and numbers[6] == "2"  # succeeded and failed in the last hour (rollup)
    assert 'data-runners-alive="1"' in text
    assert "1 dead" in text and "1 stopped" in text
    assert 'data-banner="orphans"' in text and f"runner {world['dead']}" in text
    assert "Throughput, last hour" in text and "c-succeeded" in text


def test_overview_shows_queue_controls_and_jobs_waiting_for_a_lock(app, dashboards) -> None:
    app.queues.pause("mail", reason="provider down", by="ops")
    app.queues.limit("payments", concurrency=5, rate=100, per=60)
    task = app.task(name="locked", lock="account:1")(lambda: None)
    task.enqueue(), task.enqueue(), task.enqueue()
    text = call(dashboards(), "/").text
    assert rows_of(text, "data-queue") == ["default", "mail", "payments"]  # controlled, even empty
    mail = text.split('data-queue="mail"')[1].split("</tr>")[0]
    assert ">paused<" in mail and "provider down" in mail and "by ops" in mail
    payments = text.split('data-queue="payments"')[1].split("</tr>")[0]
    assert "max 5" in payments and "100/" in payments
    default = text.split('data-queue="default"')[1].split("</tr>")[0]
    assert "2 waiting for a lock" in default


def test_every_response_carries_the_security_headers(world, dashboards) -> None:
    dashboard = dashboards()
    for path in ("/", "/jobs", "/static/pgqueue.js", "/nowhere", "/healthz"):
        response = call(dashboard, path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    assert call(dashboard, "/jobs").headers["cache-control"] == "no-store"
    assert "max-age" in call(dashboard, "/static/pgqueue.css").headers["cache-control"]
    robots = call(dashboard, "/robots.txt")
    assert robots.status == 200 and "Disallow: /" in robots.text
    page = call(dashboard, "/")
    assert "<script>" not in page.text and " style=" not in page.text and "onclick" not in page.text


def test_jobs_page_lists_by_status_in_the_order_of_its_index(world, dashboards) -> None:
    dashboard, jobs = dashboards(), world["jobs"]
    everything = call(dashboard, "/jobs").text
    assert [int(i) for i in rows_of(everything, "data-job-id")] == sorted(jobs.values(), reverse=True)
    ready = call(dashboard, "/jobs?status=queued").text
    assert [int(i) for i in rows_of(ready, "data-job-id")] == [jobs["urgent"], jobs["queued"]]
    assert rows_of(call(dashboard, "/jobs?status=scheduled").text, "data-job-id") == [str(jobs["scheduled"])]
    running = call(dashboard, "/jobs?status=running").text
    assert sorted(int(i) for i in rows_of(running, "data-job-id")) == sorted([jobs["running"], jobs["orphan"]])
    failed = call(dashboard, "/jobs?status=failed").text
    assert rows_of(failed, "data-job-id") == [str(jobs["failed"])]
    assert "ValueError" in failed and "bad input 42" in failed
    by_task = call(dashboard, "/jobs?task=sleep").text
    assert sorted(int(i) for i in rows_of(by_task, "data-job-id")) == sorted(
        [jobs["running"], jobs["orphan"], jobs["cancelled"]])
    by_args = call(dashboard, "/jobs?args=%5B60%5D").text
    assert rows_of(by_args, "data-job-id") == [str(jobs["orphan"])]
    moved = call(dashboard, f"/jobs?id={jobs['failed']}")
    assert moved.status == 303 and moved.headers["location"] == f"/jobs/{jobs['failed']}"
    bad = call(dashboard, "/jobs?status=lost").text
    assert "unknown status" in bad


def test_job_lists_page_by_key_and_say_where_a_filtered_window_ended(app, admin, dashboards, monkeypatch) -> None:
    s = app.settings.schema
    ids = [add_job(admin, s, status="succeeded", task="even" if i % 2 == 0 else "odd", args=[i])
           for i in range(130)]
    dashboard = dashboards()
    seen, url, pages = [], "/jobs?status=succeeded", 0
    while url:
        page = call(dashboard, html.unescape(url)).text
        seen += [int(i) for i in rows_of(page, "data-job-id")]
        found = re.search(r'<a rel="next" href="([^"]+)"', page)
        url = found.group(1) if found else None
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(ids) and len(set(seen)) == 130
    # A filter no index serves looks at a bounded window, then offers the next one.
    monkeypatch.setattr(views, "SCAN_WINDOW", 60)
    first = call(dashboard, "/jobs?status=succeeded&task=even").text
    assert len(rows_of(first, "data-job-id")) == 30
    assert "Looked at 60 jobs" in first
    further = re.search(r'<a href="([^"]+)">Look at the next 60', first).group(1)
    second = call(dashboard, html.unescape(further)).text
    assert set(rows_of(second, "data-job-id")).isdisjoint(rows_of(first, "data-job-id"))
    assert len(rows_of(second, "data-job-id")) == 30


def test_job_page_shows_every_field_the_error_and_the_history_with_hosts(world, dashboards) -> None:
    dashboard = dashboards()
    page = call(dashboard, f"/jobs/{world['jobs']['failed']}")
    assert page.status == 200
    text = page.text
    assert "bad input 42" in text and "Traceback (most recent call last)" in text
    assert 'data-kind="enqueued"' in text and 'data-kind="claimed"' in text and 'data-kind="failed"' in text
    assert "host-b pid 2002" in text
    assert "journalctl _PID=2002" in text
    assert "o-failed" in text  # the attempt on the small timeline
    missing = call(dashboard, "/jobs/999999")
    assert missing.status == 404 and "there is no job 999999" in missing.text


def test_runner_pages_show_heartbeat_against_the_lease_and_what_the_reaper_said(world, dashboards) -> None:
    dashboard = dashboards()
    listing = call(dashboard, "/runners").text
    # Running ones first, then the newest.
    assert rows_of(listing, "data-runner-id") == [str(world["alive"]), str(world["stopped"]), str(world["dead"])]
    assert 'data-health="ok"' in listing and 'data-health="dead"' in listing
    assert "lease 10.0 s" in listing
    dead = call(dashboard, f"/runners/{world['dead']}").text
    assert 'data-field="reaper"' in dead and "process gone" in dead
    assert f'data-job-id="{world["jobs"]["orphan"]}"' in dead  # still holds a job
    alive = call(dashboard, f"/runners/{world['alive']}").text
    assert f'data-job-id="{world["jobs"]["succeeded"]}"' in alive  # what it ran
    assert call(dashboard, "/runners/999999").status == 404


def test_timeline_and_health_pages(world, dashboards) -> None:
    dashboard = dashboards()
    page = call(dashboard, "/timeline?window=5m").text
    assert f'data-runner-id="{world["dead"]}" data-state="dead"' in page
    assert f'data-job-id="{world["jobs"]["failed"]}"' in page and 'data-outcome="failed"' in page
    assert 'data-marker="dead"' in page
    assert call(dashboard, "/timeline?window=forever").status == 400
    health = call(dashboard, "/health").text
    assert 'data-table="jobs"' in health and 'data-table="job_events"' in health
    assert f'<tr data-runner-id="{world["dead"]}">' in health  # jobs on a dead runner
    assert "PostgreSQL" in health


def test_healthz_and_metrics(world, dashboards) -> None:
    dashboard = dashboards()
    health = call(dashboard, "/healthz")
    assert health.status == 200 and health.headers["content-type"] == "application/json"
    body = health.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["schema"] == world["schema"]
    metrics = call(dashboard, "/metrics")
    assert metrics.status == 200
    text = metrics.text
    assert 'pgqueue_queue_jobs{queue="default",state="queued"} 2.0' in text
    assert 'pgqueue_queue_jobs{queue="default",state="running"} 2.0' in text
    assert 'pgqueue_runners{state="alive"} 1.0' in text
    assert "pgqueue_jobs_on_dead_runners 1.0" in text
    assert 'pgqueue_table_dead_tuples{table="jobs"}' in text
    for line in text.splitlines():
        if line.startswith("pgqueue_") and "{" in line:
            labels = line.split("{", 1)[1].split("}", 1)[0]
            assert not re.search(r"\bid=|job_id|runner_id|args|error", labels), line


# --------------------------------------------------------------- robustness

def test_a_slow_panel_says_timed_out_and_the_page_still_renders(world, app, database_dsn, dashboards) -> None:
    dashboard = dashboards(statement_timeout=0.3, cache_seconds=0)
    with psycopg.connect(database_dsn) as locker:
        locker.execute(f'LOCK TABLE "{world["schema"]}".jobs IN ACCESS EXCLUSIVE MODE')
        page = call(dashboard, "/")
        jobs_page = call(dashboard, "/jobs")
        locker.rollback()
    assert page.status == 200 and 'data-problem="timeout"' in page.text
    assert "timed out" in page.text
    assert jobs_page.status == 200 and "The job list timed out" in jobs_page.text
    # Nothing that timed out was cached: the next request reads again.
    assert 'data-problem' not in call(dashboard, "/").text


def test_ten_tabs_on_the_overview_cost_one_query(world, dashboards) -> None:
    dashboard = dashboards(cache_seconds=30)
    barrier = threading.Barrier(10)
    statuses = []

    def tab() -> None:
        barrier.wait()
        statuses.append(call(dashboard, "/").status)

    threads = [threading.Thread(target=tab) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 10
    assert dashboard.reader.counts["dashboard_queues"] == 1
    assert dashboard.reader.counts["dashboard_throughput"] == 1


def test_an_unreachable_database_is_a_page_that_says_so(app, dashboards) -> None:
    from pgqueue.dashboard.reader import Reader

    dashboard = dashboards()
    dashboard.reader.close()
    dashboard.reader = Reader("postgresql://nobody@127.0.0.1:1/none", app.settings.schema, connect_timeout=1)
    page = call(dashboard, "/")
    assert page.status == 200 and "could not be read" in page.text and "no connection to" in page.text
    health = call(dashboard, "/healthz")
    assert health.status == 503 and health.json()["database"]["ok"] is False


# ------------------------------------------------------------------ actions

def events_of(admin, schema: str, job_id: int) -> list[tuple]:
    return admin.execute(f'SELECT kind, to_status, reason FROM "{schema}".job_events WHERE job_id = %s '
                         "ORDER BY id", (job_id,)).fetchall()


def test_read_only_dashboard_has_no_buttons_and_refuses_posts(world, dashboards) -> None:
    dashboard = dashboards()
    failed = world["jobs"]["failed"]
    assert "data-action" not in call(dashboard, "/jobs").text
    assert "data-action" not in call(dashboard, f"/jobs/{failed}").text
    refused = call(dashboard, "/actions/retry", method="POST", form={"ids": failed, "confirm": "yes"})
    assert refused.status == 403 and "actions are off" in refused.text
    assert call(dashboard, "/actions/retry").status == 405


def test_retry_cancel_and_delete_go_through_a_confirmation_and_leave_events(world, admin, dashboards) -> None:
    s, jobs = world["schema"], world["jobs"]
    dashboard = dashboards(actions=True)
    assert 'data-action="retry"' in call(dashboard, f"/jobs/{jobs['failed']}").text
    back = "/jobs?status=failed"
    confirm = call(dashboard, "/actions/retry", method="POST",
                   form={"ids": [jobs["failed"], jobs["cancelled"], jobs["succeeded"]], "back": back},
                   remote_user="alice")
    assert confirm.status == 200 and 'data-count="2"' in confirm.text
    assert "1 succeeded" in confirm.text and "left as they are" in confirm.text
    assert admin.execute(f'SELECT status FROM "{s}".jobs WHERE id = %s', (jobs["failed"],)).fetchone()[0] == "failed"
    done = call(dashboard, "/actions/retry", method="POST", remote_user="alice",
                form={"ids": [jobs["failed"], jobs["cancelled"], jobs["succeeded"]], "back": back,
                      "confirm": "yes"})
    assert done.status == 303 and done.headers["location"].startswith("/jobs?status=failed&done=retried")
    assert "2 of 3 chosen jobs retried" in call(dashboard, done.headers["location"]).text
    for job_id, before in ((jobs["failed"], "failed"), (jobs["cancelled"], "cancelled")):
        row = admin.execute(f'SELECT status, failures, finished_at FROM "{s}".jobs WHERE id = %s', (job_id,)).fetchone()
        assert row == ("queued", 0, None)
        kind, to_status, reason = events_of(admin, s, job_id)[-1]
        assert (kind, to_status) == ("retried", "queued")
        assert reason == "dashboard: retried by alice from 127.0.0.1"
    assert admin.execute(f'SELECT status FROM "{s}".jobs WHERE id = %s', (jobs["succeeded"],)).fetchone()[0] == "succeeded"

    cancelled = call(dashboard, "/actions/cancel", method="POST",
                     form={"ids": [jobs["queued"], jobs["running"]], "confirm": "yes"})
    assert cancelled.status == 303
    assert admin.execute(f'SELECT status FROM "{s}".jobs WHERE id = %s', (jobs["queued"],)).fetchone()[0] == "cancelled"
    running = admin.execute(f'SELECT status, cancel_requested FROM "{s}".jobs WHERE id = %s', (jobs["running"],)).fetchone()
    assert running == ("running", True)
    assert events_of(admin, s, jobs["running"])[-1][0] == "cancel_requested"

    deleted = call(dashboard, "/actions/delete", method="POST", form={"ids": jobs["succeeded"], "confirm": "yes"})
    assert deleted.status == 303
    assert admin.execute(f'SELECT count(*) FROM "{s}".jobs WHERE id = %s', (jobs["succeeded"],)).fetchone()[0] == 0
    assert events_of(admin, s, jobs["succeeded"]) == [("deleted", "deleted", "dashboard: deleted by anonymous from 127.0.0.1")]
    gone = call(dashboard, f"/jobs/{jobs['succeeded']}")
    assert gone.status == 200 and "data-deleted" in gone.text and "deleted by anonymous" in gone.text


def test_actions_are_bounded_same_origin_and_authorized(world, admin, dashboards) -> None:
    failed = world["jobs"]["failed"]
    dashboard = dashboards(actions=True)
    too_many = call(dashboard, "/actions/retry", method="POST", form={"ids": list(range(1, 1002))})
    assert too_many.status == 400 and "at most 1,000" in too_many.text
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}, {}):
        refused = call(dashboard, "/actions/retry", method="POST", form={"ids": failed, "confirm": "yes"},
                       headers=headers)
        assert refused.status == 403, headers
    assert call(dashboard, "/actions/retry", method="POST", form={"ids": failed, "confirm": "yes"},
                headers={"Origin": "http://127.0.0.1:8089"}).status == 303

    asked = []

    def authorize(environ, action):
        asked.append(action)
        return action != "delete"

    guarded = dashboards(actions=True, authorize=authorize)
    page = call(guarded, "/jobs").text
    assert 'data-action="retry"' in page and 'data-action="delete"' not in page
    refused = call(guarded, "/actions/delete", method="POST", form={"ids": failed, "confirm": "yes"})
    assert refused.status == 403 and "delete" in asked


def test_redact_hides_arguments_and_turns_the_argument_filter_off(world, dashboards) -> None:
    dashboard = dashboards(redact=lambda task, args, kwargs: (["***"] * len(args or []), {}))
    listing = call(dashboard, "/jobs").text
    assert "[1, 2]" not in listing and "***" in listing
    assert 'name="args"' not in listing
    detail = call(dashboard, f"/jobs/{world['jobs']['queued']}").text
    assert "***" in detail
    assert "redacts" in call(dashboard, "/jobs?args=%5B1%5D").text


# ------------------------------------------------------------ access control

def test_credentials_and_the_user_named_in_events(world, admin, dashboards) -> None:
    import base64

    dashboard = dashboards(credentials=("ops", "s3cret"), actions=True)
    assert call(dashboard, "/").status == 401
    assert call(dashboard, "/static/pgqueue.css").status == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    assert call(dashboard, "/", headers=auth).status == 200
    done = call(dashboard, "/actions/retry", method="POST", form={"ids": world["jobs"]["failed"], "confirm": "yes"},
                headers={**auth, "Sec-Fetch-Site": "same-origin"})
    assert done.status == 303
    assert events_of(admin, world["schema"], world["jobs"]["failed"])[-1][2].startswith("dashboard: retried by ops")


def test_allowed_hosts(world, dashboards) -> None:
    dashboard = dashboards(allowed_hosts=["loopback"])
    assert call(dashboard, "/", host="localhost:8089").status == 200
    assert call(dashboard, "/", host="rebound.example").status == 400


# ----------------------------------------------------------------- mounting

LINK = re.compile(r'(?<![\w-])(?:href|src|action|formaction)="([^"]+)"')


def crawl(get, start: str, prefix: str) -> set[str]:
    """Every link, asset and form target of the pages reachable from ``start`` stays under
    ``prefix`` and answers 200."""
    seen, todo = set(), [start]
    while todo and len(seen) < 40:
        url = todo.pop(0)  # breadth first: every page of the navigation, before the timeline's "earlier" chain
        if url in seen:
            continue
        seen.add(url)
        status, body = get(url)
        assert status == 200, f"{url} answered {status}"
        if not body.lstrip().startswith("<!doctype html>"):
            continue
        for link in LINK.findall(body):
            link = html.unescape(link)
            assert link.startswith(prefix + "/"), f"{url} links to {link}, outside the mount point {prefix}"
            if "/actions/" in link or link in seen:
                continue
            if link.count("/jobs/") or link.count("/runners/") or link.count("/queues/") \
                    or link.count("/schedules/") \
                    or link.endswith(("/timeline", "/jobs", "/runners", "/queues", "/schedules", "/health", "/",
                                      ".css", ".js", ".svg", "/metrics", "/healthz")) \
                    or "?" in link:
                todo.append(link)
    return seen


def test_mounted_under_flask_at_a_prefix(world, dashboards) -> None:
    flask = pytest.importorskip("flask")
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    host = flask.Flask("host")

    @host.route("/")
    def index() -> str:
        return "the host app"

    host.wsgi_app = DispatcherMiddleware(host.wsgi_app, {"/ops/pgqueue": dashboards(actions=True)})
    client = host.test_client()
    assert client.get("/").text == "the host app"

    def get(url: str) -> tuple[int, str]:
        response = client.get(url)
        return response.status_code, response.get_data(as_text=True)

    seen = crawl(get, "/ops/pgqueue/", "/ops/pgqueue")
    assert any("/ops/pgqueue/jobs/" in u for u in seen) and "/ops/pgqueue/timeline" in seen
    assert "/ops/pgqueue/queues/default" in seen and "/ops/pgqueue/schedules" in seen
    done = client.post("/ops/pgqueue/actions/retry", data={"ids": world["jobs"]["failed"], "confirm": "yes",
                                                           "back": "/ops/pgqueue/jobs"},
                       headers={"Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 303 and done.headers["Location"].startswith("/ops/pgqueue/jobs?done=")


DJANGO_SCRIPT = r'''
import json, os, sys
import django
from django.conf import settings
settings.configure(
    DEBUG=False, SECRET_KEY="x", ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware", __name__ + ".FakeAuth"],
    DATABASES={}, LOGIN_URL="/login/",
)

class User:
    def __init__(self, name, staff):
        self.name, self.is_staff, self.is_active, self.is_authenticated = name, staff, True, name is not None
    def get_username(self):
        return self.name

class FakeAuth:
    """request.user from the X-Test-User header (staff unless the name starts with 'guest')."""
    def __init__(self, get_response):
        self.get_response = get_response
    def __call__(self, request):
        name = request.headers.get("X-Test-User")
        request.user = User(name, staff=bool(name) and not name.startswith("guest"))
        return self.get_response(request)

django.setup()
import pgqueue
from django.urls import include, path
from pgqueue.dashboard import make_app
from pgqueue.dashboard.django import dashboard_urls

app = pgqueue.App(os.environ["DSN"], schema=os.environ["SCHEMA"])
dashboard = make_app(app, actions=True)
urlpatterns = [path("admin/pgqueue/", include(dashboard_urls(dashboard)))]

from django.test import Client
client = Client()
out = {}
out["anonymous"] = [client.get("/admin/pgqueue/").status_code, client.get("/admin/pgqueue/")["Location"]]
out["guest"] = client.get("/admin/pgqueue/", HTTP_X_TEST_USER="guest").status_code
pages = {}
todo, seen = ["/admin/pgqueue/"], set()
import html, re
while todo and len(seen) < 25:
    url = todo.pop(0)
    if url in seen:
        continue
    seen.add(url)
    r = client.get(url, HTTP_X_TEST_USER="staff")
    body = r.content.decode()
    pages[url] = r.status_code
    if r.get("Content-Type", "").startswith("text/html"):
        for link in re.findall(r'(?<![\w-])(?:href|src|action|formaction)="([^"]+)"', body):
            link = html.unescape(link)
            pages.setdefault("links", []).append(link)
            if "/actions/" not in link and ("?" in link or "/queues/" in link or link.endswith(("/jobs", "/runners", "/timeline", "/health", "/queues", "/schedules", ".css", ".js"))):
                todo.append(link)
from urllib.parse import urlencode
form = urlencode({"ids": os.environ["FAILED"], "confirm": "yes", "back": "/admin/pgqueue/jobs"})
post = client.post("/admin/pgqueue/actions/retry", form, content_type="application/x-www-form-urlencoded",
                   HTTP_X_TEST_USER="staff", HTTP_SEC_FETCH_SITE="same-origin")
out["post"] = [post.status_code, post.get("Location")]
out["pages"] = pages
print(json.dumps(out))
dashboard.close()
'''


def test_mounted_in_django_staff_only_at_a_prefix(world, database_dsn, admin, tmp_path) -> None:
    pytest.importorskip("django")
    script = tmp_path / "django_mount.py"
    script.write_text(DJANGO_SCRIPT)
    env = dict(os.environ, DSN=database_dsn, SCHEMA=world["schema"], FAILED=str(world["jobs"]["failed"]),
               PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["anonymous"][0] == 302 and out["anonymous"][1].startswith("/login/?next=/admin/pgqueue/")
    assert out["guest"] == 403
    pages = out.pop("pages")
    links = pages.pop("links")
    assert all(code == 200 for code in pages.values()), pages
    assert len(pages) >= 5
    assert "/admin/pgqueue/queues" in pages and "/admin/pgqueue/schedules" in pages
    assert all(link.startswith("/admin/pgqueue/") for link in links), [l for l in links if not l.startswith("/admin/pgqueue/")]
    assert out["post"][0] == 303 and out["post"][1].startswith("/admin/pgqueue/jobs?done=retried")
    reason = events_of(admin, world["schema"], world["jobs"]["failed"])[-1][2]
    assert reason.startswith("dashboard: retried by staff")


def test_mounted_in_an_asgi_app_at_a_prefix(world, dashboards) -> None:
    a2wsgi = pytest.importorskip("a2wsgi")
    starlette_routing = pytest.importorskip("starlette.routing")
    uvicorn = pytest.importorskip("uvicorn")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse

    async def home(request):
        return PlainTextResponse("the host app")

    asgi = Starlette(routes=[starlette_routing.Route("/", home),
                             starlette_routing.Mount("/ops/pgqueue", app=a2wsgi.WSGIMiddleware(dashboards()))])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=15, message="uvicorn to start")
        base = f"http://127.0.0.1:{port}"
        assert fetch(base + "/").text == "the host app"

        def get(url: str) -> tuple[int, str]:
            response = fetch(base + url)
            return response.status, response.text

        seen = crawl(get, "/ops/pgqueue/", "/ops/pgqueue")
        assert "/ops/pgqueue/timeline" in seen and any("/ops/pgqueue/jobs/" in u for u in seen)
        assert "/ops/pgqueue/queues/default" in seen and "/ops/pgqueue/schedules" in seen
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------- CLI

def test_pgqueue_dashboard_command(world, database_dsn) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=database_dsn, PGQUEUE_SCHEMA=world["schema"])
    refused = subprocess.run([sys.executable, "-m", "pgqueue.cli", "dashboard", "--host", "0.0.0.0"],
                             env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode != 0 and "PGQUEUE_DASHBOARD_USER" in refused.stderr
    assert "Traceback" not in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "dashboard", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        line = ""
        while "dashboard on" not in line:
            line = proc.stderr.readline()
            assert line, "pgqueue dashboard exited before serving"
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        assert "this machine only" in line and "actions off" in line
        assert fetch(url + "healthz").json()["status"] == "ok"
        assert fetch(url, headers={"Host": "rebound.example"}).status == 400
        assert 'data-queue="default"' in fetch(url).text
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def test_an_action_on_every_job_a_filter_lists(world, admin, dashboards) -> None:
    s = world["schema"]
    extra = [add_job(admin, s, status="failed", queue="mail", task="send", error=None) for _ in range(3)]
    dashboard = dashboards(actions=True)
    page = call(dashboard, "/jobs?status=failed&queue=mail").text
    assert 'data-matching-action="retry"' in page and 'data-matching-action="cancel"' not in page
    form = {"matching": "1", "status": "failed", "queue": "mail", "back": "/jobs?status=failed&queue=mail"}
    confirm = call(dashboard, "/actions/retry", method="POST", form=form)
    assert confirm.status == 200 and 'data-count="3"' in confirm.text and "data-matching" in confirm.text
    ids = sorted(int(i) for i in re.findall(r'name="ids" value="(\d+)"', confirm.text))
    assert ids == sorted(extra)  # the other queue's failed job is not among them
    done = call(dashboard, "/actions/retry", method="POST", form={"ids": ids, "confirm": "yes", "back": form["back"]})
    assert done.status == 303
    statuses = admin.execute(f'SELECT status FROM "{s}".jobs WHERE id = ANY(%s)', (extra,)).fetchall()
    assert statuses == [("queued",)] * 3
    assert admin.execute(f'SELECT status FROM "{s}".jobs WHERE id = %s', (world["jobs"]["failed"],)).fetchone()[0] == "failed"


def test_each_page_runs_a_few_statements_whatever_it_shows(world, dashboards) -> None:
    from test_dashboard_plans import MAX_STATEMENTS

    dashboard = dashboards(cache_seconds=0)
    for path in ("/", "/jobs", "/jobs?status=failed&task=fail", f"/jobs/{world['jobs']['failed']}", "/runners",
                 f"/runners/{world['dead']}", "/timeline", "/health", "/metrics", "/healthz"):
        before = sum(dashboard.reader.counts.values())
        assert call(dashboard, path).status == 200, path
        assert sum(dashboard.reader.counts.values()) - before <= MAX_STATEMENTS, path
