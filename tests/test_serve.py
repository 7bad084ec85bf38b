"""Local model servers: start, readiness, failure reports, stop, and nothing left behind.

vLLM needs a GPU node, so a ``vllm`` shim on PATH stands in for it (as a PBS shim stands in for PBS):
it records the command line and environment it was given and serves ``GET /v1/models``, or crashes,
hangs, or ignores SIGTERM, as a test asks. The llama.cpp tests start the real server with the bundled
SmolLM2 model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from sciagent.errors import ConfigError, ModelUnavailable
from sciagent.llm import serve
from sciagent.llm.openai_compat import OpenAICompatModel
from sciagent.llm.structured import ask_structured
from sciagent.workflows.study.md_stability import DEFAULT_GOAL
from sciagent.workflows.study.plans import PRODUCTION_CHOICES_PS, StudyPlan
from sciagent.workflows.study.prompts import plan_messages


class Replicas(BaseModel):
    replicas: int = Field(ge=1, le=3)


SCIAGENT = [sys.executable, "-m", "sciagent"]

VLLM_SHIM = """\
#!{python}
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
mode = os.environ.get("SHIM_MODE", "serve")
record = {{"argv": argv, "env": {{k: os.environ.get(k) for k in (
    "ZE_FLAT_DEVICE_HIERARCHY", "VLLM_WORKER_MULTIPROC_METHOD", "NO_PROXY", "no_proxy",
    "http_proxy", "https_proxy", "HTTPS_PROXY", "VLLM_API_KEY")}}}}
if mode == "crash":
    print("RuntimeError: XPU out of memory while loading the model", flush=True)
    sys.exit(3)
if mode == "hang":  # a worker process in the same group, and no listening socket
    record["worker"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.environ["SHIM_RECORD"], "w") as f:
    json.dump(record, f)
if mode == "hang":
    time.sleep(600)

class Models(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"object": "list", "data": [{{"id": argv[1], "object": "model"}}]}}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), Models).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Running and not a zombie (a zombie has exited; it only waits for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def server_processes(port: int) -> list[int]:
    """Pids whose command line is a model server on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        is_server = any(b"llama_cpp.server" in a or a.endswith(b"vllm") for a in argv)
        if is_server and str(port).encode() in argv and entry.name.isdigit() and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the ``vllm`` stand-in first on PATH; returns the file where it records its invocation."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(VLLM_SHIM.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "vllm-invocation.json"
    monkeypatch.setenv("SHIM_RECORD", str(record))
    return record


def test_llama_cpp_command_uses_the_bundled_model_and_half_the_cores() -> None:
    """The same thread rule as the embedded model: a server beside MD workers must not stall on them."""
    argv, env = serve.server_command("llama-cpp", model=None, port=8080, host="127.0.0.1")
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    model = Path(argv[argv.index("--model") + 1])
    assert model.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and model.is_file()
    assert argv[argv.index("--n_threads") + 1] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert "localhost" in env["NO_PROXY"].split(",") and "127.0.0.1" in env["no_proxy"].split(",")
    with pytest.raises(ConfigError, match="not found"):
        serve.server_command("llama-cpp", model="/no/such.gguf", port=8080, host="127.0.0.1")


def test_vllm_missing_is_refused_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if serve.importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^vllm is not installed: "):
        serve.start_server("vllm", model="m", port=free_port(), workdir=tmp_path)
    with pytest.raises(ConfigError, match="needs --model"):
        serve.server_command("vllm", model=None, port=8000, host="127.0.0.1")


def test_vllm_gets_gpu_node_settings_and_no_proxy(shim: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    port = free_port()
    handle = serve.start_server(
        "vllm",
        model="meta-llama/Meta-Llama-3.1-8B-Instruct",
        port=port,
        workdir=tmp_path,
        tensor_parallel_size=2,
    )
    try:
        record = json.loads(shim.read_text())
        assert record["argv"][:2] == ["serve", "meta-llama/Meta-Llama-3.1-8B-Instruct"]
        for flag, value in (("--port", str(port)), ("--dtype", "bfloat16"), ("--tensor-parallel-size", "2")):
            assert record["argv"][record["argv"].index(flag) + 1] == value
        env = record["env"]
        assert env["ZE_FLAT_DEVICE_HIERARCHY"] == "FLAT" and env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
        assert env["https_proxy"] is None and env["HTTPS_PROXY"] is None
        assert "127.0.0.1" in env["NO_PROXY"].split(",")
        pid_file = json.loads((tmp_path / f"llm-server-{port}.json").read_text())
        assert (pid_file["pid"], pid_file["port"], pid_file["backend"]) == (handle.pid, port, "vllm")
        assert pid_file["base_url"] == f"http://127.0.0.1:{port}/v1" and pid_file["started_at"]
        assert handle.alive
        # Its API key: in its environment (not its command line), kept 0600, handed to the recorded URL.
        key_file = serve.key_file(tmp_path, port)
        assert env["VLLM_API_KEY"] == key_file.read_text() and len(env["VLLM_API_KEY"]) >= 32
        assert env["VLLM_API_KEY"] not in record["argv"] and key_file.stat().st_mode & 0o777 == 0o600
        assert serve.served_key(tmp_path, f"http://127.0.0.1:{port}/v1") == env["VLLM_API_KEY"]
        with pytest.raises(ConfigError, match="no server started by `sciagent llm serve` is recorded at"):
            serve.served_key(tmp_path, f"http://10.1.2.3:{port}/v1")  # the key goes to no other host
        with pytest.raises(ConfigError, match="already runs on port"):
            serve.start_server("vllm", model="m", port=port, workdir=tmp_path)
    finally:
        assert serve.stop_server(tmp_path, port) == [port]
    assert not pid_alive(handle.pid) and not (tmp_path / f"llm-server-{port}.json").exists()
    assert not serve.key_file(tmp_path, port).exists()


def test_a_crash_before_ready_reports_the_log_tail(shim: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHIM_MODE", "crash")
    port = free_port()
    with pytest.raises(ModelUnavailable, match="exited with code 3 before it was ready") as caught:
        serve.start_server("vllm", model="m", port=port, workdir=tmp_path)
    assert "XPU out of memory" in str(caught.value)
    assert not (tmp_path / f"llm-server-{port}.json").exists()


def test_not_ready_in_time_stops_the_whole_process_group(shim: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHIM_MODE", "hang")
    port = free_port()
    with pytest.raises(ModelUnavailable, match="not ready after 3 s and was stopped"):
        serve.start_server("vllm", model="m", port=port, workdir=tmp_path, ready_timeout_s=3)
    worker = json.loads(shim.read_text())["worker"]
    assert not pid_alive(worker)  # the server's own child went with it
    assert server_processes(port) == [] and serve.running_servers(tmp_path) == []


def test_a_server_ignoring_sigterm_is_killed(shim: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHIM_MODE", "stubborn")
    port = free_port()
    handle = serve.start_server("vllm", model="m", port=port, workdir=tmp_path)
    started = time.monotonic()
    assert serve.stop_server(tmp_path, timeout_s=1) == [port]
    assert time.monotonic() - started < 8 and not pid_alive(handle.pid)


def test_port_in_use_and_stale_records(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="already in use"):
            serve.start_server("llama-cpp", model=None, port=busy.getsockname()[1], workdir=tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = serve.ServerHandle(gone.pid, 9999, "vllm", "http://127.0.0.1:9999/v1", "then", "x.log", 1)
    (tmp_path / "llm-server-9999.json").write_text(json.dumps(stale.__dict__))
    assert serve.stop_server(tmp_path) == []  # nothing of ours to signal; the record is just removed
    assert not (tmp_path / "llm-server-9999.json").exists()


def test_serve_cli_reports_a_crash_in_one_line_plus_the_log(shim: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHIM_MODE", "crash")
    port = str(free_port())
    crashed = subprocess.run(
        [*SCIAGENT, "llm", "serve", "--backend", "vllm", "--model", "m", "--port", port],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == 1
    assert "XPU out of memory" in crashed.stderr
    assert crashed.stderr.strip().splitlines()[-1].startswith("error: the vllm server exited with code 3")
    nothing = subprocess.run(
        [*SCIAGENT, "llm", "stop", "--port", port], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert nothing.returncode == 0 and f"no server on port {port}" in nothing.stdout


def _ready_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if "server ready at" in line:
            return line
    raise AssertionError(f"no ready line; stderr: {process.stderr.read() if process.stderr else ''}")


@pytest.mark.slow
def test_real_llama_cpp_server_detached_then_stopped(tmp_path: Path) -> None:
    port = free_port()
    started = subprocess.run(
        [*SCIAGENT, "llm", "serve", "--backend", "llama-cpp", "--port", str(port), "--detach"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    base_url = f"http://127.0.0.1:{port}/v1"
    assert f"ready at {base_url}" in started.stdout
    pid = json.loads((tmp_path / "sciagent-runs" / f"llm-server-{port}.json").read_text())["pid"]
    key = serve.key_file(tmp_path / "sciagent-runs", port).read_text()  # what only its owner can read
    try:
        served = OpenAICompatModel(base_url, "probe", api_key=key).list_models()
        assert served == ["SmolLM2-135M-Instruct.Q4_1"]
        model = OpenAICompatModel(
            base_url, served[0], api_key=key, response_format_style="json_object", supports_native_tools=False
        )
        reply = model.chat([{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0)
        assert reply.text and reply.usage.completion_tokens > 0
        # A profile left at its default style: the server's 500 for json_schema is not retried, the
        # next style is, with small ranges as enums (its grammar ignores minimum/maximum; unbounded,
        # this model answered replicas 1028), and the style that worked is kept.
        default = OpenAICompatModel(base_url, served[0], api_key=key, supports_native_tools=False)
        ask = [{"role": "user", "content": "How many replicas (1 to 3)? Answer in JSON."}]
        answer = ask_structured(default, ask, Replicas, retries=0, max_tokens=16)
        assert 1 <= answer.value.replicas <= 3 and default.response_format_style == "json_object"
        # The study's own plan validates on the first answer: a float's bounds are not in the grammar,
        # so the plan offers the model a list of lengths (unlisted, it answered 3.6e-40 ps three times).
        plan = ask_structured(default, plan_messages(DEFAULT_GOAL, "villin", 300.0), StudyPlan, retries=0)
        assert plan.value.production_ps in PRODUCTION_CHOICES_PS
        # `sciagent llm check` on a profile that names only the URL and the key llm serve kept: everything
        # found by asking.
        (tmp_path / "sciagent.toml").write_text(f'[llm.mine]\nbase_url = "{base_url}"\nauth = "llm-serve"\n')
        checked = subprocess.run([*SCIAGENT, "llm", "check", "--llm", "mine"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        lines = dict(line.split(":", 1) for line in checked.stdout.splitlines())
        assert lines["models"].strip() == served[0] and float(lines["tokens/s"]) > 0
        assert lines["structured"].strip().startswith("json_object (remembered")
        assert lines["tools"].strip().startswith(("no: ", "yes: ")), lines["tools"]  # probed, not assumed
    finally:
        stopped = subprocess.run(
            [*SCIAGENT, "llm", "stop", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stopped.returncode == 0 and f"stopped the server on port {port}" in stopped.stdout
    assert not pid_alive(pid) and server_processes(port) == []


@pytest.mark.slow
def test_ctrl_c_on_the_foreground_server_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    cli = subprocess.Popen(
        [*SCIAGENT, "llm", "serve", "--backend", "llama-cpp", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # whatever the suite inherited
    )  # fmt: skip
    try:
        assert f"http://127.0.0.1:{port}/v1" in _ready_line(cli)
        pid = json.loads((tmp_path / "sciagent-runs" / f"llm-server-{port}.json").read_text())["pid"]
        assert pid_alive(pid)
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    assert not pid_alive(pid) and server_processes(port) == []
    assert not (tmp_path / "sciagent-runs" / f"llm-server-{port}.json").exists()
