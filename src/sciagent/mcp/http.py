"""Serving over streamable HTTP: on a TCP port behind a bearer token, or on a Unix socket only we can open.

Loopback is not a trust boundary (``sciagent.listeners`` makes the sockets): a TCP listener always wants a
token, and a request without ``Authorization: Bearer <token>`` is answered 401 by the SDK's bearer
middleware. On a Unix socket (mode 0600, which the kernel lets no other user connect to) the token is
optional.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from mcp.server import Server
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings

from sciagent import listeners
from sciagent.errors import UserError
from sciagent.listeners import Listener, check_token, listen_unix

# Listener, check_token and listen_unix: the MCP command's names for what sciagent.listeners makes.
__all__ = [
    "MCP_PATH",
    "Address",
    "Listener",
    "SharedToken",
    "check_token",
    "listen",
    "listen_unix",
    "serve_http",
]

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


@dataclass(frozen=True)
class SharedToken:
    """The SDK's ``TokenVerifier`` for one shared secret (compared in constant time)."""

    secret: str

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.secret.encode()):
            return AccessToken(token=token, client_id="sciagent-mcp-client", scopes=[])
        return None


def listen(address: Address) -> Listener:
    """A listening TCP socket for ``address`` (whose port 0 becomes a free one).

    Raises:
        UserError: the address cannot be bound.
    """
    return listeners.listen(address.host, address.port, "--http")


def serve_http(server: Server, listener: Listener, token: str | None) -> None:
    """Serve ``server`` on ``listener`` until interrupted (Ctrl-C or SIGTERM); a Unix socket is removed
    after.

    Args:
        token: the bearer token every request must carry; ``None`` only on a Unix socket.
    """
    auth: dict[str, Any] = {}
    if token is not None:
        settings = AuthSettings(
            issuer_url=listener.url(), resource_server_url=None, validate_token_resource=False
        )
        auth = {"auth": settings, "token_verifier": SharedToken(token)}
    # The Host check stops DNS rebinding, i.e. a browser page reaching a TCP port; no browser reaches
    # a Unix socket, and a client's URL there names no real host.
    security = None
    if listener.uds is not None:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, host=listener.host, transport_security=security, **auth
    )
    listeners.serve(app, listener)
