"""``sciagent eval``: run an evaluation suite with a model profile and print its score table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sciagent.agent.evaluation import TaskScore, shipped_suites
from sciagent.cli.common import EXIT_FAILED, exit_code_for, fail, load_settings
from sciagent.console import err_console, out_console
from sciagent.errors import SciagentError
from sciagent.workflows.sessions.evaluate import EvalOptions, SuiteResult, evaluate_suite, load


def eval_command(
    suite: Annotated[
        str, typer.Argument(help=f"a shipped suite ({', '.join(shipped_suites())}) or a suite YAML file")
    ],
    llm: Annotated[str | None, typer.Option("--llm", help="model profile (sciagent llm profiles)")] = None,
    site: Annotated[str, typer.Option("--site", help="where simulations run")] = "local",
    workspace: Annotated[Path | None, typer.Option("--workspace", help="where sessions live")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON object at the end")] = False,
) -> None:
    """Score a model on a suite of tasks with deterministic checks (the format: README, "Evaluation").

    Each task is a `sciagent ask` session with every tool approved; the run is kept in the journal.
    Exits 1 when a check failed.
    """
    settings = load_settings()
    if workspace:
        settings = settings.model_copy(update={"workspace": workspace})
    try:
        result = evaluate_suite(load(suite), EvalOptions(llm=llm, site=site), settings, on_task=_progress)
    except SciagentError as exc:
        if as_json:
            typer.echo(json.dumps({"status": "failed", "error": str(exc), "exit_code": exit_code_for(exc)}))
        fail(str(exc), exit_code_for(exc))
    if as_json:
        typer.echo(json.dumps(_summary(result)))
    else:
        _print(result)
    failed = result.total - result.passed
    if failed:
        fail(f"{failed} of {result.total} checks failed (run {result.run_id})", EXIT_FAILED)


def _progress(score: TaskScore) -> None:
    err_console.print(f"{score.task_id}: {score.passed}/{score.total}", highlight=False, markup=False)


def _summary(result: SuiteResult) -> dict[str, object]:
    return {
        "suite": result.suite.name,
        "run_id": result.run_id,
        "passed": result.passed,
        "total": result.total,
        "steps": result.steps,
        "tokens": result.tokens,
        "wall_time_s": result.wall_time_s,
        "tasks": [score.model_dump(mode="json") for score in result.scores],
    }


def _print(result: SuiteResult) -> None:
    table = Table(title=f"Suite {result.suite.name} (run {result.run_id})")
    table.add_column("task")
    for column in ("score", "steps", "tokens", "seconds"):
        table.add_column(column, justify="right")
    for score in result.scores:
        table.add_row(score.task_id, *_cells(score))
    table.add_section()
    table.add_row("total", *_cells(result))
    out_console.print(table)
    for score in result.scores:
        for check in score.checks:
            if not check.passed:
                line = f"{score.task_id}: {check.check}: {check.detail}"
                out_console.print(line, highlight=False, markup=False, soft_wrap=True)


def _cells(row: TaskScore | SuiteResult) -> list[str]:
    return [f"{row.passed}/{row.total}", str(row.steps), f"{row.tokens:,}", f"{row.wall_time_s:.1f}"]
