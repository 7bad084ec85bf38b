"""``sciagent skills list | show | remove``: the tools models wrote (and passed their tests) and the
sub-agent definitions kept in a workspace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from sciagent.cli.common import exits_on_error, settings_for
from sciagent.console import out_console
from sciagent.tools.skills import SkillLibrary

skills_app = typer.Typer(
    help="Tools models wrote whose tests passed, and saved sub-agents: offered to every later session.",
    no_args_is_help=True,
)
WorkspaceOption = Annotated[
    Path | None, typer.Option("--workspace", help="whose skills (default: the configured workspace)")
]


def _library(workspace: Path | None) -> SkillLibrary:
    return SkillLibrary.of_workspace(settings_for(workspace).workspace.resolve())


@skills_app.command("list")
def list_skills(
    workspace: WorkspaceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Every generated tool (its newest version) and saved sub-agent."""
    library = _library(workspace)
    tools = [record for record, _ in library.tools()]
    agents = library.agents()
    if as_json:
        listed = {
            "tools": [record.model_dump(mode="json") for record in tools],
            "agents": [agent.model_dump(mode="json") for agent in agents],
        }
        typer.echo(json.dumps(listed))
        return
    if not tools and not agents:
        out_console.print(f"No skills in {library.root} yet: create_tool and create_agent add them.")
        return
    columns = ("skill", "kind", "version", "tests", "model", "created (UTC)")
    table = Table(*columns, title=f"Skills in {library.root}")
    table.add_column("description", overflow="fold")
    for record in tools:
        row = (record.name, "tool", f"v{record.version}", str(record.tests_passed), record.model_id)
        table.add_row(*row, record.created_at, record.description)
    for agent in agents:
        table.add_row(agent.name, "agent", "", "", "", "", f"tools: {', '.join(agent.tools)}")
    out_console.print(table)


@skills_app.command("show")
def show_skill(
    name: Annotated[str, typer.Argument(help="the skill's name")],
    version: Annotated[int | None, typer.Option("--version", help="default: the newest")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """A skill's provenance, schema, code and tests (or a saved agent's definition)."""
    library = _library(workspace)
    with exits_on_error():
        agent = library.agent(name) if version is None else None
        if agent is not None and not any(record.name == name for record, _ in library.tools()):
            out_console.print_json(agent.model_dump_json())
            return
        record, directory = library.tool(name, version)
    out_console.print_json(record.model_dump_json())
    for file in ("tool.py", "test_tool.py"):
        out_console.rule(file)
        out_console.print(Syntax((directory / file).read_text(), "python"))


@skills_app.command("remove")
def remove_skill(
    name: Annotated[str, typer.Argument(help="the skill's name")],
    workspace: WorkspaceOption = None,
) -> None:
    """Delete a generated tool (every version) or a saved agent; later sessions no longer see it."""
    library = _library(workspace)
    with exits_on_error():
        removed = library.remove(name)
    out_console.print(f"removed {name} ({removed} version(s) or definition(s)) from {library.root}")
