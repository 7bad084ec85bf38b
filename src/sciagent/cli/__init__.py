"""The ``sciagent`` command, one module per command group (``app`` assembles them); thin: it parses,
calls the layers below and prints."""

from sciagent.cli.app import app, main

__all__ = ["app", "main"]
