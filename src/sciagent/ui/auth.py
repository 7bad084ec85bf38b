"""The web UI's gate: every request carries the token, from this host's loopback name, and changes come
from our own page.

Loopback is not a trust boundary: every user of a login node can reach ``127.0.0.1``, and a web page
in the user's own browser can send requests there too. So the gate, outermost around the app, asks
of every request:

- a ``Host`` that is a loopback name: a page of another site whose name was re-pointed at 127.0.0.1
  (DNS rebinding) sends its own name, and is refused;
- the token, in the ``sciagent_ui_PORT`` cookie or the ``X-Sciagent-Token`` header, compared in constant
  time (a browser shares cookies across the ports of one host: each UI's cookie is named after its
  port, so two UIs tunnelled to one laptop do not log each other out). ``GET ...?token=T``, the URL
  ``sciagent ui`` prints, sets the cookie (HttpOnly, SameSite=Strict) and redirects to the same URL
  without the token, so it stays out of history and ``Referer``;
- for anything but GET and HEAD, the header (a browser attaches the cookie to a forged cross-site form
  too, never the header) and an ``Origin`` that is absent or this very host.

Every response gets the security headers below (those the app set itself, e.g. report.html's
``Content-Security-Policy: sandbox``, are kept).
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "sciagent_ui"
HEADER = "X-Sciagent-Token"
QUERY = "token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
READ_METHODS = frozenset({"GET", "HEAD"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
}
NO_TOKEN = (
    "this sciagent ui needs its token: open the URL that `sciagent ui` printed "
    "(http://127.0.0.1:PORT/?token=...), or send the token in the X-Sciagent-Token header"
)


def new_token() -> str:
    """A fresh random token (256 bits), for a server started without ``SCIAGENT_UI_TOKEN``."""
    return secrets.token_urlsafe(32)


class TokenGate:
    """Pure ASGI middleware: refuses (403) what the module docstring lists, passes the rest to ``app``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here: closed before they open
            await send({"type": "websocket.close", "code": 1008})
            return
        send = _with_security_headers(send)
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await _refuse(request, refusal)(scope, receive, send)
        elif request.method == "GET" and QUERY in request.query_params:
            await self._login(request)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> str | None:
        """Why ``request`` is refused, in one line; None when it may pass."""
        host = request.headers.get("host", "")
        if _hostname(host) not in LOOPBACK_HOSTS:
            return (
                f"the Host {host!r} is not a loopback name: open the UI as http://127.0.0.1:PORT/ "
                "(through `ssh -L` from another machine)"
            )
        if request.method == "GET" and QUERY in request.query_params:
            return None if self._valid(request.query_params[QUERY]) else NO_TOKEN
        if request.method in READ_METHODS:
            cookie = request.cookies.get(cookie_name(host))
            if self._valid(request.headers.get(HEADER)) or self._valid(cookie):
                return None
            return NO_TOKEN
        if not self._valid(request.headers.get(HEADER)):
            return (
                f"a {request.method} needs the token in the {HEADER} header (the cookie alone is not enough)"
            )
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return f"a {request.method} from the page of another site ({origin}) is refused"
        return None

    def _valid(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self._token)

    def _login(self, request: Request) -> Response:
        """The cookie for the token in the URL, and a redirect to the same URL without it."""
        rest = urlencode([(key, value) for key, value in request.query_params.multi_items() if key != QUERY])
        response = RedirectResponse(
            request.url.path + (f"?{rest}" if rest else ""),
            status_code=303,
            headers={"Cache-Control": "no-store"},
        )
        name = cookie_name(request.headers.get("host", ""))
        response.set_cookie(name, self._token.decode(), path="/", httponly=True, samesite="strict")
        return response


def cookie_name(host: str) -> str:
    """The login cookie's name for the UI reached as ``host``: ``sciagent_ui_8765``, or ``sciagent_ui``
    where the ``Host`` names no port."""
    port = host.rpartition("]")[2] if host.startswith("[") else host
    port = port.rpartition(":")[2] if ":" in port else ""
    return f"{COOKIE}_{port}" if port.isdigit() else COOKIE


def _hostname(host: str) -> str:
    """The name in a ``Host`` header without its port: ``[::1]:8765`` → ``::1``."""
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    return name.lower()


def _refuse(request: Request, reason: str) -> Response:
    """403 with ``reason``: JSON for the API (the page shows its ``error``), plain text for a person."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": reason}, status_code=403)
    return PlainTextResponse(f"403 Forbidden: {reason}\n", status_code=403)


def _with_security_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
        await send(message)

    return sending
