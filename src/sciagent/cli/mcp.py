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

from sciagent.cli.common import UnsandboxedOption, duration_flag, exits_on_error, fail, load_settings
from sciagent.compute.sites import resolve_site
from sciagent.config import Settings
from sciagent.console import err_console, out_console
from sciagent.mcp.client import McpConnection, check_names
from sciagent.mcp.http import MCP_PATH, Address, Listener, check_token, listen, listen_unix, serve_http
from sciagent.mcp.server import serve_stdio
from sciagent.redaction import register_secret
from sciagent.tools.registry import ToolRegistry
from sciagent.workflows.sessions.mcp_session import ServeOptions, served_catalogue

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
        typer.Option("--token-env", metavar="VAR", help="env var holding the HTTP bearer token (32+ chars)"),
    ] = None,
    uds: Annotated[
        Path | None,
        typer.Option("--uds", metavar="PATH", help="streamable HTTP on a Unix socket (mode 0600), no token"),
    ] = None,
    site: Annotated[str, typer.Option("--site", help="where simulations run (sciagent sites)")] = "local",
    allow_tool: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-tool",
            metavar="TOOL",
            help="also serve TOOL if it spends an allocation, destroys or runs model-written code, and run "
            "its calls that would ask for approval (repeatable)",
        ),
    ] = None,
    wait_for_approval: Annotated[
        str | None,
        typer.Option(
            "--wait-for-approval",
            metavar="DURATION",
            help="a call that must ask waits this long for `sciagent approve` before it is refused",
        ),
    ] = None,
    allow_unsandboxed_code: UnsandboxedOption = False,
    takeover: Annotated[
        bool,
        typer.Option(
            "--takeover",
            help="serve though the server recorded on another host never released the workspace (only if "
            "that process is gone)",
        ),
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve every catalogue tool over MCP: stdio by default, streamable HTTP with --http (a bearer token
    required) or --uds.

    Simulations are tasks of the workspace: a later server (or `sciagent show`) finds what an earlier one
    started.
    """
    settings = _settings(workspace)
    with exits_on_error():
        token = _token(token_env, http, uds)
        resolve_site(site, settings.sites)  # an unknown site: one line now, not a failed simulate later
        listener: Listener | None = None
        if http:
            listener = listen(Address.parse(http))
        elif uds:
            listener = listen_unix(uds)
        # Ctrl-C is how a server is stopped: the tasks' states are journalled on the way out, exit 0.
        wait_s = duration_flag("--wait-for-approval", wait_for_approval) if wait_for_approval else 0.0
        options = ServeOptions(site, allow_unsandboxed_code, tuple(allow_tool or ()), wait_s, takeover)
        served = served_catalogue(settings, options)
        with suppress(KeyboardInterrupt), served as (server, run_id):
            if listener is None:
                anyio.run(serve_stdio, server)
            else:
                _announce(listener.where(MCP_PATH), settings, run_id, token is not None)
                serve_http(server, listener, token)


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


def _token(token_env: str | None, http: str | None, uds: Path | None) -> str | None:
    """The bearer token from ``token_env``: required with --http (any user of this machine can reach a
    port, loopback included), optional with --uds; a one-line error if missing, unset or short."""
    if http and uds:
        fail("--http and --uds: choose one")
    if token_env is None:
        if http:
            fail(
                "--http needs a bearer token: every user of this machine can reach its ports, 127.0.0.1 "
                "included; export VAR=$(openssl rand -hex 24) and pass --token-env VAR, or serve on a "
                "Unix socket only you can open with --uds PATH"
            )
        return None
    if not (http or uds):
        fail("--token-env goes with --http or --uds: a stdio client starts the server itself")
    token = os.environ.get(token_env, "").strip()
    if not token:
        fail(f"--token-env {token_env}: that environment variable is not set or is empty")
    register_secret(token)  # never in the journal or a log line
    return check_token(token, token_env, f"--token-env {token_env}")


def _announce(where: str, settings: Settings, run_id: str, with_token: bool) -> None:
    """Where the HTTP server listens (on stderr: stdout is for results); never the token itself."""
    needs = ", bearer token required" if with_token else ""
    err_console.print(
        f"serving sciagent's tools at {where} (workspace {settings.workspace.resolve()}, run {run_id}"
        f"{needs}); Ctrl-C stops",
        highlight=False, markup=False, soft_wrap=True,
    )  # fmt: skip


def _settings(workspace: Path | None) -> Settings:
    settings = load_settings()
    return settings.model_copy(update={"workspace": workspace}) if workspace else settings


def _warn(message: str) -> None:
    err_console.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)
