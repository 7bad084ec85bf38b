"""Serving over streamable HTTP, behind a bearer token.

The token is a shared secret from an environment variable (never a flag: flags show in ``ps``); every
request must carry ``Authorization: Bearer <token>``, else it is answered 401 by the SDK's bearer
middleware. Without a token the server listens only on a loopback address: anyone who can reach a
port on another interface could otherwise start simulations as you.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn
from mcp.server import Server
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from sciagent.errors import UserError

MCP_PATH = "/mcp"


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

    @property
    def loopback(self) -> bool:
        """Only this machine can connect: ``localhost`` or a loopback IP (names may resolve anywhere)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}{MCP_PATH}"


@dataclass(frozen=True)
class SharedToken:
    """The SDK's ``TokenVerifier`` for one shared secret (compared in constant time)."""

    secret: str

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.secret.encode()):
            return AccessToken(token=token, client_id="sciagent-mcp-client", scopes=[])
        return None


def listen(address: Address, token: str | None) -> socket.socket:
    """A bound, listening socket for ``address``; refused without a token on a non-loopback address.

    Raises:
        UserError: no token for a non-loopback address, or the address cannot be bound.
    """
    if token is None and not address.loopback:
        raise UserError(
            f"refusing to serve on {address.host} without a token: anyone who reaches it could run tools "
            "as you; pass --token-env VAR (a variable holding a long random secret) or listen on 127.0.0.1"
        )
    try:
        return socket.create_server(
            (address.host, address.port), family=socket.AF_INET6 if ":" in address.host else socket.AF_INET
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {address.host}:{address.port}: {exc.strerror or exc}") from exc


def serve_http(server: Server, address: Address, sock: socket.socket, token: str | None) -> None:
    """Serve ``server`` on ``sock`` until interrupted (Ctrl-C or SIGTERM)."""
    port = sock.getsockname()[1]
    auth: dict[str, Any] = {}
    if token is not None:
        base = address.url(port).removesuffix(MCP_PATH)
        settings = AuthSettings(issuer_url=base, resource_server_url=None, validate_token_resource=False)
        auth = {"auth": settings, "token_verifier": SharedToken(token)}
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=address.host, **auth)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
