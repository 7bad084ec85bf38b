"""The agent layer: journal, guardrails, policies and the tool-calling loop."""
