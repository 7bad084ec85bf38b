"""``sciagent tools``: the catalogue a model, an MCP client or a person can use."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from sciagent.console import out_console
from sciagent.workflows.catalogue import full_catalogue


def tools(
    as_json: Annotated[bool, typer.Option("--json", help="names, descriptions and argument schemas")] = False,
) -> None:
    """List the tools the agent can call (and the MCP server serves)."""
    described = full_catalogue().describe()
    if as_json:
        typer.echo(json.dumps(described))
        return
    table = Table("tool", "cost", "effects")
    table.add_column("description", overflow="fold")
    for tool in described:
        effects = [*tool["effects"], *(["runs on a site"] if tool["runs_on_site"] else [])]
        table.add_row(tool["name"], tool["cost"], ", ".join(effects), tool["description"])
    out_console.print(table)
