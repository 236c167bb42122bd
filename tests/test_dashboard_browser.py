"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

Every page is loaded with guards: no console error, no page error, no failed request, no
response of 400 or more unless the test expects it, and no request to anything but
127.0.0.1 (such a request is aborted and fails the test). Each page's screenshot is saved
under tests/artifacts/.

Part of the default run; skipped, saying why, only where chromium or playwright is missing
(``.ci/dashboard.sh`` installs both; a browser is never downloaded).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest

from dashboard_support import seed_controls, seed_world, serving
from helpers import wait_for
from pgqueue.dashboard import make_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("PGQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
               "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
               "--no-pings", "--metrics-recording-only"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/dashboard.sh does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (never `playwright install`)")
    with sync_playwright() as playwright:
        # launch() gives every run a fresh, temporary user-data directory.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


class Guard:
    """What a page did that it must not: console errors, failed requests, foreign requests."""

    def __init__(self, context: Any) -> None:
        self.problems: list[str] = []
        self.expected: set[tuple[str, int]] = set()
        self.requests: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        host = urllib.parse.urlsplit(url).hostname
        if host != "127.0.0.1":
            self.problems.append(f"request leaving 127.0.0.1: {url}")
            route.abort()
            return
        route.continue_()

    def watch(self, page: Any) -> Any:
        page.on("console", lambda msg: msg.type == "error" and not self._expected_console(msg.text)
                and self.problems.append(f"console error: {msg.text}"))
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("request", lambda req: self.requests.append(req.url))
        page.on("response", self._response)
        return page

    def _failed(self, request: Any) -> None:
        # A live poll in flight when the page navigates (a reload, a click) is aborted by the
        # browser: that is the navigation, not a failure.
        if request.failure == "net::ERR_ABORTED" and request.headers.get("x-pgqueue-live") == "1":
            return
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _expected_console(self, text: str) -> bool:
        return any(str(status) in text for _, status in self.expected)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            path = urllib.parse.urlsplit(response.url).path
            if not any(path.endswith(p) and response.status == s for p, s in self.expected):
                self.problems.append(f"{response.status} for {response.url}")

    def check(self) -> None:
        assert not self.problems, "the page misbehaved:\n" + "\n".join(self.problems)


@pytest.fixture
def open_page(browser) -> Iterator[Any]:
    contexts = []

    def open_(base: str, path: str = "/") -> tuple[Any, Guard]:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base)
        contexts.append(context)
        guard = Guard(context)
        page = guard.watch(context.new_page())
        page.goto(base + path)
        return page, guard

    yield open_
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def load_cleanly(open_page: Any, base: str, pages: dict[str, str]) -> None:
    """Each page: its script ran, its heading shows, no panel has a problem, nothing misbehaved;
    its screenshot saved under its name."""
    for name, path in pages.items():
        page, guard = open_page(base, path)
        page.wait_for_selector("#pgq-controls:not([hidden])")  # the script ran
        assert page.locator("h1").first.is_visible()
        assert not page.locator("[data-problem]").count(), f"{path} shows a problem"
        shot(page, name)
        guard.check()


@pytest.fixture
def world(app, admin):
    return seed_world(admin, app.settings.schema)


def test_every_page_loads_cleanly(world, app, open_page) -> None:
    dashboard = make_app(app)
    jobs = world["jobs"]
    pages = {"overview": "/", "jobs": "/jobs", "jobs-failed": "/jobs?status=failed",
             "job": f"/jobs/{jobs['failed']}", "runners": "/runners", "runner": f"/runners/{world['dead']}",
             "timeline": "/timeline?window=5m", "health": "/health"}
    try:
        with serving(dashboard) as base:
            load_cleanly(open_page, base, pages)
            # Times switch between UTC and the browser's zone.
            page, guard = open_page(base, f"/jobs/{jobs['failed']}")
            first = page.locator("time.abs").first
            utc_text = first.inner_text()
            assert utc_text.endswith("Z")
            page.click("#pgq-tz")
            assert not first.inner_text().endswith("Z") and first.get_attribute("title") == utc_text
            guard.check()
    finally:
        dashboard.close()


def test_crash_recovery_end_to_end_on_the_timeline(wapp, admin, start_worker, open_page) -> None:
    """Runner A takes a slow job and is SIGKILLed; runner B finishes it. The timeline shows A's
    lane ending with its death, the attempt moving to B; clicking the bar opens the job with its
    whole history."""
    schema = wapp.settings.schema
    a = start_worker("--concurrency", "2")
    a_id = a.runner_id()
    job = wapp.get_task("sleep").enqueue(3.0)
    holder = f'SELECT runner_id FROM "{schema}".jobs WHERE id = %s'
    wait_for(lambda: admin.execute(holder, (job.id,)).fetchone()[0] == a_id, message="runner A to take the job")
    b = start_worker("--concurrency", "2")
    b_id = b.runner_id()
    assert admin.execute(holder, (job.id,)).fetchone()[0] == a_id, "the job ended before the kill"
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    assert job.result(timeout=30) == 3.0
    kinds = admin.execute(f'SELECT kind, runner_id FROM "{schema}".job_events WHERE job_id = %s ORDER BY id',
                          (job.id,)).fetchall()
    assert kinds == [("enqueued", None), ("claimed", a_id), ("crashed", a_id), ("claimed", b_id),
                     ("succeeded", b_id)]

    dashboard = make_app(wapp)
    try:
        with serving(dashboard) as base:
            since, until = admin.execute(
                f'SELECT min(at) - interval \'2 s\', max(at) + interval \'2 s\' FROM "{schema}".job_events '
                "WHERE job_id = %s", (job.id,)).fetchone()
            page, guard = open_page(base, "/timeline?" + urllib.parse.urlencode(
                {"since": since.isoformat(), "until": until.isoformat()}))
            lane_a = page.locator(f'g.lane[data-runner-id="{a_id}"]')
            assert lane_a.get_attribute("data-state") == "dead"
            assert lane_a.locator('[data-marker="dead"]').count() == 1
            assert page.locator(f'g.lane[data-runner-id="{b_id}"]').get_attribute("data-state") == "running"
            crashed = page.locator(f'a[data-job-id="{job.id}"][data-runner-id="{a_id}"]')
            assert crashed.get_attribute("data-outcome") == "crashed" and crashed.get_attribute("data-attempt") == "1"
            finished = page.locator(f'a[data-job-id="{job.id}"][data-runner-id="{b_id}"]')
            assert finished.get_attribute("data-outcome") == "succeeded" and finished.get_attribute("data-attempt") == "2"
            assert page.locator(f'path.link-line[data-job-id="{job.id}"]').count() == 1
            # A's lane ends where it died: its last bar ends at (or before) the dead marker.
            marker_x = float(lane_a.locator('[data-marker="dead"] line').get_attribute("x1"))
            bar = crashed.locator("rect")
            assert float(bar.get_attribute("x")) + float(bar.get_attribute("width")) <= marker_x + 2.5
            shot(page, "timeline-recovery")
            page.locator("main").screenshot(path=str(ARTIFACTS / "timeline-recovery-main.png"))
            crashed.click()
            page.wait_for_url(re.compile(rf".*/jobs/{job.id}$"))
            history = page.locator("#history tbody tr")
            assert [history.nth(i).get_attribute("data-kind") for i in range(history.count())] == [
                "enqueued", "claimed", "crashed", "claimed", "succeeded"]
            runners = [history.nth(i).get_attribute("data-runner-id") for i in range(history.count())]
            assert runners == ["", str(a_id), str(a_id), str(b_id), str(b_id)]
            assert "declared dead" in page.locator("#history").inner_text()
            shot(page, "job-recovered")
            guard.check()
    finally:
        dashboard.close()


def test_a_job_inserted_with_sql_appears_without_a_reload(world, app, admin, open_page) -> None:
    dashboard = make_app(app)
    schema = world["schema"]
    try:
        with serving(dashboard) as base:
            page, guard = open_page(base, "/jobs")
            page.select_option("#pgq-refresh", "2")
            new_id = admin.execute(f'INSERT INTO "{schema}".jobs (task, args) VALUES (%s, %s::jsonb) RETURNING id',
                                   ("inserted.by_sql", "[7]")).fetchone()[0]
            page.wait_for_selector(f'tr[data-job-id="{new_id}"]', timeout=8000)
            assert "inserted.by_sql" in page.locator(f'tr[data-job-id="{new_id}"]').inner_text()
            # A hidden tab sends no polls; becoming visible again refreshes at once.
            page.evaluate("""() => {
                Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                document.dispatchEvent(new Event('visibilitychange'));
            }""")
            before = len([u for u in guard.requests if urllib.parse.urlsplit(u).path == "/jobs"])
            page.wait_for_timeout(4500)
            after = len([u for u in guard.requests if urllib.parse.urlsplit(u).path == "/jobs"])
            assert after == before, "a hidden tab kept polling"
            with page.expect_request(lambda r: urllib.parse.urlsplit(r.url).path == "/jobs", timeout=5000):
                page.evaluate("""() => {
                    Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                    document.dispatchEvent(new Event('visibilitychange'));
                }""")
            # The choice is kept for the next visit.
            page.reload()
            assert page.locator("#pgq-refresh").input_value() == "2"
            guard.check()
    finally:
        dashboard.close()


def test_without_actions_there_are_no_buttons_and_a_post_is_refused(world, app, open_page) -> None:
    dashboard = make_app(app)
    failed = world["jobs"]["failed"]
    try:
        with serving(dashboard) as base:
            page, guard = open_page(base, f"/jobs/{failed}")
            assert page.locator("[data-action]").count() == 0
            page.goto(base + "/jobs")
            assert page.locator("[data-action]").count() == 0 and page.locator("#bulk").count() == 0
            guard.expected.add(("/actions/retry", 403))
            status, text = page.evaluate("""async (id) => {
                const r = await fetch('/actions/retry', {method: 'POST',
                    body: new URLSearchParams({ids: String(id), confirm: 'yes'})});
                return [r.status, await r.text()];
            }""", failed)
            assert status == 403 and "actions are off" in text
            page.goto(base + "/queues")
            assert page.locator("tr[data-queue]").count() >= 2 and page.locator("[data-control]").count() == 0
            guard.expected.add(("/actions/pause_queue", 403))
            status, text = page.evaluate("""async () => {
                const r = await fetch('/actions/pause_queue', {method: 'POST',
                    body: new URLSearchParams({queue: 'default', confirm: 'yes'})});
                return [r.status, await r.text()];
            }""")
            assert status == 403 and "actions are off" in text
            guard.check()
    finally:
        dashboard.close()


def test_retry_through_the_confirmation_changes_the_status_and_writes_an_event(world, app, admin, open_page) -> None:
    dashboard = make_app(app, actions=True)
    schema, failed = world["schema"], world["jobs"]["failed"]
    try:
        with serving(dashboard) as base:
            page, guard = open_page(base, "/jobs?status=failed")
            page.check(f'tr[data-job-id="{failed}"] input[type=checkbox]')
            page.click('button[data-action="retry"]')
            page.wait_for_selector('[data-confirm="retry"]')
            assert page.locator('[data-confirm="retry"]').get_attribute("data-count") == "1"
            assert "Retry 1 job?" in page.locator("h1").inner_text()
            shot(page, "confirm-retry")
            assert admin.execute(f'SELECT status FROM "{schema}".jobs WHERE id = %s', (failed,)).fetchone()[0] == "failed"
            page.click("[data-confirm-button]")
            page.wait_for_selector(".notice")
            assert "1 of 1 chosen job retried" in page.locator(".notice").inner_text()
            assert page.url.startswith(base + "/jobs?status=failed")  # the filter survived
            assert admin.execute(f'SELECT status FROM "{schema}".jobs WHERE id = %s', (failed,)).fetchone()[0] == "queued"
            kind, reason = admin.execute(f'SELECT kind, reason FROM "{schema}".job_events WHERE job_id = %s '
                                         "ORDER BY id DESC LIMIT 1", (failed,)).fetchone()
            assert kind == "retried" and reason.startswith("dashboard: retried by anonymous from 127.0.0.1")
            page.goto(base + f"/jobs/{failed}")
            assert page.locator('[data-field="status"]').inner_text().startswith("queued")
            guard.check()
    finally:
        dashboard.close()


def test_queues_and_schedules_pages_load_cleanly_and_a_pause_goes_through_the_confirmation(
        app, admin, open_page) -> None:
    seeded = seed_controls(app, admin)
    schema = app.settings.schema
    dashboard = make_app(app, actions=True)
    pages = {"queues": "/queues", "queue-paused": "/queues/mail", "queue-limited": "/queues/payments",
             "schedules": "/schedules", "schedule": "/schedules/minutely", "schedule-orphaned": "/schedules/retired"}
    try:
        with serving(dashboard) as base:
            load_cleanly(open_page, base, pages)
            page, guard = open_page(base, "/schedules")
            row = page.locator('tr[data-schedule="minutely"]')
            assert row.get_attribute("data-paused") == "no"
            page.click(f'tr[data-schedule="minutely"] a[href="/jobs/{seeded["fired_job"]}"]')
            page.wait_for_url(re.compile(rf".*/jobs/{seeded['fired_job']}$"))
            guard.check()

            # Pause a queue with a reason: the form, the confirmation, the notice, the history.
            page, guard = open_page(base, "/queues/default")
            page.fill("#pause-form input[name=reason]", "pausing from the browser")
            page.click('#pause-form button[data-control="pause_queue"]')
            page.wait_for_selector('[data-confirm="pause_queue"]')
            assert page.locator("h1").inner_text() == "Pause queue default?"
            shot(page, "confirm-pause-queue")
            assert not app.queues.get("default").paused
            page.click("[data-confirm-button]")
            page.wait_for_selector(".notice")
            assert page.locator(".notice").inner_text().startswith("Queue paused")
            assert page.url.startswith(base + "/queues/default")
            assert "pausing from the browser" in page.locator('[data-field="paused"]').inner_text()
            assert page.locator('#queue-history tr[data-change="paused"]').count() == 1
            by, reason = admin.execute(f'SELECT by, reason FROM "{schema}".queue_events WHERE queue = %s '
                                       "ORDER BY id DESC LIMIT 1", ("default",)).fetchone()
            assert by == "dashboard (anonymous from 127.0.0.1)" and reason == "pausing from the browser"
            shot(page, "queue-paused-by-the-dashboard")
            guard.check()
    finally:
        dashboard.close()
