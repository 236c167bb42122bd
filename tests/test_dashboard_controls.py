"""The dashboard's queues and schedules pages against a real database (the WSGI app called
in-process, and once over HTTP): what each shows, the 404s, and the controls (pause with a
reason, resume, limits; pause, resume and trigger a schedule) with their guards: off by
default, POST only, same-origin, authorized, confirmed, and recorded in queue_events or
schedule_events as done by the dashboard."""

from __future__ import annotations

import html
import re
import urllib.parse

import pytest

from dashboard_support import call, dashboards, fetch, seed_controls, serving  # noqa: F401 (dashboards: a fixture)

CONTROLS = ("pause_queue", "resume_queue", "limit_queue", "pause_schedule", "resume_schedule",
            "trigger_schedule")


@pytest.fixture
def world(app, admin):
    return seed_controls(app, admin)


def rows_of(page: str, attribute: str) -> list[str]:
    return re.findall(rf'<tr [^>]*{attribute}="([^"]*)"', page)


def row(page: str, attribute: str, value: str) -> str:
    """The <tr> whose ``attribute`` is ``value``, as text without tags."""
    found = re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', page, flags=re.S)
    assert found, f"no row with {attribute}={value!r} on the page"
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", found.group(1)))).strip()


def cells(page: str, attribute: str, value: str) -> list[str]:
    found = re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', page, flags=re.S)
    assert found, f"no row with {attribute}={value!r} on the page"
    return [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", c))).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), flags=re.S)]


def notice_of(dashboard, location: str) -> str:
    page = call(dashboard, location).text
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', page, flags=re.S)
    assert found, f"{location} shows no notice"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def queue_events(admin, schema: str) -> list[tuple]:
    return admin.execute(f'SELECT queue, action, by, reason, detail FROM "{schema}".queue_events '
                         "ORDER BY id").fetchall()


def schedule_events(admin, schema: str, schedule_id: str) -> list[tuple]:
    return admin.execute(f'SELECT kind, job_id, reason FROM "{schema}".schedule_events WHERE schedule_id = %s '
                         "ORDER BY id", (schedule_id,)).fetchall()


# ---------------------------------------------------------------------- queues

def test_queues_page_shows_counts_controls_and_the_latest_changes(world, dashboards) -> None:
    page = call(dashboards(), "/queues")
    assert page.status == 200, page.text
    text = page.text
    assert rows_of(text, "data-queue") == ["default", "mail", "payments"]
    # queue, queued, oldest, scheduled, running, blocked, succeeded 1 h, failed 1 h, paused, limits
    default = cells(text, "data-queue", "default")
    # Queued: two seeded, the lock's holder and the job minutely fired; two wait for the lock.
    assert default[1] == "4" and default[4] == "2" and default[5] == "2", default
    assert default[6] == "19" and default[7] == "2", default  # the rollup's last hour
    assert default[8] == "no" and default[9] == "none" and default[10] == "none", default
    mail = cells(text, "data-queue", "mail")
    assert mail[3] == "1", mail  # the scheduled job
    assert "by ops" in mail[8] and "provider down" in mail[8] and mail[8].endswith("ago by ops: provider down")
    payments = cells(text, "data-queue", "payments")
    assert payments[9] == "at most 5 running" and payments[10] == "100 starts per 60.0 s", payments
    # The latest control changes, newest first, each with who and why (or the new limits).
    assert rows_of(text, "data-change") == ["limited", "paused"]
    assert "payments limited ops at most 5 running; 100 starts per 60.0 s" in row(text, "data-change", "limited")
    assert "mail paused ops provider down" in row(text, "data-change", "paused")
    assert 'href="/queues/mail"' in text and 'href="/jobs?queue=mail&amp;status=scheduled"' in text


def test_queue_page_has_its_history_and_an_unknown_queue_is_a_404(world, app, dashboards) -> None:
    app.queues.resume("mail", by="ops")
    app.queues.pause("mail", reason="provider down again", by="oncall")
    dashboard = dashboards()
    page = call(dashboard, "/queues/mail")
    assert page.status == 200, page.text
    text = page.text
    assert "provider down again" in text and "by oncall" in text
    assert rows_of(text, "data-change") == ["paused", "resumed", "paused"]  # newest first
    assert "oncall provider down again" in row(text, "data-change", "paused")
    assert 'data-count="scheduled"' in text and "Throughput, last hour" in text
    assert 'aria-current="page">Queues<' in text  # shown under Queues in the navigation
    limited = call(dashboard, "/queues/payments").text
    assert "at most 5 of its jobs running at once" in limited and "100 starts per 60.0 s" in limited
    missing = call(dashboard, "/queues/nowhere")
    assert missing.status == 404 and "there is no queue &#39;nowhere&#39;" in missing.text


def test_queue_names_that_need_quoting_round_trip_through_a_real_server(app, admin, dashboards) -> None:
    name = "mail/eu west ü"
    app.queues.pause(name, reason="odd name", by="ops")
    with serving(dashboards()) as base:
        listing = fetch(base + "/queues").text
        link = re.search(r'<a href="(/queues/[^"]+)">mail/eu west ü</a>', listing)
        assert link and link.group(1) == "/queues/" + urllib.parse.quote(name, safe=""), listing
        page = fetch(base + html.unescape(link.group(1)))
        assert page.status == 200 and "odd name" in page.text, page.text


# ------------------------------------------------------------------- schedules

def test_schedules_page_shows_each_schedule_its_last_run_and_state(world, app, dashboards) -> None:
    app.schedules.pause("nightly", reason="daylight saving check", by="ops")
    page = call(dashboards(), "/schedules")
    assert page.status == 200, page.text
    text = page.text
    assert rows_of(text, "data-schedule") == ["minutely", "nightly", "retired"]
    # id, task, cron, time zone, next run, last run, its job, state, catch-up, overlap
    minutely = cells(text, "data-schedule", "minutely")
    assert minutely[1:4] == ["noop", "* * * * *", "UTC"], minutely
    assert minutely[6] == f"job {world['fired_job']} queued" and minutely[7].startswith("live")
    assert minutely[8] == "skip" and minutely[9] == "skip", minutely
    assert f'href="/jobs/{world["fired_job"]}"' in text
    nightly = cells(text, "data-schedule", "nightly")
    assert nightly[3] == "Europe/Berlin" and nightly[5] == "never" and nightly[7] == "paused"
    assert nightly[8] == "latest within 60.0 min" and nightly[9] == "allow", nightly
    assert re.search(r'data-schedule="nightly" data-paused="yes" data-orphaned="no"', text)
    assert re.search(r'data-schedule="retired" data-paused="no" data-orphaned="yes"', text)
    assert 'aria-current="page">Schedules<' in text


def test_schedule_page_has_its_history_with_reasons_and_jobs(world, dashboards) -> None:
    dashboard = dashboards()
    page = call(dashboard, "/schedules/minutely")
    assert page.status == 200, page.text
    text = page.text
    assert rows_of(text, "data-kind") == ["skipped", "fired"] + ["missed"] * 5 + ["created"]
    assert f"overlap: job {world['fired_job']} of an earlier tick is still queued or running" in text
    assert f"job {world['fired_job']} queued" in row(text, "data-kind", "fired")
    assert "late by 301.0 s: catch-up skip" in text
    assert f'runner {world["live_runner"]}' in text  # declared by the live runner
    runs = call(dashboard, "/schedules/minutely?events=runs").text
    assert rows_of(runs, "data-kind") == ["fired"]
    orphan = call(dashboard, "/schedules/retired").text
    assert "no running worker: orphaned" in orphan and 'data-badge="orphaned"' in orphan
    nightly = call(dashboard, "/schedules/nightly").text
    upcoming = re.search(r'data-field="upcoming">(.*?)</dd>', nightly, flags=re.S).group(1)
    assert upcoming.count("<time") == 4  # the next tick, then four more
    missing = call(dashboard, "/schedules/nope")
    assert missing.status == 404 and "there is no schedule &#39;nope&#39;" in missing.text


def test_the_new_pages_run_a_few_statements(world, dashboards) -> None:
    from test_dashboard_plans import MAX_STATEMENTS

    dashboard = dashboards(cache_seconds=0)
    for path in ("/queues", "/queues/mail", "/schedules", "/schedules/minutely", "/schedules/minutely?events=runs"):
        before = sum(dashboard.reader.counts.values())
        assert call(dashboard, path).status == 200, path
        assert sum(dashboard.reader.counts.values()) - before <= MAX_STATEMENTS, path


# ----------------------------------------------------------- without actions

def test_read_only_dashboard_shows_no_controls_and_refuses_their_posts(world, app, admin, dashboards) -> None:
    schema = app.settings.schema
    dashboard = dashboards()
    for path in ("/queues", "/queues/mail", "/queues/default", "/schedules", "/schedules/minutely"):
        page = call(dashboard, path)
        assert page.status == 200 and "data-control" not in page.text and "/actions/" not in page.text, path
    before = (queue_events(admin, schema), schedule_events(admin, schema, "minutely"))
    forms = {"pause_queue": {"queue": "default", "reason": "x"}, "resume_queue": {"queue": "mail"},
             "limit_queue": {"queue": "default", "concurrency": "1"},
             "pause_schedule": {"schedule": "minutely"}, "resume_schedule": {"schedule": "minutely"},
             "trigger_schedule": {"schedule": "minutely"}}
    for name in CONTROLS:
        refused = call(dashboard, f"/actions/{name}", method="POST", form={**forms[name], "confirm": "yes"})
        assert refused.status == 403 and "actions are off" in refused.text, name
        assert call(dashboard, f"/actions/{name}").status == 405, name
    assert (queue_events(admin, schema), schedule_events(admin, schema, "minutely")) == before
    assert app.queues.get("default").paused is False and app.queues.get("mail").paused is True


# -------------------------------------------------------------- with actions

def test_pause_then_resume_a_queue_through_the_confirmation(world, app, admin, dashboards) -> None:
    schema = app.settings.schema
    dashboard = dashboards(actions=True)
    listing = call(dashboard, "/queues").text
    assert 'data-control="pause_queue"' in listing and 'data-control="resume_queue"' in listing
    assert 'data-control="pause_queue"' in call(dashboard, "/queues/default").text
    before = queue_events(admin, schema)
    form = {"queue": "default", "reason": "deploy\nin progress", "back": "/queues/default"}
    confirm = call(dashboard, "/actions/pause_queue", method="POST", form=form, remote_user="alice")
    assert confirm.status == 200 and 'data-confirm="pause_queue"' in confirm.text
    assert "Its 2 running jobs finish; its 4 queued jobs wait" in confirm.text
    assert 'name="reason"' in confirm.text and 'value="deploy in progress"' in confirm.text
    assert queue_events(admin, schema) == before and app.queues.get("default").paused is False
    done = call(dashboard, "/actions/pause_queue", method="POST", form={**form, "confirm": "yes"},
                remote_user="alice")
    assert done.status == 303, done.text
    assert done.headers["location"].startswith("/queues/default?done=pause_queue")
    assert notice_of(dashboard, done.headers["location"]).startswith("Queue paused")
    assert queue_events(admin, schema)[len(before):] == [
        ("default", "paused", "dashboard (alice from 127.0.0.1)", "deploy in progress", None)]
    paused = app.queues.get("default")  # the Python API sees what the dashboard did
    assert paused.paused and paused.paused_by == "dashboard (alice from 127.0.0.1)"
    page = call(dashboard, "/queues/default").text
    assert 'data-control="resume_queue"' in page and 'data-control="pause_queue"' not in page

    resume = call(dashboard, "/actions/resume_queue", method="POST", remote_user="bob",
                  form={"queue": "default", "back": "/queues"})
    assert resume.status == 200 and "deploy in progress" in resume.text
    done = call(dashboard, "/actions/resume_queue", method="POST", remote_user="bob",
                form={"queue": "default", "back": "/queues", "confirm": "yes"})
    assert done.status == 303 and done.headers["location"].startswith("/queues?done=resume_queue")
    assert queue_events(admin, schema)[-1][:3] == ("default", "resumed", "dashboard (bob from 127.0.0.1)")
    assert app.queues.get("default").paused is False
    unknown = call(dashboard, "/actions/pause_queue", method="POST", form={"queue": "nowhere", "confirm": "yes"})
    assert unknown.status == 404 and "there is no queue" in unknown.text
    assert app.queues.get("nowhere") is None


@pytest.mark.parametrize(("fields", "says"), [
    ({"concurrency": "abc"}, "the concurrency limit must be a whole number from 1"),
    ({"concurrency": "0"}, "the concurrency limit must be a whole number from 1"),
    ({"rate": "100"}, "give the rate limit and its period together"),
    ({"per": "1m"}, "give the rate limit and its period together"),
    ({"rate": "100", "per": "soon"}, "the period must be a duration such as 30s, 1m or 1h, not &#39;soon&#39;"),
    ({"rate": "-3", "per": "1m"}, "the rate limit must be a whole number from 1"),
    ({"rate": "10", "per": "0s"}, "the period must be longer than zero"),
])
def test_bad_limits_come_back_as_the_form_saying_what_is_wrong(world, app, admin, dashboards, fields, says) -> None:
    schema = app.settings.schema
    dashboard = dashboards(actions=True)
    before = queue_events(admin, schema)
    form = {"queue": "default", "concurrency": "", "rate": "", "per": "", **fields}
    for confirm in ("", "yes"):  # a confirming POST with bad values is refused the same way
        page = call(dashboard, "/actions/limit_queue", method="POST", form={**form, "confirm": confirm})
        assert page.status == 400, page.text
        assert says in page.text and "data-form-error" in page.text and "Traceback" not in page.text
        assert 'name="concurrency"' in page.text and "data-confirm-button" not in page.text
        for name, value in fields.items():
            assert f'name="{name}"' in page.text and f'value="{html.escape(value)}"' in page.text
    assert queue_events(admin, schema) == before
    assert app.queues.get("default").concurrency_limit is None


def test_set_then_clear_limits_through_the_confirmation(world, app, admin, dashboards) -> None:
    schema = app.settings.schema
    dashboard = dashboards(actions=True)
    form = {"queue": "default", "concurrency": "3", "rate": "10", "per": "1m", "back": "/queues/default"}
    confirm = call(dashboard, "/actions/limit_queue", method="POST", form=form)
    assert confirm.status == 200, confirm.text
    assert row(confirm.text, "data-limit", "concurrency") == "Concurrency none at most 3 running"
    assert row(confirm.text, "data-limit", "rate") == "Rate none 10 starts per 60.0 s"
    assert app.queues.get("default").concurrency_limit is None
    done = call(dashboard, "/actions/limit_queue", method="POST", form={**form, "confirm": "yes"}, remote_user="carol")
    assert done.status == 303, done.text
    limited = app.queues.get("default")
    assert (limited.concurrency_limit, limited.rate_limit, limited.rate_period) == (3, 10, 60.0)
    assert queue_events(admin, schema)[-1] == ("default", "limited", "dashboard (carol from 127.0.0.1)", None,
                                              {"concurrency": 3, "rate": 10, "per": "00:01:00"})
    page = call(dashboard, "/queues/default").text
    assert "at most 3 running; 10 starts per 60.0 s" in row(page, "data-change", "limited")
    assert 'data-control="limit_queue_clear"' in page and 'value="60s"' in page  # the form holds them
    cleared = call(dashboard, "/actions/limit_queue", method="POST",
                   form={"queue": "default", "clear": "1", "concurrency": "3", "confirm": "yes"})
    assert cleared.status == 303
    after = app.queues.get("default")
    assert (after.concurrency_limit, after.rate_limit) == (None, None)
    assert "limits cleared" in row(call(dashboard, "/queues/default").text, "data-change", "limited")


def test_trigger_pause_and_resume_a_schedule_through_the_confirmation(world, app, admin, dashboards) -> None:
    schema = app.settings.schema
    dashboard = dashboards(actions=True)
    page = call(dashboard, "/schedules/nightly").text
    assert 'data-control="trigger_schedule"' in page and 'data-control="pause_schedule"' in page
    confirm = call(dashboard, "/actions/trigger_schedule", method="POST", form={"schedule": "nightly"})
    assert confirm.status == 200 and "One job of task" in confirm.text
    assert [k for k, *_ in schedule_events(admin, schema, "nightly")] == ["created"]
    done = call(dashboard, "/actions/trigger_schedule", method="POST", remote_user="dave",
                form={"schedule": "nightly", "confirm": "yes", "back": "/schedules/nightly"})
    assert done.status == 303, done.text
    kind, job_id, reason = schedule_events(admin, schema, "nightly")[-1]
    assert (kind, reason) == ("triggered", "triggered by dashboard (dave from 127.0.0.1)")
    job = admin.execute(f'SELECT task, status, meta FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    assert job[:2] == ("noop", "queued") and job[2]["schedule"] == "nightly" and job[2]["triggered"] is True
    assert done.headers["location"] == f"/schedules/nightly?done=trigger_schedule%3A1%3A{job_id}"
    assert notice_of(dashboard, done.headers["location"]) == f"Triggered: one job enqueued now, as a tick would. job {job_id}"
    assert app.schedules.get("nightly")["last_job_id"] == job_id

    # With overlap skip and its job still queued, a trigger enqueues nothing and says so.
    skipped = call(dashboard, "/actions/trigger_schedule", method="POST",
                   form={"schedule": "minutely", "confirm": "yes", "back": "/schedules/minutely"})
    assert notice_of(dashboard, skipped.headers["location"]).startswith("Nothing enqueued")

    paused = call(dashboard, "/actions/pause_schedule", method="POST", remote_user="dave",
                  form={"schedule": "nightly", "reason": "clock change", "confirm": "yes"})
    assert paused.status == 303 and paused.headers["location"].startswith("/schedules/nightly?done=pause_schedule%3A1")
    row_ = app.schedules.get("nightly")
    assert row_["paused"] and row_["pause_reason"] == "clock change"
    assert schedule_events(admin, schema, "nightly")[-1] == (
        "paused", None, "paused by dashboard (dave from 127.0.0.1): clock change")
    resumed = call(dashboard, "/actions/resume_schedule", method="POST", form={"schedule": "nightly", "confirm": "yes"})
    assert resumed.status == 303 and app.schedules.get("nightly")["paused"] is False
    again = call(dashboard, "/actions/resume_schedule", method="POST", form={"schedule": "nightly", "confirm": "yes"})
    assert notice_of(dashboard, again.headers["location"]) == "The schedule was not paused: nothing changed."
    missing = call(dashboard, "/actions/trigger_schedule", method="POST", form={"schedule": "nope", "confirm": "yes"})
    assert missing.status == 404 and "there is no schedule &#39;nope&#39;" in missing.text


def test_controls_are_same_origin_and_authorized(world, app, admin, dashboards) -> None:
    schema = app.settings.schema
    dashboard = dashboards(actions=True)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}, {}):
        refused = call(dashboard, "/actions/pause_queue", method="POST", headers=headers,
                       form={"queue": "default", "confirm": "yes"})
        assert refused.status == 403, headers
    assert app.queues.get("default").paused is False
    assert call(dashboard, "/actions/pause_queue", method="POST", form={"confirm": "yes"}).status == 400  # no queue

    asked = []

    def authorize(environ, action):
        asked.append(action)
        return action not in ("trigger_schedule", "limit_queue")

    guarded = dashboards(actions=True, authorize=authorize)
    page = call(guarded, "/schedules/nightly").text
    assert 'data-control="pause_schedule"' in page and 'data-control="trigger_schedule"' not in page
    assert 'data-control="limit_queue"' not in call(guarded, "/queues/default").text
    refused = call(guarded, "/actions/trigger_schedule", method="POST", form={"schedule": "nightly", "confirm": "yes"})
    assert refused.status == 403 and "you may not trigger schedules" in refused.text
    assert [k for k, *_ in schedule_events(admin, schema, "nightly")] == ["created"]
    assert {"trigger_schedule", "pause_schedule", "limit_queue"} <= set(asked)


def test_a_reason_too_long_comes_back_with_the_form(world, app, admin, dashboards) -> None:
    schema = app.settings.schema
    dashboard = dashboards(actions=True)
    before = queue_events(admin, schema)
    for target, name in (("queue", "pause_queue"), ("schedule", "pause_schedule")):
        value = "default" if target == "queue" else "nightly"
        page = call(dashboard, f"/actions/{name}", method="POST",
                    form={target: value, "reason": "x" * 1001, "confirm": "yes"})
        assert page.status == 400 and "the reason is 1,001 characters long: write at most 1,000" in page.text
        assert 'name="reason"' in page.text and "Traceback" not in page.text
    assert queue_events(admin, schema) == before and app.queues.get("default").paused is False
    assert app.schedules.get("nightly")["paused"] is False
