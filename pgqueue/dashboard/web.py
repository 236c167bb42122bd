"""Just enough WSGI for the dashboard: requests, responses, and the security rules every
response and every POST goes through. No framework, so it mounts the same way in Flask,
Django, any ASGI server (through a2wsgi) or the stdlib server of ``pgqueue dashboard``.

Rules:

* Every URL the dashboard writes starts with the mount point (``SCRIPT_NAME``), so it works
  under any prefix.
* Every response carries a strict Content-Security-Policy (no inline script or style, nothing
  from another origin), ``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy: same-origin``
  and, except static files, ``Cache-Control: no-store``.
* A POST is accepted only from the dashboard's own pages: ``Sec-Fetch-Site: same-origin``, or,
  from a client that does not send that header, an ``Origin`` (else ``Referer``) naming this
  host. Forms need no token.
* Optional HTTP basic authentication (constant-time comparison) and an allow-list of Host
  names (against DNS rebinding of a dashboard bound to loopback without credentials).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Iterable, Mapping

MAX_BODY = 256 * 1024

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass
class Request:
    environ: dict[str, Any]
    method: str
    path: str  # below the mount point, always starting with "/"
    script_name: str  # the mount point, "" at the root, never ending with "/"
    query: dict[str, list[str]]
    _form: dict[str, list[str]] | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> "Request":
        script = (environ.get("SCRIPT_NAME") or "").rstrip("/")
        path = environ.get("PATH_INFO") or "/"
        if not path.startswith("/"):
            path = "/" + path
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING") or "", keep_blank_values=False)
        return cls(environ, (environ.get("REQUEST_METHOD") or "GET").upper(), path, script, query)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        if not values:
            return default
        value = values[-1].strip()
        return value if value else default

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    @property
    def live(self) -> bool:
        """A poll by the page's script (it swaps the live regions in)."""
        return self.header("X-Pgqueue-Live") == "1"

    @property
    def form(self) -> dict[str, list[str]]:
        if self._form is None:
            self._form = {}
            content_type = (self.environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise HTTPError(400, "bad Content-Length") from None
            if length > MAX_BODY:
                raise HTTPError(413, f"request body larger than {MAX_BODY} bytes")
            if length and content_type == "application/x-www-form-urlencoded":
                body = self.environ["wsgi.input"].read(length)
                self._form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        return self._form

    def form_value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[-1] if values else None

    @property
    def user(self) -> str | None:
        return self.environ.get("REMOTE_USER") or None

    @property
    def remote_addr(self) -> str | None:
        return self.environ.get("REMOTE_ADDR") or None

    @property
    def host(self) -> str:
        host = self.environ.get("HTTP_HOST")
        if host:
            return host
        name = self.environ.get("SERVER_NAME", "")
        port = self.environ.get("SERVER_PORT", "")
        default = "443" if self.environ.get("wsgi.url_scheme") == "https" else "80"
        return name if port in ("", default) else f"{name}:{port}"

    def url(self, path: str, **params: Any) -> str:
        """An absolute path under the mount point, with a query of the params that are set."""
        query = urllib.parse.urlencode(
            [(k, v) for k, v in params.items() if v is not None and v != ""], doseq=True)
        return self.script_name + path + (("?" + query) if query else "")

    @property
    def full_path(self) -> str:
        qs = self.environ.get("QUERY_STRING")
        return self.script_name + self.path + (("?" + qs) if qs else "")


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    cache: str = "no-store"

    def finish(self, start_response: Callable[..., Any]) -> list[bytes]:
        phrase = HTTPStatus(self.status).phrase
        headers = [("Content-Type", self.content_type), ("Content-Length", str(len(self.body))),
                   ("Cache-Control", self.cache), *SECURITY_HEADERS, *self.headers]
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]


def path_text(value: str) -> str:
    """A piece of PATH_INFO as the text it spells. WSGI servers hand the path over as bytes
    decoded as latin-1 (PEP 3333), so a UTF-8 queue name arrives as mojibake; a host that
    passes real text (the Django view) is left as it is."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def redirect(location: str, status: int = 303) -> Response:
    return Response(b"", status, "text/plain; charset=utf-8", [("Location", location)])


def text(body: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(body.encode(), status, content_type)


# ------------------------------------------------------------------ the rules

def same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of this dashboard (see the module docstring)."""
    site = request.header("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() == "same-origin"
    for header in ("Origin", "Referer"):
        value = request.header(header)
        if value:
            if value.strip() == "null":
                return False
            return urllib.parse.urlsplit(value.strip()).netloc.lower() == request.host.lower()
    return False


def check_basic_auth(request: Request, credentials: tuple[str, str]) -> str:
    """The user name when the request carries these credentials; else HTTPError 401."""
    challenge = [("WWW-Authenticate", 'Basic realm="pgqueue dashboard", charset="UTF-8"')]
    header = request.environ.get("HTTP_AUTHORIZATION") or ""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise HTTPError(401, "this dashboard needs a user name and password", challenge)
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise HTTPError(401, "malformed Authorization header", challenge) from None
    want_user, want_password = credentials
    # Both compared, always, in constant time: no early exit says which one was wrong.
    ok_user = hmac.compare_digest(user.encode(), want_user.encode())
    ok_password = hmac.compare_digest(password.encode(), want_password.encode())
    if not (ok_user and ok_password):
        raise HTTPError(401, "wrong user name or password", challenge)
    return user


def host_name(host: str) -> str:
    """The name part of a Host header: no port, no IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_loopback(host: str) -> bool:
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_host(request: Request, allowed: Mapping[str, bool] | frozenset[str] | set[str]) -> None:
    """Refuse a Host header outside ``allowed`` (names; "loopback" allows every loopback name)."""
    name = host_name(request.host)
    if name in allowed or ("loopback" in allowed and is_loopback(name)):
        return
    raise HTTPError(400, f"Host {request.host!r} is not one this dashboard answers to "
                         "(it is bound to loopback without credentials: open it as localhost or 127.0.0.1)")
