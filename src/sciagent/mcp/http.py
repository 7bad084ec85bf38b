"""Serving over streamable HTTP: on a TCP port behind a bearer token, or on a Unix socket only we can open.

Loopback is not a trust boundary: on a login node every other user can connect to ``127.0.0.1``. So a
TCP listener always wants a token, a shared secret of at least ``MIN_TOKEN_CHARS`` characters from an
environment variable (never a flag: flags show in ``ps``), compared in constant time; a request without
``Authorization: Bearer <token>`` is answered 401 by the SDK's bearer middleware. A Unix socket is
created with mode 0600 (the umask is set before ``bind``, so it is never briefly open), and the kernel
lets no other user connect: there the token is optional.
"""

from __future__ import annotations

import hmac
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server import Server
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings

from sciagent.errors import UserError

MCP_PATH = "/mcp"
MIN_TOKEN_CHARS = 32
UDS_HOST = "localhost"  # the host of the URL a client uses over a Unix socket


@dataclass(frozen=True)
class Address:
    """Where to listen: ``HOST:PORT`` as typed (``[::1]:8000`` for IPv6); port 0 takes a free one."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT``; ``UserError`` naming what is wrong otherwise."""
        host, colon, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not colon or not host or not port.isdigit() or int(port) > 65535:
            raise UserError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8765 (got {text!r})")
        return cls(host, int(port))

    def url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}{MCP_PATH}"


@dataclass(frozen=True)
class Listener:
    """A listening socket and how clients reach it.

    Attributes:
        sock: bound and listening (TCP or Unix).
        host: the address listened on (the SDK checks ``Host`` headers against a loopback one).
        url: the URL a client sends requests to (over the socket, for a Unix one).
        where: the same, said for a person.
        security: the SDK's ``Host``/``Origin`` checks; None: its default for ``host``.
    """

    sock: socket.socket
    host: str
    url: str
    where: str
    security: TransportSecuritySettings | None = None


@dataclass(frozen=True)
class SharedToken:
    """The SDK's ``TokenVerifier`` for one shared secret (compared in constant time)."""

    secret: str

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.secret.encode()):
            return AccessToken(token=token, client_id="sciagent-mcp-client", scopes=[])
        return None


def check_token(token: str, variable: str) -> str:
    """``token`` if it is long enough to resist guessing.

    Raises:
        UserError: shorter than ``MIN_TOKEN_CHARS``, with a way to make a good one.
    """
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(
            f"--token-env {variable}: the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} "
            f"are needed; make one with: export {variable}=$(openssl rand -hex 24)"
        )
    return token


def listen(address: Address) -> Listener:
    """A listening TCP socket for ``address`` (whose port 0 becomes a free one).

    Raises:
        UserError: the address cannot be bound.
    """
    try:
        sock = socket.create_server(
            (address.host, address.port), family=socket.AF_INET6 if ":" in address.host else socket.AF_INET
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {address.host}:{address.port}: {exc.strerror or exc}") from exc
    url = address.url(sock.getsockname()[1])
    return Listener(sock, address.host, url, url)


def listen_unix(path: Path) -> Listener:
    """A listening Unix socket at ``path`` with mode 0600; a stale socket there is replaced.

    Raises:
        UserError: ``path`` is something other than a socket (a file, a link), a server answers there,
            or the socket cannot be made (no such directory, a path too long for a socket).
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UserError(f"--uds {path}: {exc.strerror or exc}") from exc
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise UserError(f"--uds {path}: it exists and is not a socket; choose another path")
        if _answers(path):
            raise UserError(f"--uds {path}: a server is listening there already")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if mode is not None:
            path.unlink()
        with _umask(0o177):
            sock.bind(str(path))
        sock.listen()
    except OSError as exc:
        sock.close()
        raise UserError(f"--uds {path}: cannot listen there: {exc.strerror or exc}") from exc
    url = f"http://{UDS_HOST}{MCP_PATH}"
    where = f"{url} over the Unix socket {path.resolve()} (mode 0600)"
    # The Host check stops DNS rebinding, i.e. a browser page reaching a TCP port; no browser reaches
    # a Unix socket, and a client's URL there names no real host.
    return Listener(
        sock, UDS_HOST, url, where, TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )


def serve_http(server: Server, listener: Listener, token: str | None) -> None:
    """Serve ``server`` on ``listener`` until interrupted (Ctrl-C or SIGTERM); a Unix socket is removed
    after.

    Args:
        token: the bearer token every request must carry; ``None`` only on a Unix socket.
    """
    auth: dict[str, Any] = {}
    if token is not None:
        base = listener.url.removesuffix(MCP_PATH)
        settings = AuthSettings(issuer_url=base, resource_server_url=None, validate_token_resource=False)
        auth = {"auth": settings, "token_verifier": SharedToken(token)}
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, host=listener.host, transport_security=listener.security, **auth
    )
    sock = listener.sock
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
    finally:
        if path:
            with suppress(OSError):
                os.unlink(path)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(str(path)) == 0


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
