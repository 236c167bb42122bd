"""``pgqueue dashboard``: the dashboard on the standard library's WSGI server, one thread per
request, and the rule for where it may listen.

Where it may listen: on a loopback address (the default, 127.0.0.1) anyone may open it who can
reach that address, i.e. users of this machine, so it answers only to loopback Host names
(a web page elsewhere cannot reach it through DNS rebinding). Anywhere else it needs
credentials (``PGQUEUE_DASHBOARD_USER`` and ``PGQUEUE_DASHBOARD_PASSWORD``, HTTP basic
authentication; put TLS in front of it) or an explicit ``--no-auth`` (behind an
authenticating proxy).

For production, any WSGI server runs :func:`pgqueue.dashboard.make_app` as well
(``gunicorn 'myapp:dashboard'``, waitress), or mount it in the web app itself.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
from typing import TYPE_CHECKING, Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .. import errors
from .web import is_loopback

if TYPE_CHECKING:
    from ..app import App
    from .wsgi import Dashboard

logger = logging.getLogger(__name__)


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("%s %s", self.address_string(), format % args)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def listening_policy(host: str, *, credentials: tuple[str, str] | None, no_auth: bool) -> frozenset[str] | None:
    """The Host names to answer (None: any), or ConfigurationError when ``host`` may not be
    bound as configured."""
    loopback = is_loopback(host) or _resolves_to_loopback(host)
    if loopback:
        # Without credentials, only loopback names: a page on another site cannot make a
        # browser on this machine read the dashboard by pointing its own name at 127.0.0.1.
        return None if credentials else frozenset({"loopback"})
    if credentials is None and not no_auth:
        raise errors.ConfigurationError(
            f"the dashboard would listen on {host}, beyond this machine, without credentials: set "
            "PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD (HTTP basic authentication; put "
            "TLS in front), or pass --no-auth if a proxy in front of it authenticates")
    return None


def _resolves_to_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def make_server(dashboard: "Dashboard", host: str, port: int) -> _ThreadingServer:
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    try:
        server = server_class((host, port), _Handler)
    except OSError as exc:
        raise errors.ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    server.set_app(dashboard)
    return server


def run(app: "App", *, host: str = "127.0.0.1", port: int = 8089, actions: bool = False,
        no_auth: bool = False, announce: Callable[[str], None] = print,
        stop: threading.Event | None = None) -> int:
    """Serve the dashboard of ``app`` until interrupted (or ``stop`` is set); exit code."""
    from . import make_app

    settings = app.settings
    credentials = None
    if settings.dashboard_user or settings.dashboard_password:
        if not (settings.dashboard_user and settings.dashboard_password):
            raise errors.ConfigurationError(
                "set both PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD, or neither")
        credentials = (settings.dashboard_user, settings.dashboard_password)
    allowed = listening_policy(host, credentials=credentials, no_auth=no_auth)
    dashboard = make_app(app, actions=actions, credentials=credentials, allowed_hosts=allowed)
    server = make_server(dashboard, host, port)
    bound_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    access = ("basic authentication" if credentials else
              "no authentication (--no-auth)" if not is_loopback(host) else "this machine only")
    announce(f"pgqueue dashboard on http://{shown}:{bound_port}/ ({access}; actions "
             f"{'on' if actions else 'off'}); Ctrl-C stops it")
    if actions and credentials is None and not is_loopback(host):
        logger.warning("actions are on and anyone who reaches %s:%s may retry, cancel and delete jobs, "
                       "and pause queues and schedules",
                       host, bound_port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="pgqueue-dashboard", daemon=True)
    thread.start()
    try:
        if stop is not None:
            stop.wait()
        else:
            thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        dashboard.close()
    return 0
