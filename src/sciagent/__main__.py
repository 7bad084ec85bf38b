"""``python -m sciagent`` runs the command-line interface."""

from sciagent.cli import main

main()
