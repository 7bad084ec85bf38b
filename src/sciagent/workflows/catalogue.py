"""The whole catalogue: the built-in tools and the workflows registered as tools.

It lives here, not in ``sciagent.tools``, because the registry never imports workflows (DESIGN.md):
the agent session, ``sciagent tools`` and the MCP server read this one instead.
"""

from __future__ import annotations

from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.generated import skill_tool
from sciagent.tools.registry import ToolRegistry
from sciagent.tools.skills import SkillLibrary
from sciagent.workflows.study.tool import STUDY_TOOLS


def full_catalogue() -> ToolRegistry:
    """A fresh registry of every built-in tool followed by the workflow tools."""
    registry = builtin_tools()
    for tool in STUDY_TOOLS:
        registry.add(tool)
    return registry


def add_skills(registry: ToolRegistry, skills: SkillLibrary) -> ToolRegistry:
    """``registry`` with the newest version of each skill of the library (model-written tools that
    passed their tests; each call runs in the sandbox). A built-in that came later keeps its name."""
    for record, directory in skills.tools():
        if record.name not in registry:
            registry.add(skill_tool(record, directory))
    return registry
