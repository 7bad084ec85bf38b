"""The external MCP servers a session asked for (``--mcp NAME``): their tools join its catalogue.

A server that fails to start, or fails later, becomes a warning event of the session that the agent
loop reads before its next model call (the same path as ``sciagent tell``), so the model knows those
tools are missing and the person finds why in ``sciagent show``; the session goes on without them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sciagent.agent.session import TELL, SessionJournal
from sciagent.config import Settings
from sciagent.mcp.client import external_tools
from sciagent.tools.registry import Tool


@contextmanager
def session_mcp_tools(
    settings: Settings, names: Sequence[str], record: SessionJournal
) -> Iterator[list[Tool]]:
    """The namespaced tools of the servers ``names`` names, for as long as the session runs.

    Raises:
        ConfigError: a name has no ``[mcp.NAME]`` table.
    """

    def problem(server: str, message: str) -> None:
        text = f"{message}; the tools of MCP server {server} are not available in this session"
        data = {"kind": TELL, "text": text, "mcp_server": server}
        record.journal.add_event(record.session_id, "warning", text, data)

    with external_tools(names, settings.mcp, problem) as tools:
        yield tools
