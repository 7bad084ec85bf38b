"""``sciagent ui`` as a user starts it: a real process on a workspace with a journal, reached over HTTP.

It listens on 127.0.0.1 (or a Unix socket, mode 0600) only, prints the URL with its token and the
``ssh -L`` line, refuses every request without the token, and ends cleanly on SIGTERM. Bad flags are
one line and exit 2.
"""

from __future__ import annotations

import getpass
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import typer

from sciagent.agent.journal import Journal
from sciagent.cli import ui as cli_ui
from sciagent.errors import UserError
from sciagent.ui.auth import COOKIE, cookie_name
from sciagent.ui.server import serve_ui

pytestmark = pytest.mark.timeout(300)
SCIAGENT = [sys.executable, "-m", "sciagent"]
GOAL = "villin stability at 300 K"
URL = re.compile(r"open (http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9._~-]+))")


@dataclass
class Served:
    """A running ``sciagent ui`` and what it printed."""

    process: subprocess.Popen
    out: Path
    err: Path

    def printed(self) -> str:
        return self.out.read_text()

    def stop(self) -> int:
        """SIGTERM, as ``kill`` or a batch job's end sends it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace whose journal holds one run."""
    with Journal(tmp_path / "ws" / "journal.sqlite") as journal:
        journal.create_run(GOAL, {})
    return tmp_path / "ws"


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "SCIAGENT_UI_TOKEN"}
    return {**env, **extra}


@contextmanager
def _ui(*args: str, cwd: Path, ready: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``sciagent ui ARGS`` in a process of its own, once it printed ``ready``; stopped after."""
    out, err = cwd / "ui.out", cwd / "ui.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([*SCIAGENT, "ui", *args], cwd=cwd, env=env or _env(),
                                   stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)  # fmt: skip
    served = Served(process, out, err)
    try:
        deadline = time.monotonic() + 60
        while ready not in served.printed():
            assert process.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        yield served
    finally:
        served.stop()


def test_two_uis_in_one_browser_keep_their_own_logins(workspace: Path, tmp_path: Path) -> None:
    """A browser sends a host's cookies to all its ports: each UI's cookie is named after its port, so
    logging in to a second UI (another workspace, tunnelled to the same laptop) keeps the first."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), second_dir.mkdir()
    with (
        _ui("--workspace", str(workspace), "--port", "0", cwd=first_dir, ready="ssh -L") as first,
        _ui("--workspace", str(workspace), "--port", "0", cwd=second_dir, ready="ssh -L") as second,
        httpx.Client(follow_redirects=True, timeout=10) as browser,
    ):
        (url_a, port_a, token_a), (url_b, port_b, _) = _printed_url(first), _printed_url(second)
        assert browser.get(url_a).status_code == 200 and browser.get(url_b).status_code == 200
        assert browser.get(f"http://127.0.0.1:{port_a}/api/runs").status_code == 200  # still logged in
        assert browser.get(f"http://127.0.0.1:{port_b}/api/runs").status_code == 200
        # Control: one cookie name for every port, as before; the second login replaced the first's.
        browser.cookies.set(COOKIE, browser.cookies[cookie_name(f"127.0.0.1:{port_b}")])
        browser.cookies.delete(cookie_name(f"127.0.0.1:{port_a}"))
        assert token_a not in str(browser.cookies.jar)
        assert browser.get(f"http://127.0.0.1:{port_a}/api/runs").status_code == 403


def _one_line_error(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """The one ``error:`` line of ``sciagent ui ARGS``, which must exit 2 without serving."""
    completed = subprocess.run([*SCIAGENT, "ui", *args], cwd=cwd, env=env or _env(), capture_output=True,
                               text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ") and not completed.stdout
    return lines[0]


def test_the_printed_url_opens_the_ui_and_nothing_without_the_token(workspace: Path) -> None:
    with _ui("--workspace", "ws", "--port", "0", cwd=workspace.parent, ready="ssh -L") as served:
        url, port, token = _printed_url(served)
        login = f"{getpass.getuser()}@{socket.gethostname()}"
        assert f"ssh -L {port}:127.0.0.1:{port} {login}" in served.printed()
        with httpx.Client(follow_redirects=True, timeout=10) as browser:
            page = browser.get(url)
            assert page.status_code == 200 and token not in str(page.url)
            assert page.history[0].status_code == 303
            assert browser.cookies[cookie_name(f"127.0.0.1:{port}")] == token
            runs = browser.get(f"http://127.0.0.1:{port}/api/runs")
            assert runs.status_code == 200 and [run["goal"] for run in runs.json()["runs"]] == [GOAL]
        for path in ("/", "/api/runs", f"/?token={token[:-1]}"):
            refused = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert refused.status_code == 403, path
        assert served.stop() == 0
    errors = served.err.read_text()
    assert "Traceback" not in errors and token not in errors


def test_it_listens_on_loopback_only(workspace: Path) -> None:
    """Another machine cannot reach the port. Control: a socket bound to every address, on the same
    interface, is reached."""
    outside = _non_loopback_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    with _ui("--workspace", "ws", cwd=workspace.parent, ready="ssh -L") as served:
        port = int(_printed_url(served)[1])
        with socket.socket() as probe:
            assert probe.connect_ex((outside, port)) != 0
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the same port, on loopback
        with socket.create_server(("0.0.0.0", 0)) as everywhere, socket.socket() as probe:
            assert probe.connect_ex((outside, everywhere.getsockname()[1])) == 0


def test_a_unix_socket_is_0600_serves_its_owner_and_is_removed_on_sigterm(workspace: Path) -> None:
    path = workspace.parent / "ui.sock"
    with _ui("--uds", str(path), "--workspace", "ws", cwd=workspace.parent, ready="ssh -L") as served:
        printed = served.printed()
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        login = f"{getpass.getuser()}@{socket.gethostname()}"
        assert f"ssh -L 8765:{path.resolve()} {login}" in printed
        found = re.search(r"then open http://127\.0\.0\.1:8765/\?token=(\S+)", printed)
        assert found, printed
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, follow_redirects=True, timeout=10) as over_socket:
            page = over_socket.get(f"http://localhost/?token={found.group(1)}")
            assert page.status_code == 200
            assert over_socket.get("http://localhost/api/runs").json()["runs"][0]["goal"] == GOAL
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=10) as no_token:
            assert no_token.get("http://localhost/api/runs").status_code == 403
        assert served.stop() == 0
    assert not path.exists()
    assert "Traceback" not in served.err.read_text()


def test_the_token_may_come_from_the_environment_checked(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "t" * 40
    env = _env(SCIAGENT_UI_TOKEN=token)
    with _ui("--workspace", "ws", cwd=workspace.parent, ready="ssh -L", env=env) as served:
        assert _printed_url(served)[2] == token
    short = _one_line_error("--workspace", "ws", cwd=workspace.parent, env=_env(SCIAGENT_UI_TOKEN="t" * 31))
    assert "SCIAGENT_UI_TOKEN: the token has 31 characters, at least 32 are needed" in short
    monkeypatch.setenv("SCIAGENT_UI_TOKEN", "t;" * 20)  # would not survive a URL and a cookie unquoted
    with pytest.raises(typer.Exit) as odd:
        cli_ui._token()
    assert odd.value.exit_code == 2
    assert "SCIAGENT_UI_TOKEN: use letters, digits and . _ ~ - only" in capsys.readouterr().err


def test_bad_flags_are_one_line_and_exit_2(workspace: Path) -> None:
    cwd = workspace.parent
    both = _one_line_error("--workspace", "ws", "--port", "0", "--uds", "ui.sock", cwd=cwd)
    assert "--port and --uds: choose one" in both
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        in_use = _one_line_error("--workspace", "ws", "--port", str(port), cwd=cwd)
    assert f"--port: cannot listen on 127.0.0.1:{port}" in in_use and "choose another --port" in in_use


def test_serve_ui_refuses_what_it_cannot_serve_before_serving(workspace: Path, tmp_path: Path) -> None:
    def refused(where: Path = workspace, **flags: Any) -> str:
        with pytest.raises(UserError) as error:
            serve_ui(where, announce=pytest.fail, **flags)
        return str(error.value)

    assert "a port is 0 to 65535" in refused(port=70000)
    empty = tmp_path / "empty"
    empty.mkdir()
    no_journal = refused(empty)
    assert f"--workspace {empty.resolve()}: no journal there" in no_journal and "`sciagent run`" in no_journal
    (tmp_path / "notes.txt").write_text("mine")
    assert "it exists and is not a socket" in refused(uds=tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    missing = refused(uds=tmp_path / "no" / "such" / "ui.sock")
    assert "--uds" in missing and "cannot listen there" in missing


def _printed_url(served: Served) -> tuple[str, str, str]:
    """The URL ``sciagent ui`` said to open, its port and its token."""
    found = URL.search(served.printed())
    assert found, served.printed()
    return found.group(1), found.group(2), found.group(3)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback (the one a route out would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        except OSError:
            return None
        address = udp.getsockname()[0]
    return None if address.startswith("127.") else address
