"""The built-in catalogue: every tool sciagent ships, in one registry (what the agent, ``sciagent tools``
and the MCP server read). A new tool family goes in its own module under ``sciagent/tools`` and is
added here."""

from __future__ import annotations

from sciagent.tools.analysis import ANALYSIS_TOOLS
from sciagent.tools.chem import CHEM_TOOLS
from sciagent.tools.conversation import CONVERSATION_TOOLS
from sciagent.tools.files import FILE_TOOLS
from sciagent.tools.plots import PLOT_TOOLS
from sciagent.tools.registry import ToolRegistry
from sciagent.tools.scheduler import SCHEDULER_TOOLS
from sciagent.tools.structures import STRUCTURE_TOOLS
from sciagent.tools.tasks import TASK_TOOLS


def builtin_tools() -> ToolRegistry:
    """A fresh registry of the built-in tools (callers may add their own to it)."""
    families = [
        STRUCTURE_TOOLS,
        TASK_TOOLS,
        ANALYSIS_TOOLS,
        PLOT_TOOLS,
        FILE_TOOLS,
        CONVERSATION_TOOLS,
        SCHEDULER_TOOLS,
        CHEM_TOOLS,
    ]
    return ToolRegistry.of(tool for family in families for tool in family)
