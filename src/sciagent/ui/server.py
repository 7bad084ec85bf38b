"""Serving the web UI: on 127.0.0.1 or a Unix socket only, behind a token, reachable through ``ssh -L``.

There is no way to listen on another address: a login node is shared, and the UI answers approvals
and cancels tasks on the user's allocation. From a laptop, ``ssh -L`` forwards a local port to the
server's port (or straight to its Unix socket), so the browser still talks to ``127.0.0.1``, the
only ``Host`` the gate lets in.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from pathlib import Path

from sciagent.agent.journal import JOURNAL_FILENAME
from sciagent.errors import UserError
from sciagent.listeners import Listener, listen, listen_unix, serve
from sciagent.redaction import register_secret
from sciagent.ui.app import create_app
from sciagent.ui.auth import QUERY, new_token

LOOPBACK = "127.0.0.1"
TUNNEL_PORT = 8765  # the laptop's end of ``ssh -L`` to a Unix socket (a TCP port keeps its own number)


def serve_ui(
    workspace: Path,
    *,
    port: int | None = None,
    uds: Path | None = None,
    token: str | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``workspace``'s UI until Ctrl-C or SIGTERM; print (``announce``) the URL and the ``ssh -L`` line.

    Args:
        port: listen on ``127.0.0.1:port``; 0 or None: any free port.
        uds: listen on a Unix socket at this path (mode 0600) instead.
        token: what every request must carry; None: a new random one.

    Raises:
        UserError: no journal in ``workspace``, both ``port`` and ``uds``, a port out of range or in use,
            a socket path that cannot be used.
    """
    if not (workspace / JOURNAL_FILENAME).is_file():
        raise UserError(
            f"--workspace {workspace.resolve()}: no journal there ({JOURNAL_FILENAME}), nothing to show; "
            "start work with `sciagent run` or `sciagent ask`, or give --workspace the directory holding it"
        )
    if port is not None and uds is not None:
        raise UserError("--port and --uds: choose one")
    if port is not None and not 0 <= port <= 65535:
        raise UserError(f"--port {port}: a port is 0 to 65535 (0: any free one)")
    token = token or new_token()
    register_secret(token)  # printed once, in the URL; never in a log line or the journal
    app = create_app(workspace, token=token)
    listener = listen_unix(uds) if uds is not None else listen(LOOPBACK, port or 0, "--port")
    for line in _instructions(listener, workspace, token):
        announce(line)
    serve(app, listener)


def _instructions(listener: Listener, workspace: Path, token: str) -> list[str]:
    """What to open, here and from another machine (the token is in the URL, as notebook servers do)."""
    login = f"{getpass.getuser()}@{socket.gethostname()}"
    query = f"/?{QUERY}={token}"
    if listener.uds is None:
        url = listener.url(query)
        tunnel = f"ssh -L {listener.port}:{LOOPBACK}:{listener.port} {login}"
        return [
            f"sciagent ui: the runs of {workspace.resolve()}, on {LOOPBACK}:{listener.port} (Ctrl-C stops)",
            f"open {url}",
            f"from another machine: {tunnel}  then open the same URL there",
        ]
    url = f"http://{LOOPBACK}:{TUNNEL_PORT}{query}"
    tunnel = f"ssh -L {TUNNEL_PORT}:{listener.uds.resolve()} {login}"
    return [
        f"sciagent ui: the runs of {workspace.resolve()}, on {listener.where()} (Ctrl-C stops)",
        f"to open it in a browser: {tunnel}  then open {url}",
    ]
