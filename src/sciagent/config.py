"""``Settings``: the one configuration object.

Precedence, lowest first: defaults < ``~/.config/sciagent/config.toml`` < ``./sciagent.toml`` <
environment (``SCIAGENT_*``) < CLI flags (applied by the CLI on top of a loaded ``Settings``).
What ``./sciagent.toml`` may set on its own (an allow-list; anything else is refused unless the user
trusts the file) is in ``sciagent.config_trust``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal, get_args

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli, as pydantic-settings does
    import tomli as tomllib

from sciagent.compute.sites import SiteConfig, overlay_builtin_sites
from sciagent.config_trust import read_config_files, refuse_untrusted_settings
from sciagent.llm.profiles import LLMProfile, overlay_builtin_profiles


class StudySettings(BaseModel):
    """``[study]``: how many second chances a study gives each condition (``workflows/study/policy.py``)."""

    transient_retries: int = Field(default=2, ge=0, le=10, description="re-runs after a lost worker")
    adaptation_rounds: int = Field(default=2, ge=0, le=10, description="fixes tried after a blow-up")
    extensions: int = Field(default=1, ge=0, le=10, description="longer runs when there is no verdict yet")
    min_production_ps: float | None = Field(
        default=None,
        gt=0,
        description="the production each run is planned for at least (the plan's maximum is twice it); "
        "None: the verdict's own minimum. Lower only for a quick look: the analysis still judges a "
        "shorter run too short",
    )


class ToolsSettings(BaseModel):
    """``[tools]``: what the catalogue's tools may touch beyond the session (a project file may not set it).

    ``allowed_paths``: directories (and everything under them) whose files the structure tools may
    read, besides the session directory, the structure cache and the bundled names.
    """

    model_config = ConfigDict(extra="forbid")

    allowed_paths: list[Path] = Field(default_factory=list, description="directories tools may read")


_MCP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class McpServerConfig(BaseModel):
    """``[mcp.NAME]``: an external MCP server whose tools a session may add (``--mcp NAME``).

    Either ``command`` (started as a child speaking MCP on stdin/stdout, ended with the session) or
    ``url`` (streamable HTTP, with the bearer token read from the env var ``token_env``). ``tools``
    lists the server's tools the model may see; none: all of them.
    """

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(default=None, min_length=1, description="program and arguments")
    url: str | None = Field(default=None, pattern=r"^https?://", description="the server's MCP endpoint")
    token_env: str | None = Field(default=None, min_length=1, description="env var holding the bearer token")
    tools: list[str] | None = Field(default=None, description="allow-list of the server's tool names")
    timeout_s: float = Field(default=30.0, gt=0, le=3600, description="longest wait for any one answer")
    trusted: bool = Field(
        default=False, description="believe the server's read-only hints (its read-only tools run unasked)"
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a program to start) or url (streamable HTTP), not both")
        if self.token_env and self.url is None:
            raise ValueError("token_env goes with url: a command's server needs no bearer token")
        return self


ApprovalDecision = Literal["allow", "ask", "deny"]
# What a tool does, which decides whether someone must approve a call (``sciagent.tools.approval``):
# reads (nothing changes), computes (here, on this machine), writes (files in the session), spends (an
# allocation: submits or releases batch work, runs work on a batch site), destroys (cancels, holds,
# removes), runs_code (model-written code), reaches_outside (the network, an external MCP server).
Effect = Literal["reads", "computes", "writes", "spends", "destroys", "runs_code", "reaches_outside"]
EFFECTS: tuple[str, ...] = get_args(Effect)


class ApprovalRule(BaseModel):
    """One ``[[approval.rules]]`` entry: which calls it covers and what happens to them.

    Every field given must match (``tool`` may be a glob such as ``hpc.*``); ``queue``,
    ``max_nodes`` and ``max_walltime`` match only calls that state them (a job submission), so a rule
    allowing small debug jobs never allows a call whose size is unknown.
    """

    model_config = ConfigDict(extra="forbid")

    decision: ApprovalDecision
    tool: str | None = Field(default=None, min_length=1, description="a tool name or glob")
    effect: Effect | None = Field(default=None, description="only this effect of the call")
    site: str | None = Field(default=None, min_length=1)
    queue: str | None = Field(default=None, min_length=1, description="PBS queue or Slurm partition")
    max_nodes: int | None = Field(default=None, ge=1)
    max_walltime: str | None = Field(
        default=None, pattern=r"^\d{1,3}:[0-5]\d:[0-5]\d$", description="HH:MM:SS at most"
    )

    @property
    def max_walltime_s(self) -> int | None:
        if self.max_walltime is None:
            return None
        hours, minutes, seconds = (int(part) for part in self.max_walltime.split(":"))
        return hours * 3600 + minutes * 60 + seconds


class ApprovalSettings(BaseModel):
    """``[approval]``: rules tried in order before the defaults (``sciagent.tools.approval``)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[ApprovalRule] = Field(default_factory=list)


def user_config_file() -> Path:
    """The per-user config file (it may not exist)."""
    return Path(platformdirs.user_config_dir("sciagent")) / "config.toml"


def project_config_file() -> Path:
    """The project's config file in the current directory (it may not exist)."""
    return Path("sciagent.toml")


def config_file_error(error: Exception) -> str:
    """Name the config file that does not parse, with the line and column of the mistake.

    pydantic-settings raises the TOML parser's error without the file name, so each file is parsed
    again here to find the one at fault.
    """
    for path in (project_config_file(), user_config_file()):
        if not path.is_file():
            continue
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            return f"{path.resolve()} is not valid TOML: {exc}"
        except (OSError, UnicodeDecodeError) as exc:
            return f"{path} cannot be read: {exc}"
    return f"a config file is not valid TOML: {error}"


class Settings(BaseSettings):
    """Where runs go, how chatty sciagent is, and which language models it can talk to.

    ``llm`` holds the user's ``[llm.NAME]`` tables (added to, or laid over, the built-in profiles in
    ``sciagent.llm.profiles``); ``default_llm`` names the profile used when none is given.
    ``sites`` holds the user's ``[sites.NAME]`` tables, laid over the built-in sites of
    ``sciagent.compute.sites`` in the same way. ``study`` holds the ``[study]`` retry limits.
    ``mcp`` holds the ``[mcp.NAME]`` external MCP servers a session may use. ``approval`` holds the
    ``[approval]`` rules deciding which tool calls run without asking. ``tools`` holds ``[tools]``:
    the host paths the tools may read besides the session's own.
    """

    # hide_input_in_errors: a misplaced API key in a config table must not be echoed by a validation error.
    model_config = SettingsConfigDict(env_prefix="SCIAGENT_", extra="ignore", hide_input_in_errors=True)

    workspace: Path = Path("sciagent-runs")
    log_level: str = "WARNING"
    llm: dict[str, LLMProfile] = Field(default_factory=dict)
    default_llm: str = "embedded"
    sites: dict[str, SiteConfig] = Field(default_factory=dict)
    study: StudySettings = Field(default_factory=StudySettings)
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)

    @field_validator("llm", mode="before")
    @classmethod
    def _over_builtin_profiles(cls, value: object) -> object:
        # A [llm.alcf] table with just `model = ...` overrides that field of the built-in profile.
        return overlay_builtin_profiles(value)

    @field_validator("sites", mode="before")
    @classmethod
    def _over_builtin_sites(cls, value: object) -> object:
        return overlay_builtin_sites(value)

    @field_validator("mcp")
    @classmethod
    def _server_names(cls, value: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in value:
            if not _MCP_NAME.match(name):
                raise ValueError(
                    f"[mcp.{name}]: the name prefixes its tools (NAME.tool): use lower_snake_case"
                )
        return value

    @model_validator(mode="after")
    def _guard_project_config(self) -> Settings:
        # A cloned directory's sciagent.toml must not send the user's credentials elsewhere, run
        # programs or spend as the user, or loosen a safety setting: every command loads settings here.
        files = read_config_files(project_config_file(), user_config_file())
        fields = type(self).model_fields
        defaults = {name: field.get_default(call_default_factory=True) for name, field in fields.items()}
        refuse_untrusted_settings(files, defaults)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: init (CLI) > env > ./sciagent.toml > user config.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, project_config_file()),
            TomlConfigSettingsSource(settings_cls, user_config_file()),
        )
