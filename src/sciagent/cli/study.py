"""``sciagent run | resume | runs | show | report``: the agentic study from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from sciagent.agent.journal import Journal
from sciagent.cli.approval import confirm_on_terminal
from sciagent.cli.common import (
    EXIT_FAILED,
    RemoveUnknownResiduesOption,
    exit_code_for,
    exits_on_error,
    fail,
    fail_internal,
    load_settings,
)
from sciagent.cli.runs import jobs_table, runs_table, timeline_table
from sciagent.cli.signals import StopOnSigterm
from sciagent.config import Settings
from sciagent.console import err_console, out_console
from sciagent.durations import parse_duration
from sciagent.errors import InternalError, SciagentError, StudyStopped, Terminated
from sciagent.workflows.study.md_stability import DEFAULT_GOAL
from sciagent.workflows.study.runner import JOURNAL_FILE, RunOptions, StudyRun, resume_study, start_study
from sciagent.workflows.study.stopping import request_stop

BudgetOption = Annotated[
    str, typer.Option("--budget", help="wall time for the whole study, e.g. 300s, 5m, 1h")
]
LlmOption = Annotated[str | None, typer.Option("--llm", help="model profile (see `sciagent llm profiles`)")]
WorkspaceOption = Annotated[Path | None, typer.Option("--workspace", help="where runs and the journal live")]
JsonOption = Annotated[bool, typer.Option("--json", help="print exactly one JSON object at the end")]
ApproveOption = Annotated[bool, typer.Option("--approve", help="show the plan and ask before each batch")]


def run(
    goal: Annotated[str, typer.Argument(help="what the study should find out")] = DEFAULT_GOAL,
    structure: Annotated[str | None, typer.Option("--structure", help="name, PDB id or file")] = None,
    protein: Annotated[str | None, typer.Option("--protein", help="same as --structure")] = None,
    llm: LlmOption = None,
    site: Annotated[
        str | None, typer.Option("--site", help="where simulations run (see `sciagent sites list`)")
    ] = None,
    executor: Annotated[str | None, typer.Option("--executor", help="same as --site")] = None,
    budget: BudgetOption = "5m",
    max_simulation_time: Annotated[
        float | None, typer.Option("--max-simulation-time", help="seconds per simulation at most")
    ] = None,
    allow_unconstrained: Annotated[
        bool,
        typer.Option(
            "--allow-unconstrained",
            help="keep a plan's free bonds to hydrogen above 1 fs (expect blow-ups: tests recovery)",
        ),
    ] = False,
    remove_unknown_residues: RemoveUnknownResiduesOption = False,
    approve: ApproveOption = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Plan, run, adapt and report a molecular-dynamics stability study."""
    settings = _settings(workspace)
    options = _options(llm, budget, approve, as_json, max_simulation_time, site or executor or "local")
    options.goal, options.structure = goal, structure or protein or "villin"
    options.allow_unconstrained = allow_unconstrained
    options.remove_unknown_residues = remove_unknown_residues
    _finish(lambda: start_study(options, settings), options, settings, as_json)


def resume(
    run_id: Annotated[str, typer.Argument(help="the run id (or a unique prefix), see `sciagent runs`")],
    llm: LlmOption = None,
    site: Annotated[str | None, typer.Option("--site", help="default: the run's own site")] = None,
    budget: Annotated[
        str | None,
        typer.Option("--budget", help="time it may take from now on (default: what the run had left)"),
    ] = None,
    approve: ApproveOption = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    takeover: bool = False,
) -> None:
    """Continue an interrupted study: finished simulations are kept, interrupted ones resume."""
    settings = _settings(workspace)
    options = _options(llm, budget, approve, as_json, None, site or "")
    options.takeover = takeover
    _finish(lambda: resume_study(run_id, options, settings), options, settings, as_json)


def runs(workspace: WorkspaceOption = None) -> None:
    """List the runs in the workspace, newest first."""
    with _journal(_settings(workspace)) as journal:
        out_console.print(runs_table(journal))


def show(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")], workspace: WorkspaceOption = None
) -> None:
    """The timeline of one run: steps, model calls, simulations and adaptations."""
    with _journal(_settings(workspace)) as journal:
        with exits_on_error():
            run_row = journal.get_run(run_id)
        out_console.print(timeline_table(journal, run_row.id))


def show_jobs(run_id: str, workspace: Path | None) -> None:
    """The batch jobs of a run, after its timeline or transcript (nothing for a run without any)."""
    with _journal(_settings(workspace)) as journal, exits_on_error():
        table = jobs_table(journal, journal.get_run(run_id).id)
    if table is not None:
        out_console.print(table)


def report(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")], workspace: WorkspaceOption = None
) -> None:
    """Render a run's report again from its results.json."""
    from sciagent.report.render import load_record, render_report

    settings = _settings(workspace)
    with _journal(settings) as journal, exits_on_error():
        run_row = journal.get_run(run_id)
    run_dir = settings.workspace.resolve() / run_row.id
    results = run_dir / "results.json"
    if not results.exists():
        fail(f"run {run_row.id} has no results.json yet: finish it with `sciagent resume {run_row.id}`")
    files = render_report(load_record(results), run_dir)
    typer.echo(str(files.html))


def _settings(workspace: Path | None) -> Settings:
    settings = load_settings()
    return settings.model_copy(update={"workspace": workspace}) if workspace else settings


def _journal(settings: Settings) -> Journal:
    path = settings.workspace.resolve() / JOURNAL_FILE
    if not path.exists():
        fail(f"no runs in {settings.workspace}: start one with `sciagent run`, or pass --workspace")
    return Journal(path)


def _options(
    llm: str | None,
    budget: str | None,
    approve: bool,
    as_json: bool,
    max_simulation_time: float | None,
    site: str,
) -> RunOptions:
    try:
        budget_s = parse_duration(budget) if budget is not None else None
    except ValueError as exc:
        fail(f"invalid --budget: {exc}")
    if approve and not sys.stdin.isatty():
        fail(
            "--approve asks before each batch of simulations, but there is no terminal to ask: run without it"
        )
    return RunOptions(
        llm=llm,
        site=site,
        budget_s=budget_s,
        max_simulation_time_s=max_simulation_time,
        approve=confirm_on_terminal if approve else None,
        notify=_notify_json if as_json else _notify,
    )


def _notify(phase: str, message: str) -> None:
    err_console.print(f"[bold]{phase}[/]: {message}", highlight=False, soft_wrap=True)


def _notify_json(phase: str, message: str) -> None:
    print(f"{phase}: {message}", file=sys.stderr, flush=True)


def _finish(work: Callable[[], StudyRun], options: RunOptions, settings: Settings, as_json: bool) -> None:
    """Run the study and end the command: 0 only when every condition completed, 1 when any did not
    (the summary names them), the run failed or was stopped, 2 for bad input; ``--json`` prints one
    object always. SIGTERM asks the study to stop (``cli/signals.py``): it ends ``interrupted``."""

    def ask_to_stop(reason: str) -> bool:
        if options.run_id is None:
            return False
        request_stop(settings.workspace.resolve() / options.run_id, reason)
        return True

    try:
        with StopOnSigterm(ask_to_stop):
            study = work()
    except InternalError as exc:
        if as_json:
            _print_error_json(options, str(exc), EXIT_FAILED)
        fail_internal(exc)
    except StudyStopped as exc:
        _end_interrupted(options, exc.reason, as_json)
    except SciagentError as exc:
        _end_with_error(options, str(exc), exit_code_for(exc), as_json)
    except KeyboardInterrupt as exc:
        _end_interrupted(options, exc.reason if isinstance(exc, Terminated) else "interrupted", as_json)
    run_dir, unfinished = study.run_dir, study.unfinished
    summary = {
        "run_id": study.run_id,
        "status": "completed" if not unfinished else "completed with failures",
        "failed_conditions": unfinished,
        "report_html": str(run_dir / "report.html"),
        "report_md": str(run_dir / "report.md"),
        "results_json": str(run_dir / "results.json"),
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        for key, value in summary.items():
            out_console.print(f"{key}: {value}", highlight=False, soft_wrap=True)
    if unfinished:
        fail(f"not every condition completed: {', '.join(unfinished)} (see the report)", EXIT_FAILED)


def _end_interrupted(options: RunOptions, reason: str, as_json: bool) -> NoReturn:
    """One line: why the run stopped and the command that continues it."""
    if options.run_id is None:
        _end_with_error(options, f"{reason}: no run was started", EXIT_FAILED, as_json)
    message = f"{reason}: `sciagent resume {options.run_id}` continues the run"
    _end_with_error(options, message, EXIT_FAILED, as_json, status="interrupted")


def _end_with_error(
    options: RunOptions, message: str, code: int, as_json: bool, status: str = "failed"
) -> NoReturn:
    if as_json:
        _print_error_json(options, message, code, status)
    fail(message, code)


def _print_error_json(options: RunOptions, message: str, code: int, status: str = "failed") -> None:
    typer.echo(json.dumps({"run_id": options.run_id, "status": status, "error": message, "exit_code": code}))
