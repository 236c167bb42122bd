"""The dashboard as a WSGI application: routing, access control, rendering.

``Dashboard(app, ...)`` (made by :func:`pgqueue.dashboard.make_app`) is a plain WSGI callable.
Each request: the Host check and basic authentication when configured; then the page, whose
reads share one connection of the dashboard's pool; then the template. POSTs (actions on jobs,
controls of queues and schedules) pass the same-origin check, the ``actions`` switch and the
``authorize`` hook first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import mimetypes
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .. import errors
from ..version import __version__
from . import actions as action_module
from . import control_pages, controls, draw
from . import format as fmt
from . import views
from .reader import Cache, Reader
from .web import (HTTPError, Request, Response, check_basic_auth, check_host, path_text, redirect, same_origin,
                  text)

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

Authorize = Callable[[dict[str, Any], str], bool]
Redact = Callable[[str, Any, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class NavEntry:
    name: str
    path: str
    title: str


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    name: str
    template: str
    handler: Callable[..., dict[str, Any]]
    refresh: int  # default live-refresh interval of the page, seconds (0: off)
    section: str  # the navigation entry it belongs to (a job's page: "jobs")


class Dashboard:
    """The WSGI application (see :func:`pgqueue.dashboard.make_app` for the options)."""

    def __init__(self, app: "App", *, actions: bool = False, authorize: Authorize | None = None,
                 redact: Redact | None = None, credentials: tuple[str, str] | None = None,
                 allowed_hosts: Iterable[str] | None = None, statement_timeout: float = 3.0,
                 pool_size: int = 4, cache_seconds: float = 2.0, refresh: int = 5,
                 title: str | None = None) -> None:
        try:
            import jinja2
        except ImportError:  # pragma: no cover - the extra is missing
            raise errors.ConfigurationError(
                "the dashboard needs Jinja2: pip install 'pgqueue[dashboard]'") from None
        if credentials is not None:
            user, password = credentials
            if not user or not password:
                raise errors.ConfigurationError("dashboard credentials need a user name and a password")
        if refresh not in (0, 2, 5, 10, 30):
            raise errors.ConfigurationError(f"refresh must be 0 (off), 2, 5, 10 or 30 seconds, not {refresh!r}")
        self.app = app
        self.schema = app.settings.schema
        self.actions = actions
        self.authorize = authorize
        self.redact = redact
        self.credentials = credentials
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) if allowed_hosts else None
        self.refresh = refresh
        self.title = title or f"pgqueue · {self.schema}"
        self.reader = Reader(app.database.dsn, self.schema, pool_size=pool_size,
                             statement_timeout=statement_timeout,
                             connect_timeout=app.settings.connect_timeout)
        self.cache = Cache(cache_seconds)
        self._collector: Any = None
        self.nav: list[NavEntry] = []
        self.routes: list[Route] = []
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self._env.filters.update(fmt.FILTERS)
        self._static = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        self._add_builtin_pages()

    # ------------------------------------------------------------- pages

    def add_page(self, name: str, path: str, template: str, handler: Callable[..., dict[str, Any]], *,
                 title: str | None = None, refresh: int | None = None, section: str | None = None) -> None:
        """Add a page: ``path`` is a regular expression below the mount point whose named groups
        are passed to ``handler(page, **groups)`` (those named ``*_id`` as integers, the others
        as text); with ``title`` it appears in the navigation; ``section`` names the navigation
        entry a page without one is shown under."""
        self.routes.append(Route(re.compile(f"^{path}$"), name, template, handler,
                                 self.refresh if refresh is None else refresh, section or name))
        if title:
            plain = re.sub(r"\(.*?\)|[\^$]", "", path) or "/"
            self.nav.append(NavEntry(name, plain, title))

    def _add_builtin_pages(self) -> None:
        self.add_page("overview", "/", "overview.html", views.overview, title="Overview")
        self.add_page("queues", "/queues", "queues.html", control_pages.queues, title="Queues")
        self.add_page("queue", "/queues/(?P<queue>.+)", "queue.html", control_pages.queue, section="queues")
        self.add_page("jobs", "/jobs", "jobs.html", views.jobs, title="Jobs")
        self.add_page("job", r"/jobs/(?P<job_id>\d{1,19})", "job.html", views.job, section="jobs")
        self.add_page("timeline", "/timeline", "timeline.html", views.timeline, title="Timeline",
                      refresh=0)
        self.add_page("runners", "/runners", "runners.html", views.runners, title="Runners")
        self.add_page("runner", r"/runners/(?P<runner_id>\d{1,19})", "runner.html", views.runner,
                      section="runners")
        self.add_page("schedules", "/schedules", "schedules.html", control_pages.schedules, title="Schedules")
        self.add_page("schedule", "/schedules/(?P<schedule>.+)", "schedule.html", control_pages.schedule,
                      section="schedules")
        self.add_page("health", "/health", "health.html", views.health, title="Health")

    # ---------------------------------------------------------- redaction

    def redacted(self, task: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
        if self.redact is None or (args is None and kwargs is None):
            return args, kwargs
        try:
            return self.redact(task, args, kwargs)
        except Exception:
            logger.exception("the dashboard's redact hook failed for task %r: arguments hidden", task)
            return "(hidden: the redact hook failed)", None

    def may(self, request: Request, action: str) -> bool:
        if not self.actions:
            return False
        if self.authorize is None:
            return True
        try:
            return bool(self.authorize(request.environ, action))
        except Exception:
            logger.exception("the dashboard's authorize hook failed: %s refused", action)
            return False

    # ---------------------------------------------------------------- WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request.from_environ(environ)
        try:
            response = self.handle(request)
        except HTTPError as exc:
            response = self._error(request, exc)
        except Exception:
            logger.exception("dashboard: %s %s failed", request.method, request.path)
            response = self._error(request, HTTPError(500, "the dashboard failed on this page (see its log)"))
        body = response.finish(start_response)
        return [] if request.method == "HEAD" else body

    def close(self) -> None:
        self.reader.close()

    def handle(self, request: Request) -> Response:
        if self.allowed_hosts is not None:
            check_host(request, self.allowed_hosts)
        if self.credentials is not None:
            request.environ["REMOTE_USER"] = check_basic_auth(request, self.credentials)
        path = request.path
        if path.startswith("/static/"):
            return self._static_file(request, path[len("/static/"):])
        if path == "/robots.txt":
            return Response(b"User-agent: *\nDisallow: /\n", content_type="text/plain; charset=utf-8",
                            cache="public, max-age=86400")
        if path == "/healthz":
            return self._healthz(request)
        if path == "/metrics":
            return self._metrics(request)
        if path.startswith("/actions/"):
            return self._action(request, path[len("/actions/"):])
        if path != "/" and path.endswith("/"):
            return redirect(request.url(path.rstrip("/")), 308 if request.method == "POST" else 301)
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                if request.method not in ("GET", "HEAD"):
                    raise HTTPError(405, "this page only answers GET", [("Allow", "GET, HEAD")])
                return self._page(request, route, match.groupdict())
        raise HTTPError(404, f"no page at {request.script_name + path}")

    # -------------------------------------------------------------- render

    def _render(self, request: Request, template: str, context: dict[str, Any], *,
                page_name: str, refresh: int, status: int = 200, section: str | None = None) -> Response:
        now = dt.datetime.now(dt.timezone.utc)

        def url(path: str, **params: Any) -> str:
            return request.url(path, **params)

        def static(name: str) -> str:
            return request.url(f"/static/{name}", v=__version__)

        def when(moment: dt.datetime | None) -> Any:
            return fmt.when(moment, now)

        def ago(moment: dt.datetime | None) -> str:
            return fmt.ago(moment, now)

        # After an action, what it did ("retried:2:3", "pause_queue:1:0"); anything else is not shown.
        done = request.arg("done")
        notice = action_module.notice(done) or controls.notice(done)
        body = self._env.get_template(template).render(
            **context, url=url, static=static, when=when, ago=ago, now=now, nav=self.nav,
            page_name=page_name, section=section or page_name, refresh=refresh, title=self.title,
            version=__version__,
            actions_on=self.actions, may=lambda action: self.may(request, action),
            request=request, here=request.full_path, notice=notice, schema=self.schema,
            bulk_limit=action_module.BULK_LIMIT, draw_timeline=draw.timeline_svg)
        return Response(body.encode(), status)

    def _page(self, request: Request, route: Route, groups: dict[str, str]) -> Response:
        args = {k: int(v) if k.endswith("_id") else path_text(v) for k, v in groups.items()}
        with self.reader.session() as session:
            page = views.Page(self, request, session, dt.datetime.now(dt.timezone.utc))
            try:
                context = route.handler(page, **args)
            except views.Redirect as move:
                return redirect(move.location)
            context["problems"] = page.problems
            return self._render(request, route.template, context, page_name=route.name,
                                refresh=route.refresh, section=route.section)

    def _error(self, request: Request, exc: HTTPError) -> Response:
        if exc.status == 401 or request.path.startswith("/static/") or request.path == "/metrics":
            response = text(exc.message + "\n", exc.status)
        else:
            try:
                response = self._render(request, "error.html", {"status": exc.status, "message": exc.message,
                                                                "problems": []},
                                        page_name="error", refresh=0, status=exc.status)
            except Exception:
                logger.exception("dashboard: rendering the error page failed")
                response = text(exc.message + "\n", exc.status)
        response.headers.extend(exc.headers)
        return response

    # ------------------------------------------------------------- static

    def _static_file(self, request: Request, name: str) -> Response:
        path = self._static.get(name)
        if path is None:
            raise HTTPError(404, f"no static file {name!r}")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in ("application/javascript", "image/svg+xml"):
            content_type += "; charset=utf-8"
        return Response(path.read_bytes(), 200, content_type, cache="public, max-age=86400")

    # ------------------------------------------------------------ healthz

    def _healthz(self, request: Request) -> Response:
        with self.reader.session() as session:
            ping = session.read("dashboard_ping")
            maintenance = session.read("dashboard_maintenance") if ping.ok else None
        body: dict[str, Any] = {"status": "ok" if ping.ok else "unavailable", "schema": self.schema,
                                "version": __version__}
        if ping.ok and ping.first:
            body["database"] = {"ok": True, "server_version": ping.first["server_version"]}
        else:
            body["database"] = {"ok": False, "error": ping.problem}
        if maintenance is not None and maintenance.ok and maintenance.first:
            body["maintenance"] = {"last_pass_seconds_ago": maintenance.first["last_pass_seconds"],
                                   "passes": maintenance.first["passes"]}
        return Response((json.dumps(body) + "\n").encode(), 200 if ping.ok else 503,
                        "application/json")

    # ------------------------------------------------------------ metrics

    def _metrics(self, request: Request) -> Response:
        import importlib.util

        if importlib.util.find_spec("prometheus_client") is None:
            raise HTTPError(501, "the /metrics endpoint needs prometheus-client: "
                                 "pip install 'pgqueue[metrics]'")
        from ..metrics.cluster import ClusterCollector, exposition

        if self._collector is None:
            self._collector = ClusterCollector(self.reader)
        data, content_type = exposition(self._collector)
        return Response(data, 200, content_type)

    # ------------------------------------------------------------ actions

    def _action(self, request: Request, name: str) -> Response:
        action = action_module.ACTIONS.get(name)
        control = controls.CONTROLS.get(name)
        if action is None and control is None:
            raise HTTPError(404, f"no action {name!r}")
        if request.method != "POST":
            raise HTTPError(405, "actions are POST only", [("Allow", "POST")])
        if not same_origin(request):
            raise HTTPError(403, "refused: this request does not come from a page of this dashboard "
                                 "(cross-site, or without Origin/Sec-Fetch-Site)")
        if not self.actions:
            raise HTTPError(403, "actions are off on this dashboard (start it with --allow-actions, "
                                 "or make_app(..., actions=True))")
        if not self.may(request, name):
            raise HTTPError(403, f"you may not {control.refusal if control else name + ' jobs'} on this dashboard")
        if control is not None:
            return self._control(request, control)
        return self._job_action(request, action)

    def _job_action(self, request: Request, action: action_module.Action) -> Response:
        name = action.name
        back = self._back(request, "/jobs")
        with self.reader.session() as session:
            matching = None
            if request.form_value("matching") == "1" and request.form_value("confirm") != "yes":
                # Every job the filter lists, up to the bound: resolved to ids now, confirmed next.
                f = views.parse_filter(request, args_allowed=self.redact is None, form=True)
                if f.error:
                    raise HTTPError(400, f.error)
                page = views.Page(self, request, session, dt.datetime.now(dt.timezone.utc))
                matching = views.matching_ids(page, f, action_module.BULK_LIMIT)
                ids = matching["ids"]
                if not ids:
                    raise HTTPError(400, "no job matches this filter any more")
            else:
                ids = action_module.chosen_ids(request)
            if request.form_value("confirm") != "yes":
                summary = action_module.preview(session, action, ids)
                return self._render(request, "confirm.html",
                                    {"action": action, "ids": ids, "summary": summary, "back": back,
                                     "matching": matching, "problems": []},
                                    page_name="confirm", refresh=0)
            with _failures(action.title, "the jobs (someone holds them)"):
                done = action_module.perform(session, action, ids, action_module.reason(action, request))
        self.cache.clear()
        logger.info("dashboard: %s of %d job(s) by %s: %d changed", name, len(ids),
                    request.user or "anonymous", done)
        return redirect(_with_done(back, f"{action.verb}:{done}:{len(ids)}"))

    def _control(self, request: Request, control: controls.Control) -> Response:
        """A queue's or a schedule's control: the confirmation (or the form again, saying what is
        wrong), then the control itself (see :mod:`pgqueue.dashboard.controls`)."""
        chosen = controls.parse(request, control)
        back = self._back(request, controls.page_of(control, chosen.target))
        with self.reader.session() as session:
            page = views.Page(self, request, session, dt.datetime.now(dt.timezone.utc))
            state = controls.look_up(page, control, chosen.target)
            if chosen.problem or request.form_value("confirm") != "yes":
                return self._render(request, "confirm_control.html",
                                    {"control": control, "chosen": chosen, "state": state, "back": back,
                                     "problems": []},
                                    page_name="confirm", refresh=0, status=400 if chosen.problem else 200,
                                    section=f"{control.target}s")
            with _failures(control.title, "a lock (claims or fires in flight)"):
                outcome = controls.perform(session, chosen, controls.by(request))
        self.cache.clear()
        logger.info("dashboard: %s of %s %r by %s", control.name, control.target, chosen.target,
                    request.user or "anonymous")
        return redirect(_with_done(back, outcome.token(control)))

    def _back(self, request: Request, default: str) -> str:
        """Where to go after the action: the page it came from, if it is one of ours (else
        ``default``, a path under the mount point)."""
        back = request.form_value("back") or ""
        prefix = request.script_name + "/"
        parts = urllib.parse.urlsplit(back)
        if back and not parts.scheme and not parts.netloc and back.startswith(prefix) \
                and not back.startswith("//"):
            query = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(parts.query)
                                            if k != "done"])
            return parts.path + (("?" + query) if query else "")
        return request.url(default)


def _with_done(back: str, done: str) -> str:
    """``back`` with the ``done`` parameter the page reads its notice from."""
    separator = "&" if "?" in back else "?"
    return f"{back}{separator}{urllib.parse.urlencode({'done': done})}"


@contextlib.contextmanager
def _failures(title: str, waits_for: str) -> Iterator[None]:
    """An action's database errors as pages: a lock or statement timeout (503: nothing was
    changed, try again), any other database error (503, its message)."""
    import psycopg

    try:
        yield
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable):
        raise HTTPError(503, f"{title} timed out waiting for {waits_for}: nothing was changed; "
                             "try again") from None
    except psycopg.Error as exc:
        raise HTTPError(503, f"{title} failed: {' '.join(str(exc).split())}") from None
