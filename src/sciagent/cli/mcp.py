"""``sciagent mcp serve | tools``: the catalogue for MCP clients, and what an external MCP server offers."""

from __future__ import annotations

import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.table import Table

from sciagent.cli.common import UnsandboxedOption, exits_on_error, fail, load_settings
from sciagent.compute.sites import resolve_site
from sciagent.config import Settings
from sciagent.console import err_console, out_console
from sciagent.mcp.client import McpConnection, check_names
from sciagent.mcp.http import Address, listen, serve_http
from sciagent.mcp.server import serve_stdio
from sciagent.tools.registry import ToolRegistry
from sciagent.workflows.mcp_session import served_catalogue

mcp_app = typer.Typer(
    help="MCP both ways: serve sciagent's tools to MCP clients, list an external MCP server's tools.",
    no_args_is_help=True,
)

WorkspaceOption = Annotated[Path | None, typer.Option("--workspace", help="where runs and sessions live")]


@mcp_app.command()
def serve(
    http: Annotated[
        str | None,
        typer.Option("--http", metavar="HOST:PORT", help="streamable HTTP, not stdio (port 0: any free one)"),
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", metavar="VAR", help="env var holding the bearer token HTTP clients send"),
    ] = None,
    site: Annotated[str, typer.Option("--site", help="where simulations run (sciagent sites)")] = "local",
    allow_unsandboxed_code: UnsandboxedOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve every catalogue tool over MCP: stdio by default, streamable HTTP with --http.

    Simulations are tasks of the workspace: a later server (or `sciagent show`) finds what an earlier one
    started.
    """
    settings = _settings(workspace)
    token = _token(token_env, http)
    with exits_on_error():
        resolve_site(site, settings.sites)  # an unknown site: one line now, not a failed simulate later
        address = Address.parse(http) if http else None
        sock = listen(address, token) if address else None
        # Ctrl-C is how a server is stopped: the tasks' states are journalled on the way out, exit 0.
        served = served_catalogue(settings, site, allow_unsandboxed_code)
        with suppress(KeyboardInterrupt), served as (server, run_id):
            if address is None or sock is None:
                anyio.run(serve_stdio, server)
            else:
                _announce(address.url(sock.getsockname()[1]), settings, run_id, token is not None)
                serve_http(server, address, sock, token)


@mcp_app.command("tools")
def list_tools(
    name: Annotated[str, typer.Argument(help="an [mcp.NAME] server of sciagent.toml")],
    as_json: Annotated[bool, typer.Option("--json", help="names, descriptions and argument schemas")] = False,
) -> None:
    """The tools an external MCP server adds to a session with --mcp NAME (allow-list applied)."""
    settings = load_settings()
    with exits_on_error():
        check_names([name], settings.mcp)
        connection = McpConnection(name, settings.mcp[name], _warn)
        listed = connection.open()
    try:
        tools = ToolRegistry.of(connection.tools(listed))
    finally:
        connection.close()
    if as_json:
        typer.echo(json.dumps(tools.describe()))
        return
    table = Table("tool", "cost")
    table.add_column("description", overflow="fold")
    for tool in tools:
        table.add_row(tool.name, tool.cost, tool.description)
    out_console.print(table)


def _token(token_env: str | None, http: str | None) -> str | None:
    """The bearer token from ``token_env`` (only for HTTP); a one-line error if it is unset."""
    if token_env is None:
        return None
    if http is None:
        fail("--token-env goes with --http: a stdio client starts the server itself and needs no token")
    token = os.environ.get(token_env, "").strip()
    if not token:
        fail(f"--token-env {token_env}: that environment variable is not set or is empty")
    return token


def _announce(url: str, settings: Settings, run_id: str, with_token: bool) -> None:
    """Where the HTTP server listens (on stderr: stdout is for results)."""
    needs = ", bearer token required" if with_token else ""
    err_console.print(
        f"serving sciagent's tools at {url} (workspace {settings.workspace.resolve()}, run {run_id}{needs}); "
        "Ctrl-C stops",
        highlight=False, markup=False, soft_wrap=True,
    )  # fmt: skip


def _settings(workspace: Path | None) -> Settings:
    settings = load_settings()
    return settings.model_copy(update={"workspace": workspace}) if workspace else settings


def _warn(message: str) -> None:
    err_console.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)
