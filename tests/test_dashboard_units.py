"""Dashboard pieces that need no database: the timeline's layout, the security rules, filters."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from pgqueue import errors
from pgqueue.dashboard import timeline, views, web
from pgqueue.dashboard.reader import Cache
from pgqueue.dashboard.server import listening_policy

T0 = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def attempt(job_id, n, runner, start, end, outcome, running=False):
    return {"job_id": job_id, "attempt": n, "runner_id": runner, "started_at": at(start),
            "ended_at": at(end) if end is not None else None, "outcome": outcome, "running": running,
            "task": "t", "queue": "default"}


def test_timeline_draws_the_crash_recovery_story() -> None:
    runners = [
        {"id": 1, "host": "a", "pid": 10, "state": "dead", "started_at": at(0), "stopped_at": at(40),
         "heartbeat_at": at(30), "reason": "process gone", "lost_reason": "process gone"},
        {"id": 2, "host": "b", "pid": 11, "state": "running", "started_at": at(20), "stopped_at": None,
         "heartbeat_at": at(59), "reason": None, "lost_reason": None},
    ]
    attempts = [attempt(7, 1, 1, 10, 40, "crashed"), attempt(7, 2, 2, 41, 55, "succeeded"),
                attempt(8, 1, 2, 50, None, None, running=True)]
    picture = timeline.layout(at(0), at(60), at(60), runners, attempts)
    lane_a, lane_b = picture.lanes
    assert [lane.runner_id for lane in picture.lanes] == [1, 2]
    # A's lane ends where it was declared dead, with a marker and the silence before it.
    assert lane_a.state == "dead" and lane_a.ended_at == at(40)
    assert lane_a.life_x2 == pytest.approx(picture.plot_left + (picture.plot_right - picture.plot_left) * 40 / 60)
    assert [m.kind for m in lane_a.markers] == ["dead", "heartbeat"]
    assert lane_a.silent_x1 is not None and lane_a.silent_x1 < lane_a.life_x2
    # The attempt moves from A to B: a link from the crashed bar to attempt 2.
    (crashed,) = lane_a.bars
    assert crashed.outcome == "crashed"
    (link,) = picture.links
    assert link.job_id == 7 and link.x1 == pytest.approx(crashed.x + crashed.width)
    assert {b.outcome for b in lane_b.bars} == {"succeeded", "running"}
    # Overlapping attempts on B take two sub-rows; the running one reaches "now".
    rows = {b.job_id: b.row for b in lane_b.bars}
    assert rows[7] != rows[8]
    running = next(b for b in lane_b.bars if b.outcome == "running")
    assert running.x + running.width == pytest.approx(picture.plot_right)
    assert "attempt 2 on runner 2: succeeded" in lane_b.bars[0].title


def test_timeline_clips_bars_to_the_window_and_keeps_a_minimum_width() -> None:
    picture = timeline.layout(at(100), at(200), at(300), [],
                              [attempt(1, 1, 5, 50, 150, "succeeded"), attempt(2, 1, 5, 160, 160.001, "failed")])
    (lane,) = picture.lanes
    assert lane.label == "runner 5" and lane.state == "unknown"  # a pruned runner still gets a lane
    first, second = lane.bars
    assert first.clipped_left and first.x == picture.plot_left
    assert second.width == timeline.MIN_BAR_WIDTH
    assert picture.ticks and all(picture.plot_left <= t.x <= picture.plot_right for t in picture.ticks)


def test_attempts_of_a_job_come_from_its_events() -> None:
    events = [
        {"kind": "enqueued", "attempt": 0, "runner_id": None, "at": at(0)},
        {"kind": "claimed", "attempt": 1, "runner_id": 1, "at": at(1)},
        {"kind": "crashed", "attempt": 1, "runner_id": 1, "at": at(5)},
        {"kind": "claimed", "attempt": 2, "runner_id": 2, "at": at(6)},
        {"kind": "succeeded", "attempt": 2, "runner_id": 2, "at": at(9)},
    ]
    got = [(a["attempt"], a["runner_id"], a["outcome"]) for a in timeline.attempts_of(events)]
    assert got == [(1, 1, "crashed"), (2, 2, "succeeded")]


def test_chart_stacks_outcomes_per_minute() -> None:
    rows = [{"minute": at(60 * i), "succeeded": i, "retried": 1 if i == 2 else 0, "failed": 0,
             "crashed": 0, "cancelled": 0, "run_seconds": 0.0} for i in range(3)]
    chart = views.chart(rows)
    assert chart["peak"] == 3
    assert {b.kind for b in chart["bars"]} == {"succeeded", "retried"}
    assert chart["total"]["succeeded"] == 3
    assert all(b.y >= 0 and b.height > 0 for b in chart["bars"])


def request(**environ) -> web.Request:
    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/actions/retry", "HTTP_HOST": "dash.example:8089"}
    base.update(environ)
    return web.Request.from_environ(base)


@pytest.mark.parametrize("headers, allowed", [
    ({"HTTP_SEC_FETCH_SITE": "same-origin"}, True),
    ({"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": "http://dash.example:8089"}, False),
    ({"HTTP_SEC_FETCH_SITE": "same-site"}, False),
    ({"HTTP_SEC_FETCH_SITE": "none"}, False),
    ({"HTTP_ORIGIN": "http://dash.example:8089"}, True),
    ({"HTTP_ORIGIN": "http://evil.example"}, False),
    ({"HTTP_ORIGIN": "null"}, False),
    ({"HTTP_REFERER": "http://dash.example:8089/jobs?status=failed"}, True),
    ({"HTTP_REFERER": "http://evil.example/dash.example:8089"}, False),
    ({}, False),
])
def test_posts_are_accepted_only_from_the_dashboards_own_pages(headers, allowed) -> None:
    assert web.same_origin(request(**headers)) is allowed


def test_basic_auth_checks_both_fields() -> None:
    def with_auth(text: str) -> web.Request:
        return request(HTTP_AUTHORIZATION="Basic " + base64.b64encode(text.encode()).decode())

    assert web.check_basic_auth(with_auth("ops:s3cret"), ("ops", "s3cret")) == "ops"
    for wrong in ("ops:nope", "nope:s3cret", "ops", ""):
        with pytest.raises(web.HTTPError) as caught:
            web.check_basic_auth(with_auth(wrong), ("ops", "s3cret"))
        assert caught.value.status == 401
        assert ("WWW-Authenticate", 'Basic realm="pgqueue dashboard", charset="UTF-8"') in caught.value.headers
    with pytest.raises(web.HTTPError):
        web.check_basic_auth(request(HTTP_AUTHORIZATION="Basic !!!"), ("ops", "s3cret"))


def test_a_loopback_dashboard_answers_only_to_loopback_names() -> None:
    for host in ("localhost:8089", "127.0.0.1:8089", "[::1]:8089", "127.0.0.2"):
        web.check_host(request(HTTP_HOST=host), frozenset({"loopback"}))
    with pytest.raises(web.HTTPError) as caught:
        web.check_host(request(HTTP_HOST="rebound.example:8089"), frozenset({"loopback"}))
    assert caught.value.status == 400


def test_binding_beyond_loopback_needs_credentials_or_no_auth() -> None:
    assert listening_policy("127.0.0.1", credentials=None, no_auth=False) == frozenset({"loopback"})
    assert listening_policy("localhost", credentials=("a", "b"), no_auth=False) is None
    with pytest.raises(errors.ConfigurationError, match="PGQUEUE_DASHBOARD_USER"):
        listening_policy("0.0.0.0", credentials=None, no_auth=False)
    assert listening_policy("0.0.0.0", credentials=("a", "b"), no_auth=False) is None
    assert listening_policy("0.0.0.0", credentials=None, no_auth=True) is None


def test_argument_filters_are_json_containment() -> None:
    def parse(query: str, allowed: bool = True) -> views.JobFilter:
        return views.parse_filter(web.Request.from_environ({"QUERY_STRING": query}), args_allowed=allowed)

    assert parse("args=[42]").args == "[42]"
    assert parse("args=%7B%22user%22%3A+7%7D").kwargs == '{"user": 7}'
    assert parse("args=42").args == "[42]"
    assert "not JSON" in parse("args=%5B").error
    assert "redacts" in parse("args=[1]", allowed=False).error
    assert "unknown status" in parse("status=lost").error
    assert not parse("status=failed").narrowing and parse("status=failed&task=x").narrowing
    assert not parse("status=queued&queue=q").narrowing  # the claim index serves it


def test_windows_are_bounded() -> None:
    assert views.parse_window("15m") == dt.timedelta(minutes=15)
    assert views.parse_window("90s") == dt.timedelta(seconds=90)
    assert views.parse_window("30d") == views.TIMELINE_MAX
    for bad in ("", "15", "m", "-5m", "0s"):
        with pytest.raises(web.HTTPError):
            views.parse_window(bad)


def test_cache_computes_once_per_ttl() -> None:
    clock = [0.0]
    cache = Cache(2.0, clock=lambda: clock[0])
    calls = []
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get("k", compute) == 1
    assert cache.get("k", compute) == 1
    clock[0] = 2.5
    assert cache.get("k", compute) == 2
    assert cache.get("failing", lambda: "x", keep=lambda v: False) == "x"
    assert cache.get("failing", lambda: "y", keep=lambda v: False) == "y"  # not kept


# ------------------------------------------------------- queue and schedule controls

def test_limits_parse_from_the_form_or_say_what_is_wrong() -> None:
    from pgqueue.dashboard.controls import Limits, parse_limits

    assert parse_limits("5", "", "") == Limits(5, None, None)
    assert parse_limits("", "100", "1m") == Limits(None, 100, 60.0)
    assert parse_limits("", "3", "90") == Limits(None, 3, 90.0)  # a bare number is seconds
    assert parse_limits("", "", "") == Limits()
    for fields, says in ((("x", "", ""), "the concurrency limit must be a whole number"),
                         (("²", "", ""), "the concurrency limit must be a whole number"),
                         (("2147483648", "", ""), "from 1 to 2,147,483,647"),
                         (("9" * 5000, "", ""), "the concurrency limit must be a whole number"),
                         (("", "10", ""), "together"), (("", "", "1m"), "together"),
                         (("", "1.5", "1m"), "the rate limit must be a whole number"),
                         (("", "10", "fortnight"), "a duration such as 30s"),
                         (("", "10", "0"), "longer than zero")):
        with pytest.raises(ValueError, match=says):
            parse_limits(*fields)


def test_notices_read_only_what_an_action_wrote() -> None:
    from pgqueue.dashboard import actions, controls

    assert actions.notice("retried:2:3").text == "2 of 3 chosen jobs retried."
    assert controls.notice("pause_queue:1:0").text.startswith("Queue paused")
    assert controls.notice("resume_schedule:0:0").text == "The schedule was not paused: nothing changed."
    triggered = controls.notice("trigger_schedule:1:42")
    assert (triggered.link, triggered.link_text) == ("/jobs/42", "job 42")
    for junk in ("", "drop_table:1:0", "pause_queue:2:0", "pause_queue:1", "<b>:1:1", "retried:x:1"):
        assert actions.notice(junk) is None and controls.notice(junk) is None, junk


def test_path_text_undoes_the_latin_1_of_wsgi_servers() -> None:
    sent = "mail/eu west ü"
    assert web.path_text(sent.encode().decode("latin-1")) == sent  # what a WSGI server hands over
    assert web.path_text(sent) == sent  # real text (the Django view) stays as it is
    assert web.path_text("日本") == "日本"


def test_upcoming_ticks_follow_the_cursor_or_now() -> None:
    from pgqueue.dashboard.control_pages import upcoming

    row = {"cron": "0 * * * *", "timezone": "UTC", "paused": False, "orphaned": False,
           "next_run_at": T0, "now": T0 + dt.timedelta(hours=5, minutes=30)}
    assert upcoming(row, 3) == [T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)]
    # Paused: a resume fires the first tick after now, never the old cursor.
    assert upcoming({**row, "paused": True}, 2) == [T0 + dt.timedelta(hours=6), T0 + dt.timedelta(hours=7)]
    with pytest.raises(errors.ConfigurationError):
        upcoming({**row, "cron": "not a cron"})
