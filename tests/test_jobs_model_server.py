"""The model server a job starts on its share of the node, its two-stage health gate, the fallback check.

The llama.cpp tests start the real server with the bundled SmolLM2 model on one CPU thread. vLLM needs a
GPU node, so a ``vllm`` stand-in on PATH runs ``tests/openai_server.py`` on the port it is given (the
OpenAI protocol, scripted to answer or to fail completions) and records the environment it was started
with; everything up to it is sciagent's real code.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from sciagent.compute.sites import BUILTIN_SITES
from sciagent.config import Settings
from sciagent.errors import ConfigError, ModelUnavailable
from sciagent.llm import serve
from sciagent.llm.profiles import make_model
from sciagent.workflows.jobs.devices import split_node
from sciagent.workflows.jobs.model_server import (
    SERVED_PROFILE,
    HealthGateFailed,
    check_reachable,
    serve_model,
)
from sciagent.workflows.jobs.spec import ModelInJob

pytestmark = pytest.mark.timeout(300)
TESTS = Path(__file__).parent
VLLM_STAND_IN = """\
#!{python}
import json, os, sys, time
sys.path.insert(0, {tests!r})
from openai_server import OpenAIServer, status_reply, text_reply

argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
seen = {{k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "VLLM_API_KEY")}}
with open(os.environ["STAND_IN_RECORD"], "w") as f:
    json.dump({{"argv": argv, "env": seen}}, f)
key = "Bearer " + os.environ["VLLM_API_KEY"]
failing = os.environ.get("STAND_IN_MODE") == "completions-fail"

def answer(request):
    if request.headers.get("authorization") != key:
        return status_reply(401, message="unauthorized")
    if failing:
        print("RuntimeError: CUDA error: an illegal memory access was encountered", flush=True)
        return status_reply(500, message="CUDA error: an illegal memory access was encountered")
    return text_reply("OK")

server = OpenAIServer(models=[argv[1]], port=port)
server.respond(answer)
with server:
    print("stand-in vllm: listening on", port, flush=True)
    while True:
        time.sleep(1)
"""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and text.encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def vllm_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the ``vllm`` stand-in first on PATH; returns the file where it records how it was started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(VLLM_STAND_IN.format(python=sys.executable, tests=str(TESTS)))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "stand-in.json"
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    return record


def test_vllm_gets_its_gpus_and_memory_fraction_and_passes_both_stages(
    vllm_stand_in: Path, tmp_path: Path
) -> None:
    model = ModelInJob(
        backend="vllm", model="org/some-model", devices=1, gpu_memory_fraction=0.5, ready_timeout_s=60
    )
    served = serve_model(model, split_node(BUILTIN_SITES["polaris"], model), tmp_path / "ws")
    try:
        started = json.loads(vllm_stand_in.read_text())
        assert started["env"]["CUDA_VISIBLE_DEVICES"] == "0"
        argv = started["argv"]
        assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
        assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
        profile = served.profile
        assert profile.base_url == served.handle.base_url and profile.model == "org/some-model"
        assert (profile.auth, profile.response_format_style, profile.guided) == (
            "llm-serve",
            "json_schema",
            False,
        )
        chat = make_model(SERVED_PROFILE, {SERVED_PROFILE: profile}, workspace=tmp_path / "ws")
        assert chat.chat([{"role": "user", "content": "Say OK."}], max_tokens=2).text == "OK"
        assert 0 < served.ready_s < 60
    finally:
        served.stop()
    assert group_members(served.handle.pid) == []


def test_a_server_that_lists_models_but_fails_completions_is_stopped_at_stage_two(
    vllm_stand_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAND_IN_MODE", "completions-fail")
    model = ModelInJob(backend="vllm", model="org/some-model", devices=1, ready_timeout_s=60)
    with pytest.raises(HealthGateFailed) as caught:
        serve_model(model, split_node(BUILTIN_SITES["polaris"], model), tmp_path / "ws")
    failed = caught.value
    assert failed.stage == "completion" and "answered HTTP 500" in failed.reason
    assert "illegal memory access" in failed.log_tail and str(failed).endswith(failed.log_tail)
    assert (
        processes_naming(str(tmp_path / "bin" / "vllm")) == []
        and serve.running_servers(tmp_path / "ws") == []
    )
    # Control: the same server passes a gate of stage one only (start_server's GET /v1/models).
    port = serve.start_server(
        "vllm", model="org/some-model", port=_free_port(), workdir=tmp_path / "old"
    ).port
    try:
        assert serve.running_servers(tmp_path / "old")[0].alive
    finally:
        assert serve.stop_server(tmp_path / "old", port) == [port]


@pytest.mark.slow
@pytest.mark.whole_machine  # a pytest-xdist worker is pinned to one CPU: the split needs two
def test_bundled_model_on_one_cpu_thread_passes_answers_and_stops_leaving_nothing(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("the split needs two CPUs: one for the model, one for the simulations")
    model = ModelInJob(backend="llama-cpp", devices=1, ready_timeout_s=240)
    split = split_node(BUILTIN_SITES["local"], model)
    served = serve_model(model, split, tmp_path)
    try:
        pid = served.handle.pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--n_threads") + 1] == b"1" and os.sched_getaffinity(pid) == {cpus[0]}
        profile = served.profile
        assert (profile.auth, profile.response_format_style, profile.guided) == (
            "llm-serve",
            "json_object",
            True,
        )
        chat = make_model(SERVED_PROFILE, {SERVED_PROFILE: profile}, workspace=tmp_path)
        reply = chat.chat([{"role": "user", "content": "Say hello."}], max_tokens=4, temperature=0.0)
        assert reply.text and reply.usage.completion_tokens > 0
        print(f"bundled model ready in {served.ready_s:.1f} s on 1 thread")
    finally:
        served.stop()
    assert group_members(pid) == [] and not serve.key_file(tmp_path, served.handle.port).exists()


@pytest.mark.slow
def test_a_model_file_that_is_not_a_model_fails_at_stage_one_with_the_log(tmp_path: Path) -> None:
    fake = tmp_path / "x.gguf"
    fake.write_text("this is a text file, not a GGUF model\n")
    model = ModelInJob(backend="llama-cpp", model=str(fake), devices=1, ready_timeout_s=120)
    with pytest.raises(HealthGateFailed) as caught:
        serve_model(model, split_node(BUILTIN_SITES["local"], model, cpus={0, 1}), tmp_path / "ws")
    failed = caught.value
    assert failed.stage == "models" and "exited with code" in failed.reason and "\n" not in failed.reason
    assert "Failed to load model from file" in failed.log_tail and str(failed).endswith(failed.log_tail)
    assert processes_naming(str(fake)) == [] and serve.running_servers(tmp_path / "ws") == []


def test_a_missing_backend_or_model_fails_at_start(tmp_path: Path) -> None:
    model = ModelInJob(backend="llama-cpp", model=str(tmp_path / "absent.gguf"), devices=1)
    with pytest.raises(
        HealthGateFailed, match=r"at stage 'start': model file .*absent.gguf not found"
    ) as caught:
        serve_model(model, split_node(BUILTIN_SITES["local"], model, cpus={0, 1}), tmp_path)
    assert caught.value.log_tail == ""


def test_check_reachable_asks_the_endpoint_with_the_profile_key(
    openai_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK_KEY", "k-123")
    profile = {"base_url": openai_server.base_url, "api_key_env": "FALLBACK_KEY", "auth": "env"}
    settings = Settings(workspace=tmp_path, llm={"fallback": profile})
    assert check_reachable("fallback", settings) is None
    asked = openai_server.requests[-1]
    assert (asked.method, asked.path, asked.headers["authorization"]) == ("GET", "/v1/models", "Bearer k-123")
    check_reachable("embedded", settings)  # runs in this process: nothing to reach
    with pytest.raises(ConfigError, match="unknown LLM profile 'nope'"):
        check_reachable("nope", settings)


def test_check_reachable_refuses_a_closed_port_in_one_line_quickly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    settings = Settings(workspace=tmp_path, llm={"fallback": {"base_url": url}})
    started = time.monotonic()
    with pytest.raises(
        ModelUnavailable, match=rf"^fallback profile fallback is not reachable at {url}: "
    ) as caught:
        check_reachable("fallback", settings)
    assert "\n" not in str(caught.value) and time.monotonic() - started < 15


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
