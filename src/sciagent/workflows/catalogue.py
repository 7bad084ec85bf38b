"""The whole catalogue: the built-in tools and the workflows registered as tools.

It lives here, not in ``sciagent.tools``, because the registry never imports workflows (DESIGN.md):
the agent session, ``sciagent tools`` and the MCP server read this one instead.
"""

from __future__ import annotations

from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolRegistry
from sciagent.workflows.study_tool import STUDY_TOOLS


def full_catalogue() -> ToolRegistry:
    """A fresh registry of every built-in tool followed by the workflow tools."""
    registry = builtin_tools()
    for tool in STUDY_TOOLS:
        registry.add(tool)
    return registry
