"""An external MCP server for the client tests, written against the ``mcp`` SDK alone (no sciagent import).

``python mcp_external_server.py`` serves on stdin/stdout; ``... --http PORT`` serves streamable HTTP on
127.0.0.1:PORT, requiring the bearer token in the environment variable ``EXT_TOKEN``.
"""

from __future__ import annotations

import hmac
import os
import sys

from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel


class Sum(BaseModel):
    total: int


class EnvToken:
    """Accepts exactly the token in ``EXT_TOKEN``."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), os.environ["EXT_TOKEN"].encode()):
            return AccessToken(token=token, client_id="test", scopes=[])
        return None


def build(port: int | None) -> MCPServer:
    auth = {}
    if port is not None:
        base = f"http://127.0.0.1:{port}"
        auth = {
            "token_verifier": EnvToken(),
            "auth": AuthSettings(issuer_url=base, resource_server_url=None, validate_token_resource=False),
        }
    server = MCPServer("external-test-server", **auth)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> Sum:
        """Add two integers."""
        return Sum(total=a + b)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def refuse(reason: str) -> str:
        """Always fails, saying why."""
        raise ToolError(f"refused on purpose: {reason}")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def die() -> str:
        """Ends this server process at once, as a crash would."""
        os._exit(3)

    @server.tool()
    def shout(text: str) -> str:
        """The text in capitals."""
        return text.upper()

    return server


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        port = int(sys.argv[2])
        build(port).run("streamable-http", host="127.0.0.1", port=port)
    else:
        build(None).run()
