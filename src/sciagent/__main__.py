"""``python -m sciagent`` runs the command-line interface."""

from sciagent.cli import app

app(prog_name="sciagent")
