"""Keys and tokens never leave memory: not in output, logs (even at DEBUG), errors or workspace files.

A key is planted in a profile's env var, a Globus token in the token file; every CLI path that
touches them runs with ``--log-level DEBUG`` against the scripted OpenAI-protocol server (success,
401, a 401 that echoes the key back, an unreachable port), then everything written is searched.
``ask``, ``chat``, ``eval``, ``mcp serve --token-env`` and a session using an ``[mcp.NAME]`` server
with a bearer token each get their secret echoed by a tool and by the model, and the journal,
reports and logs are searched; the control is a marker echoed beside it, which is written, and the
secret seen by the endpoint. (``chem`` hands out no credential; ``run`` resolves its model's key in
the same ``llm.auth`` as ``ask``.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from openai_server import status_reply, text_reply, tool_call_reply
from sciagent.llm import auth
from test_mcp_client import http_external  # noqa: F401 (a fixture)

SECRET = "sk-test-SECRET-123"
GLOBUS_SECRET = "globus-access-SECRET-456"
REFRESH_SECRET = "globus-refresh-SECRET-789"
SCIAGENT = [sys.executable, "-m", "sciagent"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai_server) -> Path:
    """A directory with a config naming the scripted server, a planted key and a stored Globus login."""
    for name in ("ALCF_ACCESS_TOKEN", "OPENAI_API_KEY", "SCIAGENT_LLM", "SCIAGENT_DEFAULT_LLM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SCIAGENT_TOKEN_FILE", str(tmp_path / "xdg" / "sciagent" / "tokens.json"))
    monkeypatch.setenv("LAB_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    url = openai_server.base_url
    # The user's own config: one in the working directory may not send the Globus login elsewhere.
    (tmp_path / "xdg" / "sciagent").mkdir(parents=True)
    (tmp_path / "xdg" / "sciagent" / "config.toml").write_text(
        f'[llm.lab]\nbase_url = "{url}"\nmodel = "m"\napi_key_env = "LAB_KEY"\nauth = "env"\n'
        "max_retries = 0\n\n"
        f'[llm.facility]\nbase_url = "{url}"\nmodel = "m"\nauth = "globus"\nmax_retries = 0\n\n'
        '[llm.down]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\napi_key_env = "LAB_KEY"\n'
        'auth = "env"\nmax_retries = 0\ntimeout_s = 5\n'
    )
    auth._write_tokens(
        {
            "access_token": GLOBUS_SECRET,
            "refresh_token": REFRESH_SECRET,
            "expires_at_seconds": int(time.time()) + 3600,
            "scope": auth.GATEWAY_SCOPE,
        }
    )
    return tmp_path


def sciagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCIAGENT, "--log-level", "DEBUG", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def assert_no_secret_written(home: Path, *outputs: subprocess.CompletedProcess[str]) -> None:
    for completed in outputs:
        for secret in (SECRET, GLOBUS_SECRET, REFRESH_SECRET):
            assert secret not in completed.stdout and secret not in completed.stderr, completed.args[-3:]
    token_file = auth.token_file()
    for path in home.rglob("*"):
        if path.is_file() and path != token_file:
            data = path.read_bytes()
            for secret in (SECRET, GLOBUS_SECRET, REFRESH_SECRET):
                assert secret.encode() not in data, path


def test_a_successful_check_sends_the_key_and_prints_none(home: Path, openai_server) -> None:
    # the round trip, the structured ask, the tool-call probe
    ready = (text_reply("ready"), text_reply('{"ready": true}'), text_reply("pong"))
    openai_server.script(*ready, *ready)
    lab = sciagent("llm", "check", "--llm", "lab", cwd=home)
    facility = sciagent("llm", "check", "--llm", "facility", cwd=home)
    assert lab.returncode == 0 and facility.returncode == 0, lab.stderr + facility.stderr
    assert "DEBUG" in lab.stderr  # the debug logs really were on
    sent = [r.headers["authorization"] for r in openai_server.requests]  # model listings included
    assert sent == [f"Bearer {SECRET}"] * 4 + [f"Bearer {GLOBUS_SECRET}"] * 4
    assert_no_secret_written(home, lab, facility)


def test_rejected_keys_are_not_echoed(home: Path, openai_server) -> None:
    openai_server.script(
        status_reply(401),
        status_reply(401, message=f"Incorrect API key provided: {SECRET}"),  # as some services do
        status_reply(401, message=f"invalid token {GLOBUS_SECRET}"),
    )
    runs = [
        sciagent("llm", "check", "--llm", "lab", cwd=home),
        sciagent("llm", "check", "--llm", "lab", cwd=home),
        sciagent("llm", "check", "--llm", "facility", cwd=home),
    ]
    for completed in runs:
        assert completed.returncode == 2, completed.stderr
        assert "HTTP 401" in completed.stderr and "sciagent auth login" in completed.stderr
    assert_no_secret_written(home, *runs)


def test_unreachable_endpoint_listings_and_status_print_no_secret(home: Path) -> None:
    down = sciagent("llm", "check", "--llm", "down", cwd=home)
    assert down.returncode == 1 and "could not reach" in down.stderr
    listing = sciagent("llm", "profiles", cwd=home)
    assert listing.returncode == 0 and "env LAB_KEY" in listing.stdout and "globus login" in listing.stdout
    status = sciagent("auth", "status", cwd=home)
    assert status.returncode == 0 and "expires" in status.stdout
    settings_dump = subprocess.run(
        [sys.executable, "-c", "from sciagent.config import Settings; print(Settings().model_dump_json())"],
        cwd=home, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert settings_dump.returncode == 0 and "lab" in json.loads(settings_dump.stdout)["llm"]
    assert_no_secret_written(home, down, listing, status, settings_dump)


# -- every command that hands out a credential registers it: journal, reports and logs never hold it ----

ECHO = "echo-MARKER-314"  # echoed beside each secret: the control that echoed text is written at all


def _echoing_model(openai_server, secret: str) -> None:
    """The scripted model echoes ``secret`` through a tool (its error quotes the argument) and its answer."""
    openai_server.script(
        tool_call_reply("structure_info", {"structure": f"{ECHO} {secret}"}),
        text_reply(f"The key is {secret}; {ECHO}."),
    )


def _assert_redacted(
    workspace: Path, secret: str, *outputs: subprocess.CompletedProcess[str], reports: bool = True
) -> None:
    """No file of the workspace (journal, reports: there when ``reports``) nor any output (logs at
    DEBUG) holds ``secret``; the journal does hold the marker echoed beside it."""
    for completed in outputs:
        assert secret not in completed.stdout + completed.stderr, completed.args
        assert "DEBUG" in completed.stderr
    files = [path for path in workspace.rglob("*") if path.is_file()]
    assert any(path.name == "report.html" for path in files) == reports
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert any(ECHO.encode() in path.read_bytes() for path in workspace.glob("journal.sqlite*"))


def _sent_to_the_model(openai_server, secret: str) -> None:
    """Control: the secret was in play: the endpoint got it as the key and read the tool's echo of it."""
    assert f"Bearer {SECRET}" in {r.headers.get("authorization") for r in openai_server.chat_requests()}
    assert any(secret in json.dumps(r.body["messages"]) for r in openai_server.chat_requests())


def test_ask_and_chat_never_write_a_key_the_model_and_a_tool_echo(home: Path, openai_server) -> None:
    _echoing_model(openai_server, SECRET)
    ask = sciagent("ask", "What is my key?", "--llm", "lab", "--approve-all", "--json", cwd=home)
    assert ask.returncode == 0, ask.stderr
    _echoing_model(openai_server, SECRET)
    chat = subprocess.run(
        [*SCIAGENT, "--log-level", "DEBUG", "chat", "--llm", "lab", "--approve-all"],
        cwd=home, input="What is my key?\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "[redacted]" in ask.stdout and "[redacted]" in chat.stdout  # the answer, scrubbed
    _sent_to_the_model(openai_server, SECRET)
    _assert_redacted(home / "sciagent-runs", SECRET, ask, chat)


def test_eval_never_writes_a_key_the_model_echoes(home: Path, openai_server) -> None:
    suite = home / "suite.yaml"
    suite.write_text(
        "tasks:\n  - id: key\n    prompt: What is my key?\n    checks:\n      - {kind: answer_attributed}\n"
    )
    _echoing_model(openai_server, SECRET)
    completed = sciagent("eval", str(suite), "--llm", "lab", cwd=home)
    assert completed.returncode in (0, 1) and "Traceback" not in completed.stderr, completed.stderr
    _sent_to_the_model(openai_server, SECRET)
    _assert_redacted(home / "sciagent-runs", SECRET, completed)


def test_mcp_serve_never_writes_its_own_bearer_token(home: Path) -> None:
    token = "mcp-serve-SECRET-" + "x" * 24
    log = home / "serve.err"
    with open(log, "w") as errors:
        server = subprocess.Popen(
            [*SCIAGENT, "--log-level", "DEBUG", "mcp", "serve", "--http", "127.0.0.1:0",
             "--token-env", "SERVE_TOKEN"],
            cwd=home, env={**os.environ, "SERVE_TOKEN": token}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"(http://127\.0\.0\.1:\d+/mcp)", log.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        echoed = anyio.run(_call_structure_info, found.group(1), token, f"{ECHO} {token}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert token in echoed  # control: the tool quoted the token back to the client that sent it
    served = subprocess.CompletedProcess(server.args, 0, "", log.read_text())
    _assert_redacted(home / "sciagent-runs", token, served, reports=False)


async def _call_structure_info(url: str, token: str, structure: str) -> str:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool("structure_info", {"structure": structure})
    return json.dumps([getattr(part, "text", "") for part in result.content])


def test_an_mcp_servers_bearer_token_is_never_written(
    home: Path,
    openai_server,
    http_external: tuple[str, str],  # noqa: F811 (the imported fixture)
) -> None:
    url, token = http_external
    config = home / "xdg" / "sciagent" / "config.toml"
    config.write_text(config.read_text() + f'\n[mcp.web]\nurl = "{url}"\ntoken_env = "WEB_TOKEN"\n')
    openai_server.script(
        tool_call_reply("web.refuse", {"reason": f"{ECHO} {token}"}), text_reply(f"It said {token}.")
    )
    completed = subprocess.run(
        [*SCIAGENT, "--log-level", "DEBUG", "ask", "Refuse.", "--llm", "lab", "--mcp", "web",
         "--approve-all"],
        cwd=home, env={**os.environ, "WEB_TOKEN": token}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert any(token in json.dumps(r.body["messages"]) for r in openai_server.chat_requests())  # control
    _assert_redacted(home / "sciagent-runs", token, completed)
