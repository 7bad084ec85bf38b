"""Facility tokens: env precedence, the token file (0600, atomic), refresh, status, logout, the login flow.

Globus Auth cannot be reached from the test machines, so ``StandInAuthClient`` plays
``globus_sdk.NativeAppAuthClient`` at the one seam, ``sciagent.llm.auth._auth_client``, and nowhere
else. It checks every call against the real class's signatures, so a call the installed globus-sdk
would reject fails here too. The facility's inference endpoint is played by ``tests/openai_server.py``.
"""

from __future__ import annotations

import inspect
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import globus_sdk
import pytest
import requests

from openai_server import text_reply
from sciagent.config import Settings
from sciagent.errors import ConfigError, ModelUnavailable
from sciagent.llm import auth
from sciagent.llm.profiles import BUILTIN_PROFILES, LLMProfile, make_model

GATEWAY = auth.GATEWAY_CLIENT_ID
ALCF = BUILTIN_PROFILES["alcf"]
SCIAGENT = [sys.executable, "-m", "sciagent"]


def grant(access: str = "AT-1", refresh: str | None = "RT-1", expires_in: float = 3600) -> dict[str, Any]:
    tokens = {
        "access_token": access,
        "expires_at_seconds": int(time.time() + expires_in),
        "scope": auth.GATEWAY_SCOPE,
        "token_type": "Bearer",
        "resource_server": GATEWAY,
    }
    if refresh:
        tokens["refresh_token"] = refresh
    return {GATEWAY: tokens}


def api_error(status: int) -> globus_sdk.GlobusAPIError:
    """The error globus-sdk raises for an HTTP error from Globus Auth (as its ``testing.construct_error``)."""
    response = requests.Response()
    response.status_code = status
    response.url = "https://auth.globus.org/v2/oauth2/token"
    response.request = requests.Request("POST", response.url).prepare()
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"error": "invalid_grant"}).encode()
    return globus_sdk.GlobusAPIError(response)


class StandInAuthClient:
    """Plays ``globus_sdk.NativeAppAuthClient`` at the ``auth._auth_client`` seam: records calls, replies."""

    # The real client talks to Globus only in these; the flow set-up and the URL are computed locally.
    NETWORK_CALLS = ("oauth2_exchange_code_for_tokens", "oauth2_refresh_token", "oauth2_revoke_token")

    def __init__(self, tokens: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.tokens = tokens if tokens is not None else grant()
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        real = getattr(globus_sdk.NativeAppAuthClient, name)
        bound = inspect.signature(real).bind(self, *args, **kwargs)  # TypeError if the real API differs
        self.calls.append((name, {k: v for k, v in bound.arguments.items() if k != "self"}))
        if self.error is not None and name in self.NETWORK_CALLS:
            raise self.error
        return SimpleNamespace(by_resource_server=self.tokens)

    def oauth2_start_flow(self, *args: Any, **kwargs: Any) -> None:
        self._call("oauth2_start_flow", *args, **kwargs)

    def oauth2_get_authorize_url(self, *args: Any, **kwargs: Any) -> str:
        self._call("oauth2_get_authorize_url", *args, **kwargs)
        return "https://auth.globus.org/v2/oauth2/authorize?client_id=stand-in&code_challenge=abc"

    def oauth2_exchange_code_for_tokens(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("oauth2_exchange_code_for_tokens", *args, **kwargs)

    def oauth2_refresh_token(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("oauth2_refresh_token", *args, **kwargs)

    def oauth2_revoke_token(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("oauth2_revoke_token", *args, **kwargs)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture(autouse=True)
def token_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ALCF_ACCESS_TOKEN", "SCIAGENT_LLM", "SCIAGENT_DEFAULT_LLM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "config" / "sciagent" / "tokens.json"
    monkeypatch.setenv("SCIAGENT_TOKEN_FILE", str(path))
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def globus(monkeypatch: pytest.MonkeyPatch) -> StandInAuthClient:
    stand_in = StandInAuthClient()
    monkeypatch.setattr(auth, "_auth_client", lambda: stand_in)
    return stand_in


def logged_in(globus: StandInAuthClient, **grant_args: Any) -> None:
    globus.tokens = grant(**grant_args)
    auth.login(input_fn=lambda prompt: "the-code", print_fn=lambda text: None)
    globus.calls.clear()


def test_login_runs_the_native_app_flow_and_stores_tokens_0600(
    globus: StandInAuthClient, token_path: Path
) -> None:
    printed: list[str] = []
    state = auth.login(input_fn=lambda prompt: "  the-code \n", print_fn=printed.append)
    assert globus.names() == [
        "oauth2_start_flow",
        "oauth2_get_authorize_url",
        "oauth2_exchange_code_for_tokens",
    ]
    start, url, exchange = (args for _, args in globus.calls)
    assert start["requested_scopes"] == auth.GATEWAY_SCOPE and start["refresh_tokens"] is True
    assert url["session_required_single_domain"] == ["anl.gov", "alcf.anl.gov"]
    assert exchange["auth_code"] == "the-code"
    assert "https://auth.globus.org/v2/oauth2/authorize?client_id=stand-in" in printed[0]
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert json.loads(token_path.read_text())["refresh_token"] == "RT-1"
    assert [p.name for p in token_path.parent.iterdir()] == ["tokens.json"]  # no temp file left
    assert state.logged_in and state.refreshable and state.scopes == (auth.GATEWAY_SCOPE,)
    assert state.expires_at is not None and "AT-1" not in repr(state) and "RT-1" not in repr(state)


def test_login_refusals_store_nothing(globus: StandInAuthClient, token_path: Path) -> None:
    with pytest.raises(ConfigError, match="no authorization code"):
        auth.login(input_fn=lambda prompt: "", print_fn=lambda text: None)
    globus.tokens = {"auth.globus.org": {"access_token": "other"}}
    with pytest.raises(ConfigError, match="did not grant the inference gateway"):
        auth.login(input_fn=lambda prompt: "code", print_fn=lambda text: None)
    globus.error = api_error(400)
    with pytest.raises(ConfigError, match=r"refused the authorization code \(HTTP 400\)"):
        auth.login(input_fn=lambda prompt: "code", print_fn=lambda text: None)
    assert not token_path.exists()


def test_env_token_wins_over_the_stored_login(
    globus: StandInAuthClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(globus)
    assert auth.get_access_token(ALCF) == "AT-1"
    monkeypatch.setenv("ALCF_ACCESS_TOKEN", "from-env")
    assert auth.get_access_token(ALCF) == "from-env"
    assert auth.status().env_override == "ALCF_ACCESS_TOKEN"
    assert auth.get_access_token(LLMProfile(base_url="http://h/v1")) is None  # auth none: no token
    assert globus.calls == []  # a valid stored token needs no network


def test_an_expiring_token_is_refreshed_and_stored(globus: StandInAuthClient, token_path: Path) -> None:
    logged_in(globus, expires_in=30)  # inside the refresh margin
    globus.tokens = grant(access="AT-2", refresh=None)  # Globus did not rotate the refresh token
    assert auth.get_access_token(ALCF) == "AT-2"
    assert globus.calls == [("oauth2_refresh_token", {"refresh_token": "RT-1"})]
    stored = json.loads(token_path.read_text())
    assert (stored["access_token"], stored["refresh_token"]) == ("AT-2", "RT-1")
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert auth.get_access_token(ALCF) == "AT-2" and len(globus.calls) == 1  # fresh now: no second refresh


def test_refresh_failures_map_to_our_errors(globus: StandInAuthClient) -> None:
    logged_in(globus, expires_in=-10)
    globus.error = api_error(401)
    with pytest.raises(ConfigError, match=r"HTTP 401\): run `sciagent auth login`"):
        auth.get_access_token(ALCF)
    globus.error = globus_sdk.NetworkError("no route", ConnectionError("no route"))
    with pytest.raises(ModelUnavailable, match="could not reach Globus Auth"):
        auth.get_access_token(ALCF)


def test_expired_unrenewable_login_asks_for_a_new_one(globus: StandInAuthClient) -> None:
    logged_in(globus, refresh=None, expires_in=-10)
    assert auth.get_access_token(ALCF) is None
    assert not auth.status().logged_in
    with pytest.raises(ConfigError, match="run `sciagent auth login`"):
        make_model("alcf", Settings().llm)


def test_a_damaged_token_file_is_reported_without_its_content(token_path: Path) -> None:
    token_path.parent.mkdir(parents=True)
    token_path.write_text('{"access_token": "AT-SECRET", ')
    with pytest.raises(ConfigError) as caught:
        auth.get_access_token(ALCF)
    assert "unreadable" in str(caught.value) and "SECRET" not in str(caught.value)
    state = auth.status()
    assert not state.logged_in and state.problem and "SECRET" not in state.problem


def test_loose_permissions_are_tightened_on_read(globus: StandInAuthClient, token_path: Path) -> None:
    logged_in(globus)
    token_path.chmod(0o644)
    assert auth.get_access_token(ALCF) == "AT-1"
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600


def test_logout_revokes_then_deletes(globus: StandInAuthClient, token_path: Path) -> None:
    logged_in(globus)
    result = auth.logout()
    assert (result.removed, result.revoked) == (True, True)
    assert globus.calls == [
        ("oauth2_revoke_token", {"token": "RT-1"}),
        ("oauth2_revoke_token", {"token": "AT-1"}),
    ]
    assert not token_path.exists()
    assert auth.logout().removed is False


def test_logout_deletes_even_when_globus_is_unreachable(globus: StandInAuthClient, token_path: Path) -> None:
    logged_in(globus)
    globus.error = globus_sdk.NetworkError("no route", ConnectionError("no route"))
    assert (auth.logout().removed, token_path.exists()) == (True, False)


def test_the_stored_token_is_the_endpoint_key(
    globus: StandInAuthClient, openai_server, tmp_path: Path
) -> None:
    logged_in(globus)
    user_config = tmp_path / "xdg" / "sciagent" / "config.toml"  # the user's own: trusted with the login
    user_config.parent.mkdir(parents=True, exist_ok=True)
    user_config.write_text(
        f'[llm.facility]\nbase_url = "{openai_server.base_url}"\nmodel = "m"\nauth = "globus"\n'
    )
    openai_server.script(text_reply("ready"))
    make_model("facility", Settings().llm).chat([{"role": "user", "content": "hi"}])
    assert openai_server.requests[-1].headers["authorization"] == "Bearer AT-1"


def test_auth_cli_status_and_logout_never_print_tokens(globus: StandInAuthClient, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SCIAGENT, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    absent = run("auth", "status")
    assert absent.returncode == 1 and "not logged in" in absent.stderr
    logged_in(globus)
    present = run("auth", "status")
    assert present.returncode == 0, present.stderr
    assert "renewed automatically" in present.stdout and auth.GATEWAY_SCOPE in present.stdout
    assert "AT-1" not in present.stdout + present.stderr and "RT-1" not in present.stdout + present.stderr
    # A record without tokens: logout needs no network to revoke it, only deletes it.
    auth.token_file().write_text(json.dumps({"scope": auth.GATEWAY_SCOPE}))
    os.chmod(auth.token_file(), 0o600)
    gone = run("auth", "logout")
    assert gone.returncode == 0 and "logged out" in gone.stdout and not auth.token_file().exists()


def test_the_real_client_builds_the_facility_authorize_url_offline() -> None:
    """globus-sdk computes the URL locally: the facility's client id, scope, refresh and identity domains."""
    client = auth._auth_client()
    client.oauth2_start_flow(requested_scopes=auth.GATEWAY_SCOPE, refresh_tokens=True)
    url = client.oauth2_get_authorize_url(session_required_single_domain=list(auth.IDENTITY_DOMAINS))
    assert url.startswith("https://auth.globus.org/v2/oauth2/authorize?")
    for part in (
        "client_id=58fdd3bc-e1c3-4ce5-80ea-8d6b87cfb944",
        "scope=https%3A%2F%2Fauth.globus.org%2Fscopes%2F681c10cc-f684-4540-bcd7-0b4df3bc26ef%2Faction_all",
        "access_type=offline",
        "session_required_single_domain=anl.gov%2Calcf.anl.gov",
    ):
        assert part in url
