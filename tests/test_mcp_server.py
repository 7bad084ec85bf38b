"""``sciagent mcp serve``: the catalogue over MCP, in memory, over stdio and over streamable HTTP.

Every client here is the ``mcp`` SDK's own ``Client`` (in-process, a stdio child, or a separate process
over HTTP: tests/mcp_catalogue_client.py); the server, the catalogue, the task board and OpenMM are
the real code. Simulations are 1 ps of villin in vacuum at 4 fs: seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from pydantic import BaseModel

from sciagent.config import Settings
from sciagent.mcp.background import BackgroundCall
from sciagent.mcp.server import BACKGROUND_NOTE, MAX_WAIT_S, catalogue_server
from sciagent.tools.registry import ToolContext, ToolRegistry, define_tool
from sciagent.tools.skills import SkillLibrary, SkillRecord, now_utc
from sciagent.workflows.catalogue import full_catalogue
from sciagent.workflows.sessions.mcp_session import ServeOptions, served_catalogue

pytestmark = pytest.mark.timeout(300)
TESTS = Path(__file__).parent
TOKEN_VAR = "SCIAGENT_TEST_TOKEN"


def _sciagent(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


# --- in memory -------------------------------------------------------------------------------------


def test_every_tool_is_served_with_its_schemas_and_its_errors_in_our_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    catalogue = full_catalogue()

    async def session(server) -> None:
        async with Client(server) as client:
            listing = {tool.name: tool for tool in (await client.list_tools()).tools}
            # nothing that spends an allocation, destroys or runs model-written code, unless allowed
            never = {"cancel_task", "submit_job", "release_job", "cancel_job", "hold_job"}
            served = [tool for tool in catalogue if tool.name not in never]
            assert list(listing) == [*(tool.name for tool in served), "background_call"]
            for tool in served:
                shown = listing[tool.name]
                if tool.cost == "hours":  # starts in the background: its result is the call's state
                    assert shown.description == tool.description + BACKGROUND_NOTE
                    assert shown.output_schema == BackgroundCall.model_json_schema(mode="serialization")
                else:
                    assert shown.description == tool.description
                    assert shown.output_schema == tool.result.model_json_schema(mode="serialization")
            assert listing["simulate"].input_schema == catalogue.get("simulate").parameters()
            wait = listing["wait_for_task"].input_schema["properties"]["timeout_s"]
            assert wait["maximum"] == MAX_WAIT_S  # no served call is asked to wait an hour

            info = await client.call_tool("structure_info", {"structure": "villin"})
            assert not info.is_error
            assert info.structured_content["total_atoms"] == 582
            assert json.loads(info.content[0].text) == info.structured_content

            wrong = await client.call_tool("structure_info", {"protein": "villin"})
            assert wrong.is_error and wrong.structured_content is None
            assert wrong.content[0].text == (
                "tool structure_info: argument 'structure': Field required; "
                "argument 'protein' is not one of its arguments"
            )
            unknown = await client.call_tool("fold_protein", {})
            assert unknown.is_error and unknown.content[0].text.startswith("no tool named 'fold_protein'")
            nobody = await client.call_tool("ask_user", {"question": "Which chain?"})  # a ToolFailed
            assert nobody.is_error and "no one can answer questions in this run" in nobody.content[0].text

    with served_catalogue(Settings(workspace=tmp_path / "ws")) as (server, _):
        anyio.run(session, server)


class Pause(BaseModel):
    seconds: float


class Paused(BaseModel):
    seconds: float


def pause(arguments: Pause, context: ToolContext) -> Paused:
    """Sleep for a while (a stand-in for a long tool)."""
    time.sleep(arguments.seconds)
    return Paused(seconds=arguments.seconds)


def test_a_running_call_reports_progress_and_an_hours_tool_answers_at_once(tmp_path: Path) -> None:
    registry = ToolRegistry.of(
        [
            define_tool(pause, effects={"computes"}, cost="minutes"),
            define_tool(pause, effects={"computes"}, name="long_pause", cost="hours"),
        ]
    )
    server = catalogue_server(registry, ToolContext(tmp_path), progress_every_s=0.1)
    heard: list[str] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        heard.append(message or "")

    async def session() -> None:
        async with Client(server) as client:
            done = await client.call_tool("pause", {"seconds": 0.6}, progress_callback=progress)
            assert done.structured_content == {"seconds": 0.6}
            began = time.monotonic()
            started = await client.call_tool("long_pause", {"seconds": 0.5})
            assert time.monotonic() - began < 0.4  # answered before the tool finished
            assert started.structured_content["state"] == "running"
            call_id = started.structured_content["call_id"]
            finished = await client.call_tool("background_call", {"call_id": call_id, "timeout_s": 30})
            assert finished.structured_content["state"] == "completed"
            assert finished.structured_content["result"] == {"seconds": 0.5}
            missing = await client.call_tool("background_call", {"call_id": "call-9"})
            assert missing.is_error and "no background call 'call-9'" in missing.content[0].text

    anyio.run(session)
    assert len(heard) >= 3 and heard[0].startswith("pause: running for")


# --- streamable HTTP, then stdio on the same workspace ---------------------------------------------


@dataclass
class HttpServer:
    url: str
    run_id: str
    token: str
    workspace: Path
    process: subprocess.Popen

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # as Ctrl-C: the server journals its tasks' states
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """``sciagent mcp serve --http 127.0.0.1:0 --token-env ...`` in a process of its own."""
    root = tmp_path_factory.mktemp("mcp-http")
    token = secrets.token_urlsafe(24)
    log = root / "serve.err"
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "sciagent", "mcp", "serve", "--http", "127.0.0.1:0",
             "--token-env", TOKEN_VAR, "--workspace", "ws"],
            cwd=root, env={**os.environ, TOKEN_VAR: token}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=errors,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # stop() sends SIGINT
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (
        found := re.search(r"(http://127\.0\.0\.1:\d+/mcp) .* run ([\d-]+[0-9a-f]{4})", log.read_text())
    ):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    server = HttpServer(found.group(1), found.group(2), token, root / "ws", process)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_flow(http_server: HttpServer) -> dict:
    """What a separate MCP client process saw: tools, structure_info, a simulation to its result."""
    completed = subprocess.run(
        [sys.executable, str(TESTS / "mcp_catalogue_client.py"), http_server.url],
        env={**os.environ, TOKEN_VAR: http_server.token}, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_a_separate_client_lists_the_tools_asks_and_follows_a_simulation_to_its_result(
    http_server: HttpServer, http_flow: dict
) -> None:
    assert http_flow["tools"]["structure_info"] == full_catalogue().get("structure_info").parameters()
    served = set(http_flow["tools"])
    assert {"simulate", "wait_for_task", "task_status", "task_result", "list_tasks"} <= served
    assert "cancel_task" not in served  # it destroys: served only with --allow-tool
    assert http_flow["structure_info"]["total_atoms"] == 582
    assert http_flow["task_id"] == "sim-1"
    assert http_flow["states"][0] in ("pending", "running") and http_flow["states"][-1] == "completed"
    result = http_flow["result"]
    assert not http_flow["result_error"] and result["status"] == "completed"
    assert result["simulated_ps"] == pytest.approx(1.0) and result["solvent"] == "vacuum"
    assert Path(result["workdir"]).is_relative_to(http_server.workspace.resolve() / "mcp")
    assert [task["task_id"] for task in http_flow["listed"]["tasks"]] == ["sim-1"]


def test_a_wrong_or_missing_token_is_refused_with_401(http_server: HttpServer) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": http_server.token}):
        answer = httpx2.post(http_server.url, json=hello, headers=headers, timeout=10)
        assert answer.status_code == 401, headers
    right = httpx2.post(
        http_server.url, json=hello, headers={"Authorization": f"Bearer {http_server.token}"}, timeout=10
    )
    assert right.status_code != 401


def test_a_second_server_on_a_served_workspace_is_refused(http_server: HttpServer) -> None:
    completed = _sciagent("mcp", "serve", "--workspace", "ws", cwd=http_server.workspace.parent)
    assert completed.returncode == 2
    assert "is serving this workspace already" in completed.stderr and "Traceback" not in completed.stderr


def test_a_later_stdio_server_collects_what_the_http_one_started(
    http_server: HttpServer, http_flow: dict
) -> None:
    assert http_server.stop() == 0
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sciagent", "mcp", "serve", "--workspace", "ws", "--allow-tool", "cancel_task"],
        cwd=http_server.workspace.parent,
        env={"SCIAGENT_CACHE_DIR": os.environ["SCIAGENT_CACHE_DIR"]},
    )

    async def later() -> dict:
        async with Client(parameters, read_timeout_seconds=120) as client:
            await client.call_tool("wait_for_task", {"task_id": "sim-1", "timeout_s": 60})
            result = await client.call_tool("task_result", {"task_id": "sim-1"})
            new = await client.call_tool(
                "simulate", {"structure": "villin", "length_ps": 1, "timestep_fs": 4, "solvent": "vacuum"}
            )
            second = {"task_id": new.structured_content["task_id"]}
            await client.call_tool("cancel_task", second)
            # a running task reads cancelled once its process is gone (compute/local.py's cancel)
            await client.call_tool("wait_for_task", {**second, "timeout_s": 30})
            listed = await client.call_tool("list_tasks", {})
            return {"result": result.structured_content, "new": new.structured_content, "listed": listed}

    seen = anyio.run(later)
    assert seen["result"]["status"] == "completed"
    assert seen["result"]["workdir"] == http_flow["result"]["workdir"]  # the same run, reported again
    assert seen["new"]["task_id"] == "sim-2"  # numbered after the earlier process's tasks
    states = {task["task_id"]: task["state"] for task in seen["listed"].structured_content["tasks"]}
    assert states == {"sim-1": "completed", "sim-2": "cancelled"}

    shown = _sciagent("show", http_server.run_id, "--workspace", "ws", cwd=http_server.workspace.parent)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"task +│ completed +│ sim-1 on local", shown.stdout)
    assert re.search(r"task +│ cancelled +│ sim-2 on local", shown.stdout)
    assert "tool_call: structure_info: ok" in shown.stdout
    resumed = _sciagent("resume", http_server.run_id, "--workspace", "ws", cwd=http_server.workspace.parent)
    assert resumed.returncode == 2 and "`sciagent mcp serve` takes its simulations up again" in resumed.stderr


def test_http_needs_a_token_on_any_address_and_bad_options_are_one_line(tmp_path: Path) -> None:
    """(Loopback too: tests/test_attacks_loopback.py.)"""
    refused = _sciagent("mcp", "serve", "--http", "0.0.0.0:0", "--workspace", "ws", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--http needs a bearer token" in refused.stderr
    unset = {key: value for key, value in os.environ.items() if key != TOKEN_VAR}
    no_token = _sciagent(
        "mcp", "serve", "--http", "127.0.0.1:0", "--token-env", TOKEN_VAR, cwd=tmp_path, env=unset
    )
    assert (
        no_token.returncode == 2 and f"{TOKEN_VAR}: that environment variable is not set" in no_token.stderr
    )
    token = {**os.environ, TOKEN_VAR: secrets.token_urlsafe(32)}
    garbled = _sciagent(
        "mcp", "serve", "--http", "localhost", "--token-env", TOKEN_VAR, cwd=tmp_path, env=token
    )
    assert garbled.returncode == 2 and "--http wants HOST:PORT" in garbled.stderr
    stray = _sciagent("mcp", "serve", "--token-env", TOKEN_VAR, cwd=tmp_path, env=token)
    assert stray.returncode == 2 and "--token-env goes with --http or --uds" in stray.stderr
    assert not (tmp_path / "ws").exists()  # nothing was served, nothing journalled


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)")
def test_a_skill_is_served_like_a_built_in_and_runs_in_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skill kept by an earlier session (saved here through the library, as create_tool saves it)."""
    monkeypatch.chdir(tmp_path)
    schema = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}
    record = SkillRecord(
        name="add_numbers", version=1, description="Adds two numbers.", parameters=schema,
        model_id="scripted-model", prompt_digest="0" * 64, session_id="ask-1", created_at=now_utc(),
        tests_passed=1,
    )  # fmt: skip
    code = "import os\n\n\ndef add_numbers(a, b):\n    return {'sum': a + b, 'home': os.environ['HOME']}\n"
    SkillLibrary.of_workspace(tmp_path / "ws").save_tool(
        record, code, "def test_none():\n    pass\n", "1 passed"
    )

    async def session(server) -> None:
        async with Client(server) as client:
            listing = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert listing["add_numbers"].input_schema == schema
            assert listing["add_numbers"].description == "[generated, v1] Adds two numbers."
            added = await client.call_tool("add_numbers", {"a": 2, "b": 3})
            assert not added.is_error, added.content
            assert added.structured_content["value"] == {"sum": 5, "home": "/tmp"}  # the sandbox's HOME
            assert "namespaces" in added.structured_content["sandbox"]
            wrong = await client.call_tool("add_numbers", {"a": "two"})
            assert wrong.is_error and "'two' is not of type 'number'" in wrong.content[0].text

    allowed = ServeOptions(allowed_tools=("add_numbers",))  # model-written code: served when named
    with served_catalogue(Settings(workspace=tmp_path / "ws"), allowed) as (server, _):
        anyio.run(session, server)
