"""The dashboard inside a Django project: a view that hands the request to the WSGI app, staff
only by default.

::

    # urls.py
    from django.urls import include, path
    from pgqueue.dashboard import make_app
    from pgqueue.dashboard.django import dashboard_urls
    from myproject.tasks import app

    urlpatterns = [path("pgqueue/", include(dashboard_urls(make_app(app))))]

Django has no way to mount a WSGI application in ``urls.py``; this view is the adapter. It
sets ``SCRIPT_NAME`` to the prefix the view is included at (every URL the dashboard writes
stays under it) and ``REMOTE_USER`` to the Django user (named in the reason of each action's
event); ``environ["pgqueue.django.request"]`` is the Django request, for an ``authorize`` hook::

    make_app(app, actions=True,
             authorize=lambda environ, action:
                 environ["pgqueue.django.request"].user.has_perm("myapp.manage_jobs"))

Access: ``permission(request) -> bool``, by default an active staff user. Anonymous users go
to the login page, others get 403. The view is exempt from Django's CSRF middleware: the
dashboard refuses every POST that does not come from its own pages (``Sec-Fetch-Site``,
``Origin``), and its forms carry no Django token.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .wsgi import Dashboard

Permission = Callable[[Any], bool]


def staff_only(request: Any) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def dashboard_view(dashboard: "Dashboard", *, permission: Permission | None = staff_only) -> Callable[..., Any]:
    """A Django view serving ``dashboard``; include it with a ``subpath`` URL parameter that
    captures the rest of the path (:func:`dashboard_urls` does). ``permission=None`` lets
    everyone in (the project protects the URL itself)."""
    from django.core.exceptions import PermissionDenied
    from django.http import HttpResponse
    from django.views.decorators.csrf import csrf_exempt

    def view(request: Any, subpath: str = "") -> Any:
        if permission is not None and not permission(request):
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                return _to_login(request)
            raise PermissionDenied("the pgqueue dashboard is for staff users")
        full = request.path
        script_name = full[: len(full) - len(subpath)] if subpath and full.endswith(subpath) else full
        body = request.body
        environ = {k: v for k, v in request.META.items() if isinstance(k, str)}
        environ.update({
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": script_name.rstrip("/"),
            "PATH_INFO": "/" + subpath,
            "QUERY_STRING": request.META.get("QUERY_STRING", ""),
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": request.META.get("CONTENT_TYPE", ""),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": request.scheme,
            "pgqueue.django.request": request,
        })
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            environ["REMOTE_USER"] = user.get_username()
        else:
            environ.pop("REMOTE_USER", None)
        status_headers: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status_headers["status"] = int(status.split(" ", 1)[0])
            status_headers["headers"] = headers

        chunks = dashboard(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        response = HttpResponse(content, status=status_headers["status"])
        for name, value in status_headers["headers"]:
            if name.lower() == "content-length":
                continue
            response[name] = value
        return response

    return csrf_exempt(view)


def _to_login(request: Any) -> Any:
    from django.conf import settings
    from django.contrib.auth.views import redirect_to_login
    from django.urls import NoReverseMatch, reverse

    try:
        login_url = reverse("admin:login")
    except NoReverseMatch:
        login_url = settings.LOGIN_URL
    return redirect_to_login(request.get_full_path(), login_url)


def dashboard_urls(dashboard: "Dashboard", *, permission: Permission | None = staff_only) -> list[Any]:
    """URL patterns for ``include()``: every path below the prefix goes to the dashboard."""
    from django.urls import re_path

    view = dashboard_view(dashboard, permission=permission)
    return [re_path(r"^(?P<subpath>.*)$", view, name="pgqueue-dashboard")]
