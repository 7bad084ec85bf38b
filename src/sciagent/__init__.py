"""sciagent: agentic scientific workflows."""
