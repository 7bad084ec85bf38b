"""Keys and tokens never leave memory: not in output, logs (even at DEBUG), errors or workspace files.

A key is planted in a profile's env var, a Globus token in the token file; every CLI path that
touches them runs with ``--log-level DEBUG`` against the scripted OpenAI-protocol server (success,
401, a 401 that echoes the key back, an unreachable port), then everything written is searched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import status_reply, text_reply
from sciagent.llm import auth

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
