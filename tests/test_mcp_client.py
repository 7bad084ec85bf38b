"""External MCP servers in a session: ``[mcp.NAME]`` in sciagent.toml, ``--mcp NAME``, ``sciagent mcp tools``.

The external server is tests/mcp_external_server.py, written against the ``mcp`` SDK alone, run over
stdio (a child of the session) or streamable HTTP behind a token. The model is the scripted
OpenAI-protocol server (tests/openai_server.py); everything between them is sciagent's real code.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openai_server import RecordedRequest, text_reply, tool_call_reply
from sciagent.agent.journal import Journal

# xdist_group: pgrep sees every worker's servers (make test runs the suite on pytest-xdist workers)
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("mcp-external")]
TESTS = Path(__file__).parent
QUESTION = "What is 2 plus 3?"


def _workspace(tmp_path: Path, url: str, mcp_tables: str) -> Path:
    """A project directory whose sciagent.toml has the scripted model and ``mcp_tables``; the external
    server is copied in, so that its command line names this test alone."""
    shutil.copy(TESTS / "mcp_external_server.py", tmp_path / "ext_server.py")
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n{mcp_tables}'
    )
    return tmp_path


def _stdio_table(tmp_path: Path, name: str = "ext", allowed: str = '["add", "refuse", "die"]') -> str:
    command = json.dumps([sys.executable, str(tmp_path / "ext_server.py")])
    return f"[mcp.{name}]\ncommand = {command}\ntools = {allowed}\ntimeout_s = 20\n"


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _ask(cwd: Path, *mcp: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    flags = [part for name in mcp for part in ("--mcp", name)]
    # an external server's tools reach outside, which asks first: approved here, as a user would
    completed = _run(cwd, "ask", QUESTION, "--llm", "scripted", "--json", "--approve-all", *flags)
    return completed, json.loads(completed.stdout.splitlines()[-1]) if completed.stdout.strip() else {}


def _tool_messages(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


def _children_of(server_script: Path) -> str:
    """The processes still running ``server_script`` (pgrep's listing; nothing is signalled)."""
    return subprocess.run(["pgrep", "-af", str(server_script)], capture_output=True, text=True).stdout


def test_an_external_servers_tools_join_the_session_namespaced_and_allow_listed(
    tmp_path: Path, openai_server
) -> None:
    openai_server.script(
        tool_call_reply("ext__add", {"a": 2, "b": 3}),
        tool_call_reply("ext__refuse", {"reason": "testing"}),
        text_reply("The sum is 5."),
    )
    cwd = _workspace(tmp_path, openai_server.base_url, _stdio_table(tmp_path))
    completed, summary = _ask(cwd, "ext")
    assert completed.returncode == 0, completed.stderr
    assert summary["status"] == "answered" and summary["unattributed_numbers"] == []
    added, refused = summary["tool_calls"]
    assert (added["tool"], added["status"], added["result"]["structured"]) == ("ext.add", "ok", {"total": 5})
    assert refused["status"] == "failed" and "refused on purpose: testing" in refused["error"]

    first, second, third = openai_server.chat_requests()
    offered = {tool["function"]["name"]: tool["function"] for tool in first.body["tools"]}
    # allow-listed, and named as OpenAI's API allows (ext.add goes out as ext__add; see wire_name)
    assert {"ext__add", "ext__refuse", "ext__die"} <= set(offered) and "ext__shout" not in offered
    assert "structure_info" in offered  # the catalogue is all there too
    assert offered["ext__add"]["parameters"]["required"] == ["a", "b"]  # the server's own schema
    assert offered["ext__add"]["description"] == "[MCP server ext] Add two integers."
    assert '"total": 5' in _tool_messages(second)[0]
    assert "refused on purpose: testing" in _tool_messages(third)[-1]
    assert _children_of(tmp_path / "ext_server.py") == ""  # the child ended with the session


def test_a_server_that_cannot_start_or_dies_is_an_observation_and_the_session_answers(
    tmp_path: Path, openai_server
) -> None:
    openai_server.script(
        tool_call_reply("ext__die", {}),
        tool_call_reply("ext__add", {"a": 1, "b": 1}),
        text_reply("The external server is gone, so I cannot add the numbers."),
    )
    tables = _stdio_table(tmp_path) + '[mcp.broken]\ncommand = ["/nonexistent/mcp-server"]\n'
    completed, summary = _ask(_workspace(tmp_path, openai_server.base_url, tables), "broken", "ext")
    assert completed.returncode == 0, completed.stderr
    assert summary["status"] == "answered"
    assert [call["status"] for call in summary["tool_calls"]] == ["failed", "failed"]
    assert "MCP server ext did not answer die" in summary["tool_calls"][0]["error"]

    first = openai_server.chat_requests()[0]
    told = [m["content"] for m in first.body["messages"] if m["role"] == "user"]
    assert any("MCP server broken (/nonexistent/mcp-server) could not be started" in text for text in told)
    assert "broken." not in " ".join(tool["function"]["name"] for tool in first.body["tools"])
    with Journal.in_workspace(tmp_path / "sciagent-runs") as journal:
        warnings = [e.message for e in journal.events(summary["session_id"]) if e.level == "warning"]
    assert len(warnings) == 2, warnings  # one for the server that never started, one for the one that died
    assert "broken" in warnings[0] and "FileNotFoundError" in warnings[0]
    assert "MCP server ext did not answer die" in warnings[1]


def test_an_unknown_server_name_is_one_line_and_starts_nothing(tmp_path: Path, openai_server) -> None:
    completed, _ = _ask(_workspace(tmp_path, openai_server.base_url, _stdio_table(tmp_path)), "nosuch")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "no MCP server named 'nosuch' (configured: ext)" in completed.stderr
    assert openai_server.chat_requests() == []
    with Journal.in_workspace(tmp_path / "sciagent-runs") as journal:
        assert journal.list_runs() == []  # no session was left behind


@pytest.fixture
def http_external(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The external server over streamable HTTP on a free port, with a token; yields (url, token)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "ext-secret-token"
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "mcp_external_server.py"), "--http", str(port)],
        env={**os.environ, "EXT_TOKEN": token}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "the external server did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/mcp", token
    process.terminate()
    process.wait(timeout=30)


def test_mcp_tools_lists_a_servers_tools_over_stdio_and_over_http_with_its_token(
    tmp_path: Path, http_external: tuple[str, str]
) -> None:
    url, token = http_external
    tables = _stdio_table(tmp_path) + f'[mcp.web]\nurl = "{url}"\ntoken_env = "WEB_TOKEN"\n'
    cwd = _workspace(tmp_path, "http://127.0.0.1:9/v1", tables)

    listed = _run(cwd, "mcp", "tools", "ext")
    assert listed.returncode == 0, listed.stderr
    assert (
        "ext.add" in listed.stdout
        and "Add two integers." in listed.stdout
        and "ext.shout" not in listed.stdout
    )

    over_http = _run(cwd, "mcp", "tools", "web", "--json", env={**os.environ, "WEB_TOKEN": token})
    assert over_http.returncode == 0, over_http.stderr
    described = {tool["name"]: tool for tool in json.loads(over_http.stdout)}
    assert set(described) == {"web.add", "web.refuse", "web.die", "web.shout"}  # no allow-list: all
    assert described["web.shout"]["cost"] == "minutes"  # not read-only: a session asks before calling it
    assert described["web.add"]["arguments"]["required"] == ["a", "b"]

    refused = _run(cwd, "mcp", "tools", "web", env={**os.environ, "WEB_TOKEN": "wrong"})
    assert (
        refused.returncode == 1
        and "MCP server web at" in refused.stderr
        and "could not be started or reached" in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    unset = _run(cwd, "mcp", "tools", "web", env={k: v for k, v in os.environ.items() if k != "WEB_TOKEN"})
    assert unset.returncode == 2 and "its token_env WEB_TOKEN is not set" in unset.stderr
