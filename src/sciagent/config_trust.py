"""What a project-local ``sciagent.toml`` may set on its own: an allow-list; anything else is refused.

A ``sciagent.toml`` comes with whatever directory sciagent runs in, a cloned repository included,
and it is read with higher precedence than the user's own config. Many settings act with the
user's identity: where a model profile sends its key, Globus token and every prompt (``base_url``,
``api_key_env``, ``auth``), which profile is used at all (``default_llm``), what runs on a site's
nodes (``worker_init``, ``scheduler_options``, ``launcher_options``), where its workers connect and
its tasks go (``address``, ``interface``, ``endpoint_id``), what it spends (``account``, ``queue``,
``walltime``, ``max_blocks``...), what its batch tools may do (``policy``), which programs and URLs
an MCP session reaches (``command``, ``url``, ``token_env``, ``trusted``), what runs unasked
(``approval``) and which host paths the tools read (``tools``). So, as direnv and mise do for
their project files, sciagent trusts the user's config, not the project's.

An untrusted project file may set only (the allow-list):

- ``workspace`` (the default, ``./sciagent-runs``, is in the project directory anyway),
  ``log_level``, and ``[study]`` (how many second chances a study gives);
- on a profile the user's config or the built-ins already define: ``model`` (an endpoint's model
  id; not on an ``embedded`` profile, where it is a file llama.cpp would parse), ``timeout_s``,
  ``max_retries``, ``response_format_style``, ``supports_native_tools``, ``guided``;
- on a site the user's config or the built-ins already define: ``description``,
  ``workers_per_node``, ``cores_per_worker``, ``cpu_affinity``, ``gpus_per_node``, ``gpu_vendor``,
  ``openmm_platform`` (how work is laid out inside the jobs the user's own settings ask for);
- on an MCP server the user's config already defines: ``timeout_s``.

Any other setting whose value differs from what the user's config (else the built-in default)
says, and any new profile, site or MCP server, makes loading the settings fail with one line naming
the file, the field and ``--trust-local-config``; so an endpoint named only by a project file never
gets a credential of any kind, nor a prompt. Refusing rather than warning matters because nobody
reads a warning under ``mcp serve`` over stdio. Trust comes from the user, never from the project
file itself: ``--trust-local-config`` (or ``SCIAGENT_TRUST_LOCAL_CONFIG=1``), or the project's
directory listed in ``trusted_projects`` in the user's config.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli, as pydantic-settings does
    import tomli as tomllib

from sciagent.compute.sites import BUILTIN_SITES
from sciagent.errors import ConfigError
from sciagent.llm.profiles import BUILTIN_PROFILES

log = logging.getLogger(__name__)

TRUST_ENV = "SCIAGENT_TRUST_LOCAL_CONFIG"
ALLOWED_SETTINGS = frozenset({"workspace", "log_level", "study"})
# [section.NAME] tables: the fields a project may set on an entry the user or the built-ins define.
ALLOWED_FIELDS: Mapping[str, frozenset[str]] = {
    "llm": frozenset(
        {"model", "timeout_s", "max_retries", "response_format_style", "supports_native_tools", "guided"}
    ),
    "sites": frozenset(
        {"description", "workers_per_node", "cores_per_worker", "cpu_affinity", "gpus_per_node", "gpu_vendor"}
        | {"openmm_platform"}
    ),
    "mcp": frozenset({"timeout_s"}),
}
_BUILTINS: Mapping[str, Mapping[str, Any]] = {"llm": BUILTIN_PROFILES, "sites": BUILTIN_SITES}
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


def refuse_untrusted_settings(files: ConfigFiles, defaults: Mapping[str, object]) -> None:
    """Raise unless the project file is trusted or sets only what the allow-list lets it.

    ``defaults`` are the top-level settings' defaults (the reference when the user's config is silent).

    Raises:
        ConfigError: one line naming the file, the first refused field and how to trust the file.
    """
    if files.project_trusted:
        return
    refused = next(_refused(files, defaults), None)
    if refused is not None:
        raise ConfigError(
            f"{files.project.resolve()} sets {refused}, which an untrusted project file may not (it could "
            "send your credentials or prompts elsewhere, run programs or spend your allocation as you, "
            "or loosen a safety setting); if you trust that file, pass --trust-local-config or add its "
            f"directory to trusted_projects in {files.user}"
        )


def _refused(files: ConfigFiles, defaults: Mapping[str, object]) -> Iterator[str]:
    """Each setting of the project file outside the allow-list that changes what the user has."""
    for key, value in files.project_tables.items():
        if key in ALLOWED_FIELDS and isinstance(value, dict):
            for name, table in value.items():
                yield from _refused_entry(files, key, name, table)
        elif key not in ALLOWED_SETTINGS and value != files.user_tables.get(key, defaults.get(key)):
            yield key


def _refused_entry(files: ConfigFiles, section: str, name: str, table: object) -> Iterator[str]:
    """The refused fields of the project's ``[section.name]``: all of a new entry, else those off the list."""
    reference = _reference(files, section, name)
    if reference is None or not isinstance(table, dict):
        fields = ", ".join(table) if isinstance(table, dict) else "a value"
        yield f"[{section}.{name}] with {fields} (an entry your config and the built-ins do not have)"
        return
    allowed = ALLOWED_FIELDS[section]
    if section == "llm" and reference.get("kind") == "embedded":
        allowed = allowed - {"model"}  # an embedded profile's model is a GGUF file to parse
    for field, value in table.items():
        if field not in allowed and value != reference.get(field):
            yield f"{section}.{name}.{field}"


def _reference(files: ConfigFiles, section: str, name: str) -> dict[str, Any] | None:
    """What the user's config laid over the built-in gives ``[section.name]``; None if neither has it."""
    builtin = _BUILTINS.get(section, {}).get(name)
    user_section = files.user_tables.get(section, {})
    user_entry = user_section.get(name) if isinstance(user_section, dict) else None
    if builtin is None and not isinstance(user_entry, dict):
        return None
    base = builtin.model_dump() if builtin is not None else {}
    return base | (user_entry if isinstance(user_entry, dict) else {})


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
