"""What a project-local ``sciagent.toml`` may not do on its own: redirect a built-in credential.

A ``sciagent.toml`` comes with whatever directory sciagent runs in, a cloned repository included,
and it is read with higher precedence than the user's own config. Two of its settings act with the
user's identity: a model profile's ``base_url`` (where the profile's key or Globus token is sent)
and a site's ``worker_init`` (shell run on the site's nodes under the user's allocation). So, as
direnv and mise do for their project files, sciagent trusts the user's config, not the project's:

- a project file that points a profile carrying a *built-in credential* (the Globus login, or the
  env var of a built-in profile such as ``OPENAI_API_KEY`` or ``ALCF_ACCESS_TOKEN``) at an endpoint
  the user's config and the built-ins do not name gets the credential withheld: the profile can
  still be listed, but using it is a one-line ``ConfigError`` saying why and how to trust the file;
- a project file that sets a site's ``worker_init``, or an ``[mcp.NAME]`` server's ``command`` (a
  program a session with ``--mcp NAME`` starts), is named in a warning (file and field);
- both are said once per process.

Trust comes from the user, never from the project file itself: ``--trust-local-config`` (or
``SCIAGENT_TRUST_LOCAL_CONFIG=1``), or the project's directory listed in ``trusted_projects`` in the
user's config.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli, as pydantic-settings does
    import tomli as tomllib

from sciagent.compute.sites import BUILTIN_SITES, SiteConfig
from sciagent.llm.profiles import BUILTIN_PROFILES, LLMProfile, withhold_credential

log = logging.getLogger(__name__)

TRUST_ENV = "SCIAGENT_TRUST_LOCAL_CONFIG"
_BUILTIN_KEY_ENVS = frozenset(p.api_key_env for p in BUILTIN_PROFILES.values() if p.api_key_env)
_said: set[tuple[str, ...]] = set()  # what was logged already: each message once per process


@dataclass(frozen=True)
class ConfigFiles:
    """The two config files and what each holds (an empty table for one that does not exist)."""

    project: Path
    user: Path
    project_tables: Mapping[str, Any]
    user_tables: Mapping[str, Any]

    @property
    def project_trusted(self) -> bool:
        """The user said so: the flag or env var, or the project's directory in ``trusted_projects``."""
        if os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes"):
            return True
        listed = self.user_tables.get("trusted_projects", [])
        here = self.project.resolve().parent
        return isinstance(listed, list) and any(_same_dir(entry, here) for entry in listed)


def read_config_files(project: Path, user: Path) -> ConfigFiles:
    """Both files as TOML tables; logs at INFO which ones were loaded (once per process).

    Only called after pydantic-settings parsed them, so a decode error cannot happen here.
    """
    loaded = [str(path.resolve()) for path in (project, user) if path.is_file()]
    _say_once(logging.INFO, "config files loaded: %s", ", ".join(loaded) or "none (built-in defaults)")
    return ConfigFiles(project, user, _tables(project), _tables(user))


def guard_profiles(profiles: dict[str, LLMProfile], files: ConfigFiles) -> dict[str, LLMProfile]:
    """``profiles`` with the built-in credential withheld from every endpoint only the project file names."""
    project_llm = files.project_tables.get("llm", {})
    if not isinstance(project_llm, dict) or files.project_trusted:
        return profiles
    guarded = dict(profiles)
    for name, table in project_llm.items():
        profile = profiles.get(name)
        if profile is None or not isinstance(table, dict) or "base_url" not in table:
            continue
        credential = _builtin_credential(profile)
        if credential is None or table["base_url"] == _reference(files, "llm", name, "base_url"):
            continue
        where = f"{files.project.resolve()} sets llm.{name}.base_url"
        reason = (
            f"{where} to {profile.base_url}, so sciagent does not send {credential} there; if you trust "
            f"that file, pass --trust-local-config or add its directory to trusted_projects in {files.user}"
        )
        guarded[name] = withhold_credential(profile, reason)
        _say_once(logging.WARNING, "%s: %s is withheld from that endpoint", where, credential)
    return guarded


def warn_about_sites(sites: Mapping[str, SiteConfig], files: ConfigFiles) -> None:
    """Name each site whose ``worker_init`` (shell on its nodes) comes from the project file alone."""
    for name in _set_by_project_alone(files, "sites", "worker_init", known=sites):
        _say_once(
            logging.WARNING,
            "%s sets sites.%s.worker_init: shell that runs on that site's nodes as you; read it "
            "before using the site (--trust-local-config silences this)",
            str(files.project.resolve()),
            name,
        )


def warn_about_mcp_commands(files: ConfigFiles) -> None:
    """Name each MCP server whose ``command`` (a program started as you) comes from the project file alone."""
    for name in _set_by_project_alone(files, "mcp", "command"):
        _say_once(
            logging.WARNING,
            "%s sets mcp.%s.command: a program sciagent starts as you when a session uses --mcp %s; "
            "read it first (--trust-local-config silences this)",
            str(files.project.resolve()),
            name,
            name,
        )


def _set_by_project_alone(
    files: ConfigFiles, section: str, field: str, known: Mapping[str, object] | None = None
) -> list[str]:
    """The ``[section.NAME]`` tables of an untrusted project file whose ``field`` differs from what the
    user's own config or the built-ins say (only names in ``known``, when given)."""
    tables = files.project_tables.get(section, {})
    if not isinstance(tables, dict) or files.project_trusted:
        return []
    return [
        name
        for name, table in tables.items()
        if isinstance(table, dict) and field in table and (known is None or name in known)
        and table[field] != _reference(files, section, name, field)
    ]


def _builtin_credential(profile: LLMProfile) -> str | None:
    """The built-in credential ``profile`` would send, named for a message; None if it sends none."""
    if profile.kind != "openai":
        return None
    if profile.auth == "globus":
        return "your Globus login token"
    if profile.api_key_env in _BUILTIN_KEY_ENVS:
        return f"the key in {profile.api_key_env}"
    return None


def _reference(files: ConfigFiles, section: str, name: str, field: str) -> object:
    """The value the user's config, else the built-in entry, gives ``section.name.field``."""
    user_table = files.user_tables.get(section, {})
    user_entry = user_table.get(name, {}) if isinstance(user_table, dict) else {}
    if isinstance(user_entry, dict) and field in user_entry:
        return user_entry[field]
    builtins: Mapping[str, Any] = {"llm": BUILTIN_PROFILES, "sites": BUILTIN_SITES}.get(section, {})
    builtin = builtins.get(name)
    return getattr(builtin, field) if builtin is not None else None


def _tables(path: Path) -> Mapping[str, Any]:
    try:
        return tomllib.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # pydantic-settings read it a moment ago; a file changed since is read next time


def _same_dir(entry: object, here: Path) -> bool:
    return isinstance(entry, str) and Path(entry).expanduser().resolve() == here


def _say_once(level: int, message: str, *args: str) -> None:
    key = (message, *args)
    if key not in _said:
        _said.add(key)
        log.log(level, message, *args)
