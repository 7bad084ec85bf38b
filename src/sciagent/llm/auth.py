"""Access tokens for the facility inference endpoints: an env var, or a stored Globus login.

The facility's OpenAI-compatible service takes a Globus access token as its API key. ``login`` runs
Globus's native-app flow once (print a URL, paste back a code) with the facility's public client id,
the inference gateway's scope and its identity-domain rule, and stores the tokens; later calls refresh
the access token with the stored refresh token, so a login lasts until it has been idle ~6 months.

Where a token comes from, first match wins:
    1. the profile's ``api_key_env`` env var (``ALCF_ACCESS_TOKEN`` for ``alcf``), e.g. in batch jobs;
    2. the token file, ``platformdirs.user_config_dir("sciagent")/tokens.json`` (``SCIAGENT_TOKEN_FILE``
       overrides the path), written atomically with mode 0600, refreshed when about to expire.

Tokens are secrets: they are never logged, printed, put in exceptions or in ``AuthStatus``. Every
value handed out is registered with ``sciagent.redaction`` (memory only), so the journal, reports,
logs and ``redaction.scrub`` of text that came back from a third party (an error body) never hold it.

All traffic to Globus Auth goes through one seam, ``_auth_client()``; tests replace it (and only it)
with a stand-in because Globus cannot be reached from the test machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from sciagent.atomic import write_atomic
from sciagent.errors import ConfigError, ModelUnavailable
from sciagent.llm.profiles import ALCF_TOKEN_ENV
from sciagent.redaction import register_secret

if TYPE_CHECKING:
    from sciagent.llm.profiles import LLMProfile

log = logging.getLogger(__name__)

# The facility's published public identifiers (not secrets): see DESIGN.md, "Facility facts".
NATIVE_CLIENT_ID = "58fdd3bc-e1c3-4ce5-80ea-8d6b87cfb944"
GATEWAY_CLIENT_ID = "681c10cc-f684-4540-bcd7-0b4df3bc26ef"
GATEWAY_SCOPE = f"https://auth.globus.org/scopes/{GATEWAY_CLIENT_ID}/action_all"
IDENTITY_DOMAINS = ("anl.gov", "alcf.anl.gov")
TOKEN_FILE_ENV = "SCIAGENT_TOKEN_FILE"
REFRESH_MARGIN_S = 120  # refresh this long before expiry, so a request never carries a dying token


@dataclass(frozen=True)
class AuthStatus:
    """What is known about the stored login, without the token itself.

    Attributes:
        logged_in: a token file with a usable access or refresh token exists.
        token_file: where the tokens are (or would be) stored.
        expires_at: when the current access token expires (it is refreshed automatically).
        scopes: the scopes the tokens grant.
        refreshable: a refresh token is stored, so an expired access token is renewed without a login.
        env_override: the env var that currently overrides the stored login, if it is set.
        problem: why the token file could not be used, if it exists but is unreadable.
    """

    logged_in: bool
    token_file: Path
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    refreshable: bool = False
    env_override: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class LogoutResult:
    removed: bool  # a token file was deleted
    revoked: bool  # Globus confirmed the tokens are revoked


def token_file() -> Path:
    """The token file's path (``SCIAGENT_TOKEN_FILE`` wins, for tests and shared machines)."""
    override = os.environ.get(TOKEN_FILE_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir("sciagent")) / "tokens.json"


def _auth_client() -> Any:
    """The one seam to Globus Auth: a ``globus_sdk.NativeAppAuthClient`` for the facility's app.

    Tests replace this function with a stand-in that has the same methods, because Globus cannot be
    reached from the test machines; everything around it is the real code.
    """
    import globus_sdk

    return globus_sdk.NativeAppAuthClient(NATIVE_CLIENT_ID, app_name="sciagent")


def _globus_errors() -> tuple[type[Exception], type[Exception]]:
    import globus_sdk

    return globus_sdk.GlobusAPIError, globus_sdk.NetworkError


def get_access_token(profile: LLMProfile) -> str | None:
    """The key for ``profile``, or ``None`` when there is none.

    Raises:
        ConfigError: the token file is unreadable, or Globus refused the stored refresh token.
        ModelUnavailable: Globus Auth could not be reached to refresh an expired token.
    """
    if profile.api_key_env and (value := os.environ.get(profile.api_key_env)):
        return _hand_out(value)
    if profile.auth != "globus":
        return None
    tokens = _read_tokens()
    if tokens is None:
        return None
    if tokens.get("access_token") and tokens.get("expires_at_seconds", 0) - time.time() > REFRESH_MARGIN_S:
        return _hand_out(tokens["access_token"])
    if not tokens.get("refresh_token"):
        return None  # expired and not renewable: the caller says "run sciagent auth login"
    return _hand_out(_refresh(tokens)["access_token"])


def login(input_fn: Callable[[str], str] = input, print_fn: Callable[[str], None] = print) -> AuthStatus:
    """Log in with Globus (native-app flow): print the URL, read the code, store the tokens.

    Raises:
        ConfigError: no code was entered, Globus refused it, or the grant lacks the gateway scope.
        ModelUnavailable: Globus Auth could not be reached.
    """
    client = _auth_client()
    client.oauth2_start_flow(
        requested_scopes=GATEWAY_SCOPE,
        refresh_tokens=True,
        prefill_named_grant=f"sciagent on {socket.gethostname()}",
    )
    url = client.oauth2_get_authorize_url(session_required_single_domain=list(IDENTITY_DOMAINS))
    print_fn(f"Open this URL, log in with an ANL or ALCF identity, and paste the code shown:\n\n{url}\n")
    code = input_fn("Authorization code: ").strip()
    if not code:
        raise ConfigError("no authorization code entered: run `sciagent auth login` again")
    api_error, network_error = _globus_errors()
    try:
        response = client.oauth2_exchange_code_for_tokens(code)
    except api_error as exc:
        raise ConfigError(
            f"Globus refused the authorization code (HTTP {exc.http_status}): log in again"
        ) from exc
    except network_error as exc:
        raise ModelUnavailable(f"could not reach Globus Auth: {type(exc).__name__}") from exc
    tokens = response.by_resource_server.get(GATEWAY_CLIENT_ID)
    if not tokens:
        raise ConfigError("the Globus login did not grant the inference gateway's scope: log in again")
    _write_tokens(tokens)
    return status()


def status(env_var: str | None = ALCF_TOKEN_ENV) -> AuthStatus:
    """The stored login's state (reads the token file only; no network, no refresh)."""
    path = token_file()
    override = env_var if env_var and os.environ.get(env_var) else None
    try:
        tokens = _read_tokens()
    except ConfigError as exc:
        return AuthStatus(False, path, env_override=override, problem=str(exc))
    if tokens is None:
        return AuthStatus(False, path, env_override=override)
    expires = tokens.get("expires_at_seconds")
    refreshable = bool(tokens.get("refresh_token"))
    return AuthStatus(
        logged_in=refreshable or (bool(tokens.get("access_token")) and (expires or 0) > time.time()),
        token_file=path,
        expires_at=datetime.fromtimestamp(expires, tz=timezone.utc) if expires else None,
        scopes=tuple(str(tokens.get("scope", "")).split()),
        refreshable=refreshable,
        env_override=override,
    )


def logout() -> LogoutResult:
    """Revoke the stored tokens if Globus can be reached (best effort), then delete the token file."""
    path = token_file()
    if not path.exists():
        return LogoutResult(removed=False, revoked=False)
    revoked = False
    with contextlib.suppress(ConfigError):  # an unreadable file is still deleted
        tokens = _read_tokens() or {}
        secrets = [tokens[k] for k in ("refresh_token", "access_token") if tokens.get(k)]
        revoked = bool(secrets) and _revoke(secrets)
    path.unlink(missing_ok=True)
    return LogoutResult(removed=True, revoked=revoked)


def _hand_out(token: str) -> str:
    register_secret(token)
    return token


def _revoke(tokens: list[str]) -> bool:
    api_error, network_error = _globus_errors()
    try:
        client = _auth_client()
        for token in tokens:
            client.oauth2_revoke_token(token)
    except (api_error, network_error) as exc:
        log.warning("could not revoke the Globus tokens (%s); deleting them locally", type(exc).__name__)
        return False
    return True


def _refresh(tokens: dict[str, Any]) -> dict[str, Any]:
    api_error, network_error = _globus_errors()
    log.debug("refreshing the Globus access token for the inference gateway")
    try:
        response = _auth_client().oauth2_refresh_token(tokens["refresh_token"])
    except api_error as exc:
        raise ConfigError(
            f"Globus refused the stored login (HTTP {exc.http_status}): run `sciagent auth login`"
        ) from exc
    except network_error as exc:
        raise ModelUnavailable(
            f"could not reach Globus Auth to refresh the token: {type(exc).__name__}"
        ) from exc
    fresh = dict(response.by_resource_server.get(GATEWAY_CLIENT_ID) or {})
    if not fresh.get("access_token"):
        raise ConfigError("Globus did not renew the inference gateway token: run `sciagent auth login`")
    fresh.setdefault("refresh_token", tokens["refresh_token"])  # kept unless Globus rotated it
    _write_tokens(fresh)
    return fresh


_STORED_FIELDS = (
    "access_token",
    "refresh_token",
    "expires_at_seconds",
    "scope",
    "token_type",
    "resource_server",
)


def _read_tokens() -> dict[str, Any] | None:
    path = token_file()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & 0o077:
        log.warning("token file %s was readable by others; restricting it to its owner", path)
        path.chmod(0o600)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # never echo the content: it is a secret
        raise ConfigError(
            f"token file {path} is unreadable ({type(exc).__name__}): run `sciagent auth login`"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"token file {path} is not a token record: run `sciagent auth login`")
    return data


def _write_tokens(tokens: dict[str, Any]) -> None:
    """Write the token file atomically, created 0600 from the start (never briefly world-readable)."""
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = {key: tokens[key] for key in _STORED_FIELDS if key in tokens}
    write_atomic(path, json.dumps(record), mode=0o600)
