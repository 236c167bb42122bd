"""pgqueue's web dashboard: queues, jobs, runners, the cross-runner timeline, schedules, health.

A plain WSGI application (Jinja2 templates, one small script of its own, no framework, nothing
loaded from another origin), so it runs under ``pgqueue dashboard`` or inside a web app::

    from pgqueue.dashboard import make_app
    dashboard = make_app(app)                       # read-only

    # Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/pgqueue": dashboard})

    # Django (urls.py): staff only by default
    from pgqueue.dashboard.django import dashboard_urls
    urlpatterns = [path("pgqueue/", include(dashboard_urls(dashboard)))]

    # ASGI (Starlette, FastAPI)
    from a2wsgi import WSGIMiddleware
    asgi_app.mount("/pgqueue", WSGIMiddleware(dashboard))

Every URL it writes is under its mount point. Install with ``pip install 'pgqueue[dashboard]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .wsgi import Authorize, Dashboard, Redact

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Dashboard", "make_app"]


def make_app(app: "App", *, actions: bool = False, authorize: Authorize | None = None,
             redact: Redact | None = None, credentials: tuple[str, str] | None = None,
             allowed_hosts: Iterable[str] | None = None, statement_timeout: float = 3.0,
             pool_size: int = 4, cache_seconds: float = 2.0, refresh: int = 5,
             title: str | None = None) -> Dashboard:
    """The dashboard of ``app``'s schema, as a WSGI application.

    * ``actions``: show and accept retry, cancel and delete of jobs, and the controls of queues
      (pause, resume, limits) and schedules (pause, resume, trigger) (off: the dashboard only
      reads, and every POST is refused).
    * ``authorize(environ, action) -> bool``: asked before showing or performing an action
      (``"retry"``, ``"cancel"``, ``"delete"``, ``"pause_queue"``, ``"resume_queue"``,
      ``"limit_queue"``, ``"pause_schedule"``, ``"resume_schedule"``, ``"trigger_schedule"``);
      ``environ`` is the WSGI environ (``REMOTE_USER`` is the user the host app or basic auth
      established).
    * ``redact(task, args, kwargs) -> (args, kwargs)``: what the pages show of a job's arguments
      (secrets out). With it set, the arguments filter is off (it would let anyone probe values).
    * ``credentials=(user, password)``: HTTP basic authentication on every URL.
    * ``allowed_hosts``: Host header names answered (``"loopback"`` for every loopback name);
      None: any (the host app decides).
    * ``statement_timeout``: seconds a panel's query may take before the panel says "timed out".
    * ``pool_size``: the dashboard's own connections (at most).
    * ``cache_seconds``: how long the overview's aggregates are shared between requests.
    * ``refresh``: default live-update interval of the pages (0, 2, 5, 10 or 30 s; each user
      picks their own, kept in the browser).
    """
    return Dashboard(app, actions=actions, authorize=authorize, redact=redact, credentials=credentials,
                     allowed_hosts=allowed_hosts, statement_timeout=statement_timeout,
                     pool_size=pool_size, cache_seconds=cache_seconds, refresh=refresh, title=title)
