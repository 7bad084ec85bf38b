"""Loopback is not trust: another user of the machine reaching sciagent's listening sockets.

On a login node every user can connect to ``127.0.0.1``. Each attack below is a local client that
does not hold the secret, and each has its control: the same request succeeds where the protection
is absent (the ``mcp`` SDK's app alone, a socket made without the umask, an unencrypted interchange,
llama.cpp's server started without a key), so every test fails if its protection is removed. The
servers are real processes: ``sciagent mcp serve``, ``sciagent llm serve`` with the bundled SmolLM2,
Parsl's interchange and a worker pool started by hand as an attacker would.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

from sciagent.compute import _site_builders
from sciagent.compute.base import TaskState
from sciagent.compute.parsl_executor import ParslExecutor
from sciagent.compute.sites import BUILTIN_SITES, SiteConfig
from sciagent.errors import ConfigError, UserError
from sciagent.llm.embedded import bundled_model_path
from sciagent.llm.profiles import LLMProfile, make_model
from sciagent.mcp.http import listen_unix

pytestmark = pytest.mark.timeout(300)
SCIAGENT = [sys.executable, "-m", "sciagent"]
TOKEN_VAR = "SCIAGENT_ATTACK_TOKEN"
NOBODY = 65534
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO}
ACCEPT = {"Accept": "application/json, text/event-stream"}
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # ours may sit in root's 0700 home
as_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or SYSTEM_PYTHON is None, reason="needs root, and a python3 every user can run"
)


def _sciagent(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCIAGENT, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@contextmanager
def _mcp_serve(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``sciagent mcp serve ARGS`` in a process of its own; yields where it says it serves."""
    log = cwd / "serve.err"
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [*SCIAGENT, "mcp", "serve", *args, "--workspace", "ws"],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # stopped by SIGINT below
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"serving sciagent's tools at (\S+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()


def _tool_names(url: str, http: httpx2.AsyncClient) -> set[str]:
    """What a real MCP client lists through ``http`` (headers, transport)."""

    async def listing() -> set[str]:
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            return {tool.name for tool in (await client.list_tools()).tools}

    return anyio.run(listing)


# --- mcp serve --http ------------------------------------------------------------------------------


def test_a_local_client_without_the_token_gets_401_where_the_sdk_app_alone_answers(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)  # 32 characters: the least accepted
    flags = ("--http", "127.0.0.1:0", "--token-env", TOKEN_VAR)
    with _mcp_serve(*flags, cwd=tmp_path, env={TOKEN_VAR: token}) as url:
        for headers in ({}, {"Authorization": f"Bearer {token[:-1]}x"}):  # attack: no token, a near miss
            assert httpx2.post(url, json=INITIALIZE, headers=ACCEPT | headers, timeout=10).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}  # control: the same client with the token
        assert "structure_info" in _tool_names(url, httpx2.AsyncClient(headers=bearer))
    assert token not in (tmp_path / "serve.err").read_text()

    # Control: the SDK's streamable HTTP app alone, on loopback, answers the same token-less request.
    sock = socket.create_server(("127.0.0.1", 0))
    app = MCPServer("bare").streamable_http_app(host="127.0.0.1")
    bare = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=bare.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        deadline = time.monotonic() + 30
        while not bare.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx2.post(url, json=INITIALIZE, headers=ACCEPT, timeout=10).status_code == 200
    finally:
        bare.should_exit = True
        thread.join(timeout=30)


def test_http_without_a_long_token_does_not_serve(tmp_path: Path) -> None:
    """Also what the before-stop hook checks: ``--http 127.0.0.1:PORT`` alone must not keep serving."""
    alone = _sciagent("mcp", "serve", "--http", "127.0.0.1:0", "--workspace", "ws", cwd=tmp_path)
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1
    assert "--http needs a bearer token" in alone.stderr and "--uds PATH" in alone.stderr
    short = secrets.token_urlsafe(24)[:31]
    refused = _sciagent("mcp", "serve", "--http", "127.0.0.1:0", "--token-env", TOKEN_VAR, cwd=tmp_path,
                        env={TOKEN_VAR: short})  # fmt: skip
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "the token has 31 characters, at least 32 are needed" in refused.stderr
    assert short not in refused.stderr and "Traceback" not in alone.stderr + refused.stderr
    assert not (tmp_path / "ws").exists()  # nothing was served, nothing journalled


# --- mcp serve --uds -------------------------------------------------------------------------------


def test_a_unix_socket_is_0600_serves_its_owner_and_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "mcp.sock"
    with _mcp_serve("--uds", str(path), cwd=tmp_path) as where:
        assert where == "http://localhost/mcp"
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(path)))
        assert "structure_info" in _tool_names(where, http)
    assert not path.exists()  # removed on the way out
    (tmp_path / "notes.txt").write_text("mine")
    refused = _sciagent("mcp", "serve", "--uds", "notes.txt", cwd=tmp_path)
    assert refused.returncode == 2 and "--uds notes.txt: it exists and is not a socket" in refused.stderr
    (tmp_path / "link.sock").symlink_to(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="it exists and is not a socket"):
        listen_unix(tmp_path / "link.sock")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@as_another_user
def test_another_user_cannot_connect_to_the_unix_socket(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # a directory every user can enter
        os.chmod(shared, 0o755)
        ours = listen_unix(Path(shared, "ours.sock")).sock
        plain = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # control: made without the umask
        old = os.umask(0)
        try:
            plain.bind(os.path.join(shared, "plain.sock"))
        finally:
            os.umask(old)
        plain.listen()
        probe = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')"
        try:
            for name, reached in (("ours.sock", False), ("plain.sock", True)):
                other = subprocess.run([SYSTEM_PYTHON, "-c", probe, os.path.join(shared, name)], user=NOBODY,
                                       capture_output=True, text=True, timeout=60)  # fmt: skip
                assert (other.stdout.strip() == "connected") is reached, (name, other.stderr)
                assert reached or "PermissionError" in other.stderr
        finally:
            ours.close()
            plain.close()


# --- the local-parsl interchange -------------------------------------------------------------------


def _rogue_pool(htex: HighThroughputExecutor, cert_dir: str) -> subprocess.Popen:
    """A worker pool started by hand against the interchange's port, with the certificates it has."""
    command = re.sub(r"--cert_dir \S+", f"--cert_dir {cert_dir}", htex.launch_cmd).format(block_id="rogue")
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # process_worker_pool.py
    env = {**os.environ, "ROGUE_MARK": "a rogue worker ran this", "PATH": path}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return subprocess.Popen(["bash", "-c", command], env=env, start_new_session=True, **quiet)


@contextmanager
def _interchange(site: SiteConfig, run_dir: Path) -> Iterator[tuple[ParslExecutor, HighThroughputExecutor]]:
    """``site``'s HTEX as sciagent builds it, with no workers of its own: only a rogue pool can connect."""
    provider = LocalProvider(init_blocks=0, min_blocks=0, max_blocks=0)
    htex = _site_builders._htex("local-parsl", site, provider, 1)
    with ParslExecutor(htex, name="attacked", run_dir=run_dir) as executor:
        yield executor, htex


def test_a_rogue_worker_cannot_take_tasks_from_the_local_interchange(tmp_path: Path) -> None:
    # Control: the interchange as it was (encrypted = false): a pool anyone starts gets the task.
    unencrypted = SiteConfig(kind="parsl", provider="local", encrypted=False)
    with _interchange(unencrypted, tmp_path / "plain") as (plain, htex):
        rogue = _rogue_pool(htex, "None")
        try:
            handle = plain.submit(os.getenv, "ROGUE_MARK")
            assert plain.result(handle, timeout=60) == "a rogue worker ran this"
        finally:
            os.killpg(rogue.pid, signal.SIGKILL)
    # Attack: local-parsl as built in, encrypted: the same pool without the keys never gets the task.
    with _interchange(BUILTIN_SITES["local-parsl"], tmp_path / "curve") as (curve, htex):
        assert htex.encrypted and stat.S_IMODE(os.stat(htex.cert_dir).st_mode) == 0o700
        assert {"server.key_secret", "client.key_secret"} <= set(os.listdir(htex.cert_dir))
        handle = curve.submit(os.getenv, "ROGUE_MARK")
        rogue = _rogue_pool(htex, "None")
        try:
            time.sleep(8)
            assert curve.status(handle) is TaskState.RUNNING  # handed to the interchange, run by no one
        finally:
            os.killpg(rogue.pid, signal.SIGKILL)
        # Control of the harness: with the keys (which only this user can read) the same pool runs it.
        keyed = _rogue_pool(htex, htex.cert_dir)
        try:
            assert curve.result(handle, timeout=60) == "a rogue worker ran this"
        finally:
            os.killpg(keyed.pid, signal.SIGKILL)


# --- llm serve -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str, headers: dict[str, str] | None = None) -> int:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for _ in range(120):  # the keyless control server may still be loading
        try:
            listed = httpx2.get(f"{url}/models", headers=headers, timeout=10)
            chatted = httpx2.post(f"{url}/chat/completions", json=chat, headers=headers, timeout=60)
        except httpx2.TransportError:
            time.sleep(0.5)
            continue
        assert listed.status_code == chatted.status_code, (listed.status_code, chatted.status_code)
        return listed.status_code
    raise AssertionError(f"nothing answered at {url}")


@pytest.mark.slow
def test_llm_serve_answers_only_requests_with_its_key(tmp_path: Path) -> None:
    port = _free_port()
    serve = ("llm", "serve", "--backend", "llama-cpp", "--port", str(port), "--detach")
    started = _sciagent(*serve, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    workspace, url = tmp_path / "sciagent-runs", f"http://127.0.0.1:{port}/v1"
    key_file = workspace / f"llm-server-{port}.key"
    try:
        key = key_file.read_text()
        pid = json.loads((workspace / f"llm-server-{port}.json").read_text())["pid"]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key) >= 32
        assert key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # not shown by ps
        assert key not in started.stdout + started.stderr
        assert _answers(url) == 401  # attack: another local user, no key
        assert _answers(url, {"Authorization": "Bearer guessed-key"}) == 401
        # Control: the local profile reads the key llm serve kept, and is answered.
        profile = LLMProfile(base_url=url, auth="llm-serve", response_format_style="json_object",
                             supports_native_tools=False)  # fmt: skip
        model = make_model("mine", {"mine": profile}, workspace=workspace)
        assert model.model_id == "SmolLM2-135M-Instruct.Q4_1"
        assert model.chat([{"role": "user", "content": "Say hello."}], max_tokens=4, temperature=0.0).text
        with pytest.raises(ConfigError, match="no server started by `sciagent llm serve` is recorded"):
            make_model("other", {"other": profile.model_copy(update={"base_url": f"http://localhost:{port}/v1"})},
                       workspace=workspace)  # fmt: skip
    finally:
        stopped = _sciagent("llm", "stop", "--port", str(port), cwd=tmp_path)
    assert stopped.returncode == 0 and not key_file.exists()

    # Control: llama.cpp's server started without a key (as `llm serve` did) answers anyone.
    port = _free_port()
    server = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path())]
    keyless = subprocess.Popen(
        [*server, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"],
        env={k: v for k, v in os.environ.items() if k != "API_KEY"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert _answers(f"http://127.0.0.1:{port}/v1") == 200
    finally:
        os.killpg(keyless.pid, signal.SIGTERM)
        keyless.wait(timeout=30)
