"""The workspace's skill library: tools a model wrote whose tests passed, and sub-agent definitions
that worked, kept so later sessions (and the MCP server) are offered them.

On disk, under ``<workspace>/skills``::

    tools/<name>/v<version>/tool.py        the function (its name is the tool's)
    tools/<name>/v<version>/test_tool.py   the tests it passed (``from tool import ...``)
    tools/<name>/v<version>/test.log       what pytest printed when they passed
    tools/<name>/v<version>/skill.json     schema, description, model id, prompt digest, session
    agents/<name>.json                     a sub-agent definition (instructions, tools, budget)

Plain files, so a person can read, diff, review or delete a skill; each version is written once and
never changed (a fix is a new version), and the newest version of each name is the one offered.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sciagent.atomic import write_atomic
from sciagent.errors import UserError

SKILLS_DIR = "skills"
SKILL_NAME = re.compile(r"^[a-z][a-z0-9_]{2,47}$")
_VERSION_DIR = re.compile(r"^v(\d+)$")


class SkillRecord(BaseModel):
    """One version of a generated tool, as ``skill.json`` keeps it."""

    name: str
    version: int
    description: str
    parameters: dict[str, Any] = Field(description="the JSON schema of its arguments")
    model_id: str = Field(description="the model that wrote it")
    prompt_digest: str = Field(description="sha256 of the transcript the model had when it wrote it")
    session_id: str | None = None
    created_at: str
    tests_passed: int


class AgentDefinition(BaseModel):
    """A sub-agent as ``create_agent`` defines it: what it is told, which tools it gets, its budget."""

    name: str
    instructions: str
    tools: list[str]
    max_steps: int = 10
    max_tokens: int = 50_000


class SkillLibrary:
    """The skills of one workspace (``root`` is its ``skills`` directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of_workspace(cls, workspace: Path) -> SkillLibrary:
        return cls(workspace / SKILLS_DIR)

    # --- generated tools --------------------------------------------------------------------------

    def save_tool(self, record: SkillRecord, code: str, tests: str, test_log: str) -> Path:
        """Write a new version (``record.version`` as ``next_version`` gave it); its directory."""
        directory = self._tool_dir(record.name) / f"v{record.version}"
        if directory.exists():
            raise FileExistsError(f"skill {record.name} v{record.version} exists already")
        write_atomic(directory / "tool.py", code)
        write_atomic(directory / "test_tool.py", tests)
        write_atomic(directory / "test.log", test_log)
        write_atomic(directory / "skill.json", record.model_dump_json(indent=2))  # last: marks it whole
        return directory

    def next_version(self, name: str) -> int:
        return max(self._versions(name), default=0) + 1

    def tools(self) -> list[tuple[SkillRecord, Path]]:
        """The newest version of every generated tool, by name."""
        found = []
        for directory in sorted(self.root.joinpath("tools").glob("*")) if self.root.exists() else []:
            if directory.is_dir() and SKILL_NAME.match(directory.name) and self._versions(directory.name):
                found.append(self.tool(directory.name))
        return found

    def tool(self, name: str, version: int | None = None) -> tuple[SkillRecord, Path]:
        """One version of a generated tool (the newest by default) and its directory.

        Raises:
            UserError: there is no such skill or version.
        """
        versions = self._versions(name)
        if not versions:
            raise UserError(f"no skill named {name!r} in {self.root}: `sciagent skills list` shows them")
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            raise UserError(
                f"skill {name} has versions {', '.join(map(str, sorted(versions)))}, not {chosen}"
            )
        directory = self._tool_dir(name) / f"v{chosen}"
        return SkillRecord.model_validate_json((directory / "skill.json").read_text()), directory

    def remove(self, name: str) -> int:
        """Delete every version of a generated tool or a saved agent; how many things were removed."""
        removed = 0
        if self._versions(name):
            removed += len(self._versions(name))
            shutil.rmtree(self._tool_dir(name))
        agent = self._agent_file(name)
        if agent.exists():
            agent.unlink()
            removed += 1
        if not removed:
            raise UserError(
                f"no skill or agent named {name!r} in {self.root}: `sciagent skills list` shows them"
            )
        return removed

    # --- sub-agent definitions --------------------------------------------------------------------

    def save_agent(self, definition: AgentDefinition) -> Path:
        return write_atomic(self._agent_file(definition.name), definition.model_dump_json(indent=2))

    def agents(self) -> list[AgentDefinition]:
        directory = self.root / "agents"
        files = sorted(directory.glob("*.json")) if directory.exists() else []
        return [AgentDefinition.model_validate_json(path.read_text()) for path in files]

    def agent(self, name: str) -> AgentDefinition | None:
        path = self._agent_file(name)
        return AgentDefinition.model_validate_json(path.read_text()) if path.exists() else None

    # --- paths ------------------------------------------------------------------------------------

    def _tool_dir(self, name: str) -> Path:
        if not SKILL_NAME.match(name):
            raise UserError(f"{name!r} is not a skill name (lower_snake_case, 3-48 characters)")
        return self.root / "tools" / name

    def _agent_file(self, name: str) -> Path:
        if not SKILL_NAME.match(name):
            raise UserError(f"{name!r} is not an agent name (lower_snake_case, 3-48 characters)")
        return self.root / "agents" / f"{name}.json"

    def _versions(self, name: str) -> list[int]:
        directory = self._tool_dir(name)
        if not directory.is_dir():
            return []
        return [
            int(match.group(1))
            for child in directory.iterdir()
            if (match := _VERSION_DIR.match(child.name)) and (child / "skill.json").exists()
        ]


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
