"""Open-ended sessions: ``ask``, chat, sub-agents, MCP-served sessions and their evaluation."""
