"""Model profiles: built-ins, config-file overrides, key resolution, and `sciagent llm check/profiles`.

Remote endpoints are played by the scripted OpenAI-protocol server in ``tests/openai_server.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from openai_server import (
    LLAMA_CPP_REJECTS_JSON_SCHEMA,
    VLLM_REJECTS_AUTO_TOOL_CHOICE,
    status_reply,
    text_reply,
    tool_call_reply,
)
from sciagent.agent.journal import Journal
from sciagent.config import Settings
from sciagent.errors import ConfigError
from sciagent.llm.openai_compat import OpenAICompatModel
from sciagent.llm.profiles import BUILTIN_PROFILES, LLMProfile, make_model, resolve_profile

SCIAGENT = [sys.executable, "-m", "sciagent"]
ENV_VARS = (
    "ALCF_ACCESS_TOKEN",
    "OPENAI_API_KEY",
    "SCIAGENT_LLM",
    "SCIAGENT_DEFAULT_LLM",
    "SCIAGENT_LOG_LEVEL",
)


def sciagent(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCIAGENT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user config, no stored login, no keys from the developer's shell; cwd is a fresh directory."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SCIAGENT_TOKEN_FILE", str(tmp_path / "xdg" / "tokens.json"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(directory: Path, text: str) -> None:
    (directory / "sciagent.toml").write_text(text)


def test_builtin_profiles_match_the_facility_facts() -> None:
    settings = Settings()
    name, profile = resolve_profile(settings.default_llm, settings.llm)
    assert (name, profile.kind) == ("embedded", "embedded")
    alcf = BUILTIN_PROFILES["alcf"]
    assert alcf.base_url == "https://inference-api.alcf.anl.gov/resource_server/sophia/vllm/v1"
    assert (alcf.model, alcf.auth, alcf.api_key_env) == (
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "globus",
        "ALCF_ACCESS_TOKEN",
    )
    assert BUILTIN_PROFILES["vllm-local"].base_url == "http://127.0.0.1:8000/v1"
    local_cpp = BUILTIN_PROFILES["llama-cpp-local"]
    assert (local_cpp.response_format_style, local_cpp.supports_native_tools) == ("json_object", False)
    assert BUILTIN_PROFILES["openai"].api_key_env == "OPENAI_API_KEY"


def test_local_profiles_send_only_the_key_llm_serve_kept(isolated: Path) -> None:
    """Loopback is not trust: the local profiles need the key of a server `sciagent llm serve` started
    (the server refusing requests without it: tests/test_attacks_loopback.py)."""
    for name, port in (("llama-cpp-local", 8080), ("vllm-local", 8000)):
        assert BUILTIN_PROFILES[name].auth == "llm-serve"
        with pytest.raises(ConfigError) as caught:
            make_model(name, {}, workspace=isolated / "sciagent-runs")
        message = str(caught.value)
        assert message.startswith(f"profile {name}: no server started by `sciagent llm serve` is recorded")
        assert f"http://127.0.0.1:{port}/v1" in message and "\n" not in message
    listed = subprocess.run([*SCIAGENT, "llm", "profiles"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "llm serve key file" in listed.stdout


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_profile("sophia", Settings().llm)
    for known in ("alcf", "embedded", "llama-cpp-local", "openai", "vllm-local"):
        assert known in str(caught.value)


def test_config_tables_override_builtin_fields_and_add_profiles(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(
        isolated,
        '[llm.alcf]\nmodel = "openai/gpt-oss-120b"\n\n'
        '[llm.mine]\nbase_url = "http://gpu07:8000/v1"\nmodel = "m"\ntimeout_s = 30\n',
    )
    _, alcf = resolve_profile("alcf", Settings().llm)
    assert alcf.model == "openai/gpt-oss-120b"
    assert alcf.base_url == BUILTIN_PROFILES["alcf"].base_url and alcf.auth == "globus"  # untouched fields
    _, mine = resolve_profile("mine", Settings().llm)
    assert (mine.kind, mine.base_url, mine.timeout_s, mine.auth) == (
        "openai",
        "http://gpu07:8000/v1",
        30,
        "none",
    )
    # Environment beats ./sciagent.toml.
    monkeypatch.setenv("SCIAGENT_LLM", '{"alcf": {"model": "from-env"}}')
    monkeypatch.setenv("SCIAGENT_DEFAULT_LLM", "alcf")
    settings = Settings()
    name, alcf = resolve_profile(settings.default_llm, settings.llm)
    assert (name, alcf.model) == ("alcf", "from-env")


def test_invalid_profiles_are_rejected_without_echoing_values(isolated: Path) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        LLMProfile(kind="openai")
    with pytest.raises(ValidationError, match="api_key_env"):
        LLMProfile(base_url="http://h/v1", auth="env")
    write_config(isolated, '[llm.leaky]\nbase_url = "http://h/v1"\napi_key = "sk-test-SECRET-123"\n')
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "api_key" in str(caught.value) and "SECRET" not in str(caught.value)
    completed = sciagent("llm", "profiles", cwd=isolated)
    assert completed.returncode == 2
    assert "llm.leaky.api_key" in completed.stderr
    assert "SECRET" not in completed.stdout + completed.stderr


def test_a_profile_without_its_key_says_how_to_get_one() -> None:
    with pytest.raises(ConfigError, match=r"profile openai needs an API key: set OPENAI_API_KEY$"):
        make_model("openai", Settings().llm)
    with pytest.raises(ConfigError, match=r"set ALCF_ACCESS_TOKEN or run `sciagent auth login`"):
        make_model("alcf", Settings().llm)


def test_make_model_sends_the_env_key_and_discovers_the_served_model(
    isolated: Path, openai_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sk-test-SECRET-123")
    openai_server.models = ["served/model-a", "served/model-b"]
    write_config(
        isolated,
        f'[llm.lab]\nbase_url = "{openai_server.base_url}"\napi_key_env = "MY_ENDPOINT_KEY"\nauth = "env"\n'
        'response_format_style = "json_object"\nsupports_native_tools = false\n',
    )
    settings = Settings()
    model = make_model("lab", settings.llm)
    assert isinstance(model, OpenAICompatModel)
    assert (model.model_id, model.response_format_style, model.supports_native_tools) == (
        "served/model-a",
        "json_object",
        False,
    )
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-test-SECRET-123"
    for text in (repr(model), repr(settings), settings.model_dump_json()):
        assert "SECRET" not in text


def test_llm_check_reports_model_latency_and_tokens_per_s(isolated: Path, openai_server) -> None:
    """The profile keeps the default json_schema style; the server speaks llama.cpp's dialect."""
    openai_server.models = ["served/model-a", "served/model-b"]
    openai_server.script(
        text_reply("ready", model="served/model-a", completion_tokens=5),
        LLAMA_CPP_REJECTS_JSON_SCHEMA,
        text_reply('{"ready": true}'),
        text_reply("pong"),  # asked to call the probe tool, the model answers in text
    )
    write_config(isolated, f'[llm.lab]\nbase_url = "{openai_server.base_url}"\nmodel = "served/model-a"\n')
    completed = sciagent("llm", "check", "--llm", "lab", cwd=isolated)
    assert completed.returncode == 0, completed.stderr
    lines = {k: v.strip() for k, v in (line.split(":", 1) for line in completed.stdout.splitlines())}
    assert lines["profile"] == "lab"
    assert lines["model"] == "served/model-a"
    assert lines["models"] == "served/model-a, served/model-b"
    assert lines["latency"].endswith(" s")
    assert float(lines["tokens/s"]) > 0
    assert lines["structured"].startswith("json_object (remembered")  # negotiated: the 500 was not retried
    with Journal.in_workspace(isolated / "sciagent-runs") as journal:
        assert journal.known_dialect(openai_server.base_url.rstrip("/"), "served/model-a") == "json_object"
    assert lines["tools"].startswith("no: the model answered in text instead of calling the probe tool")
    requests = openai_server.chat_requests()
    assert len(requests) == 4 and requests[3].body["tools"][0]["function"]["name"] == "ping"


@pytest.mark.parametrize("dialect", ["vllm", "openai"])
def test_llm_check_on_vllm_and_openai_dialects(isolated: Path, openai_server, dialect: str) -> None:
    """vLLM: json_schema works, tools= is refused without --enable-auto-tool-choice; OpenAI: both work."""
    tools = VLLM_REJECTS_AUTO_TOOL_CHOICE if dialect == "vllm" else tool_call_reply("ping", {})
    openai_server.script(text_reply("ready"), text_reply('{"ready": true}'), tools)
    write_config(isolated, f'[llm.lab]\nbase_url = "{openai_server.base_url}"\nmodel = "m"\n')
    completed = sciagent("llm", "check", "--llm", "lab", cwd=isolated)
    assert completed.returncode == 0, completed.stderr
    lines = {k: v.strip() for k, v in (line.split(":", 1) for line in completed.stdout.splitlines())}
    assert lines["structured"].startswith("json_schema (remembered")
    if dialect == "vllm":
        assert lines["tools"].startswith("no: the server refused tools= (")
        assert "--enable-auto-tool-choice" in lines["tools"]
    else:
        assert lines["tools"] == "yes: the model called the probe tool; profile says yes"
    assert len(openai_server.chat_requests()) == 3  # a refused tools= request is not retried


def _one_line_error(completed: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
    return lines[0]


def test_llm_check_exit_codes(isolated: Path, openai_server) -> None:
    unknown = sciagent("llm", "check", "--llm", "nope", cwd=isolated)
    assert unknown.returncode == 2 and "known profiles are" in _one_line_error(unknown)
    no_key = sciagent("llm", "check", "--llm", "openai", cwd=isolated)
    assert no_key.returncode == 2 and "set OPENAI_API_KEY" in _one_line_error(no_key)

    openai_server.script(status_reply(403))
    write_config(
        isolated,
        f'[llm.lab]\nbase_url = "{openai_server.base_url}"\nmodel = "m"\n\n'
        '[llm.down]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\nmax_retries = 0\ntimeout_s = 5\n',
    )
    refused = sciagent("llm", "check", "--llm", "lab", cwd=isolated)
    assert refused.returncode == 2 and "HTTP 403" in _one_line_error(refused)
    unreachable = sciagent("llm", "check", "--llm", "down", cwd=isolated)
    assert unreachable.returncode == 1 and "could not reach" in _one_line_error(unreachable)


def test_llm_profiles_shows_key_availability_never_keys(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    completed = sciagent("llm", "profiles", cwd=isolated)
    assert completed.returncode == 0, completed.stderr
    cells = [line.split() for line in completed.stdout.splitlines() if line.startswith("│")]
    rows = {cell[1]: " ".join(cell) for cell in cells if cell[1] != "│"}  # "│ │ ..." continues a row
    assert set(rows) == set(BUILTIN_PROFILES)
    assert "(default)" in rows["embedded"]
    assert "missing" in rows["openai"] and "missing" in rows["alcf"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123")
    completed = sciagent("llm", "profiles", cwd=isolated)
    assert "env OPENAI_API_KEY" in completed.stdout and "SECRET" not in completed.stdout


@pytest.mark.slow
def test_llm_check_with_the_embedded_default_works_offline(isolated: Path) -> None:
    completed = sciagent("llm", "check", cwd=isolated, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "SmolLM2" in completed.stdout
    rate = next(line for line in completed.stdout.splitlines() if line.startswith("tokens/s:"))
    assert float(rate.split(":")[1]) > 0
