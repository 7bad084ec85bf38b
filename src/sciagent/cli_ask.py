"""``sciagent ask``: a question answered by the agent with the tool catalogue."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sciagent.agent.loop import Budget
from sciagent.cli_common import EXIT_FAILED, exit_code_for, fail, load_settings
from sciagent.console import out_console
from sciagent.durations import parse_duration
from sciagent.errors import SciagentError
from sciagent.tools.registry import Tool
from sciagent.workflows.ask import AskOptions, AskResult, ask


def ask_command(
    question: Annotated[str, typer.Argument(help="what you want to know or have done")],
    structure: Annotated[str | None, typer.Option("--structure", help="name, PDB id or file")] = None,
    llm: Annotated[str | None, typer.Option("--llm", help="model profile (sciagent llm profiles)")] = None,
    site: Annotated[str, typer.Option("--site", help="where simulations run")] = "local",
    budget: Annotated[str, typer.Option("--budget", help="wall time for the session, e.g. 10m")] = "30m",
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="model turns at most")] = 20,
    approve_all: Annotated[
        bool, typer.Option("--approve-all", help="run simulations without asking first")
    ] = False,
    workspace: Annotated[Path | None, typer.Option("--workspace", help="where sessions live")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON object at the end")] = False,
) -> None:
    """Answer a question by letting the model call sciagent's tools; every number is checked."""
    settings = load_settings()
    if workspace:
        settings = settings.model_copy(update={"workspace": workspace})
    try:
        wall = parse_duration(budget)
    except ValueError as exc:
        fail(f"invalid --budget: {exc}")
    if structure:
        question = f"{question}\n(Structure: {structure})"
    options = AskOptions(
        llm=llm,
        site=site,
        budget=Budget(max_steps=max_steps, wall_time_s=wall),
        approve=_always if approve_all else (_ask_terminal if sys.stdin.isatty() else None),
        ask_user=_question_on_terminal if sys.stdin.isatty() else None,
    )
    try:
        result = ask(question, options, settings)
    except SciagentError as exc:
        if as_json:
            typer.echo(json.dumps({"status": "failed", "error": str(exc), "exit_code": exit_code_for(exc)}))
        fail(str(exc), exit_code_for(exc))
    _print(result, as_json)
    if result.outcome.status != "answered":
        fail(f"no answer: {result.outcome.reason} (see {result.report_md})", EXIT_FAILED)


def _always(tool: Tool, arguments: dict[str, Any]) -> bool:
    return True


def _ask_terminal(tool: Tool, arguments: dict[str, Any]) -> bool:
    shown = ", ".join(f"{key}={value}" for key, value in arguments.items())
    return typer.confirm(f"run {tool.name}({shown}) [{tool.cost}]?", default=True, err=True)


def _question_on_terminal(question: str) -> str:
    return typer.prompt(f"the agent asks: {question}", err=True)


def _print(result: AskResult, as_json: bool) -> None:
    outcome = result.outcome
    if as_json:
        summary = {
            "session_id": result.session_id,
            "status": outcome.status,
            "answer": outcome.answer,
            "reason": outcome.reason,
            "tool_calls": [call.model_dump(mode="json") for call in outcome.tool_calls],
            "unattributed_numbers": outcome.unattributed_numbers,
            "results_json": str(result.results_json),
            "report_md": str(result.report_md),
        }
        typer.echo(json.dumps(summary))
        return
    out_console.print(outcome.answer or "(no answer)", highlight=False, markup=False, soft_wrap=True)
    if outcome.unattributed_numbers:
        out_console.print(
            f"unattributed numbers (in no tool result): {', '.join(outcome.unattributed_numbers)}",
            highlight=False,
            markup=False,
        )
    out_console.print(f"session: {result.session_dir}", highlight=False, markup=False, soft_wrap=True)
