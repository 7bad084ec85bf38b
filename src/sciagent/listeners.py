"""Listening sockets only their owner should use, and serving an ASGI app on one (MCP over HTTP, the web UI).

Loopback is not a trust boundary: on a login node every other user can connect to ``127.0.0.1``. So a
TCP listener always wants a token, a shared secret of at least ``MIN_TOKEN_CHARS`` characters from an
environment variable (never a flag: flags show in ``ps``), which the app compares in constant time. A
Unix socket is created with mode 0600 (the umask is set before ``bind``, so it is never briefly open),
and the kernel lets no other user connect.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from sciagent.errors import Terminated, UserError

MIN_TOKEN_CHARS = 32
UDS_HOST = "localhost"  # the host of the URL a client uses over a Unix socket
GRACE_S = 3.0  # open streams (server-sent events) get this long to close on Ctrl-C or SIGTERM


@dataclass(frozen=True)
class Listener:
    """A listening socket and how clients reach it.

    Attributes:
        sock: bound and listening (TCP or Unix).
        host: the address listened on; ``UDS_HOST`` for a Unix socket.
        port: the port listened on (a free one when 0 was asked for); None for a Unix socket.
        uds: the Unix socket's path (removed when serving ends); None for TCP.
    """

    sock: socket.socket
    host: str
    port: int | None = None
    uds: Path | None = None

    def url(self, path: str = "") -> str:
        """The URL of ``path`` here (over the socket, for a Unix one)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}{'' if self.port is None else f':{self.port}'}{path}"

    def where(self, path: str = "") -> str:
        """``url(path)``, said for a person: a Unix socket's URL names no real host."""
        if self.uds is None:
            return self.url(path)
        return f"{self.url(path)} over the Unix socket {self.uds.resolve()} (mode 0600)"


def check_token(token: str, variable: str, named: str | None = None) -> str:
    """``token`` if it is long enough to resist guessing.

    Args:
        variable: the environment variable it came from.
        named: how the error names its source (default: ``variable``).

    Raises:
        UserError: shorter than ``MIN_TOKEN_CHARS``, with a way to make a good one.
    """
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(
            f"{named or variable}: the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} "
            f"are needed; make one with: export {variable}=$(openssl rand -hex 24)"
        )
    return token


def listen(host: str, port: int, flag: str) -> Listener:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Args:
        flag: the option that chose the address, named in the error.

    Raises:
        UserError: the address cannot be bound (in use, not ours).
    """
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise UserError(
            f"{flag}: cannot listen on {host}:{port}: {exc.strerror or exc}; choose another {flag}"
        ) from exc
    return Listener(sock, host, port=sock.getsockname()[1])


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
    return Listener(sock, UDS_HOST, uds=path)


def serve(app: ASGIApp, listener: Listener) -> None:
    """Serve ``app`` on ``listener`` until Ctrl-C or SIGTERM, then return; a Unix socket is removed.

    uvicorn stops gracefully on either signal, then raises it again to the handler it found: SIGTERM's
    is made ``Terminated`` here (its default would kill the process before the socket is removed), and
    both end in a normal return, so the caller's clean-up runs and the exit status is 0. Main thread only.
    """
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=GRACE_S
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[listener.sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.sock.close()
        if listener.uds is not None:
            with suppress(OSError):
                listener.uds.unlink()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated by SIGTERM")


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
