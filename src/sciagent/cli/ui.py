"""``sciagent ui``: watch, approve and steer the workspace's runs from a browser."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from sciagent.cli.common import exits_on_error, fail, settings_for
from sciagent.listeners import check_token
from sciagent.ui.server import serve_ui

TOKEN_ENV = "SCIAGENT_UI_TOKEN"
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")  # goes into a URL and a cookie unquoted


def ui_command(
    port: Annotated[
        int | None,
        typer.Option(
            "--port", metavar="PORT", help="listen on 127.0.0.1:PORT (default and 0: any free port)"
        ),
    ] = None,
    uds: Annotated[
        Path | None,
        typer.Option("--uds", metavar="PATH", help="listen on a Unix socket (mode 0600) instead of a port"),
    ] = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", help="where runs and sessions live")
    ] = None,
) -> None:
    """Serve the workspace's runs as a live web page on 127.0.0.1 (or a Unix socket), behind a token.

    Prints the URL to open, token included, and the `ssh -L` line that opens it from a laptop. The
    token is new each time, or the value of SCIAGENT_UI_TOKEN (32+ characters) to keep one. Ctrl-C stops.
    """
    settings = settings_for(workspace)
    with exits_on_error():
        serve_ui(settings.workspace, port=port, uds=uds, token=_token(), announce=_announce)


def _token() -> str | None:
    """``SCIAGENT_UI_TOKEN`` if set (never a flag: flags show in ``ps``), checked; None: make a new one."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    if not TOKEN_CHARACTERS.fullmatch(token):
        fail(
            f"{TOKEN_ENV}: use letters, digits and . _ ~ - only; make one with: "
            f"export {TOKEN_ENV}=$(openssl rand -hex 24)"
        )
    return check_token(token, TOKEN_ENV)


def _announce(line: str) -> None:
    typer.echo(line)  # flushed at once: a script (or a test) reads the URL while the server runs
