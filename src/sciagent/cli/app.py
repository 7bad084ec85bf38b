"""The ``sciagent`` command: parses, calls the layers below, prints. No science happens here."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from sciagent.agent.journal import JOURNAL_FILENAME, Journal
from sciagent.agent.session import CHEM_KIND, EVAL_KIND, MCP_KIND, SESSION_KIND, run_kind
from sciagent.cli import ask as cli_ask
from sciagent.cli import eval as cli_eval
from sciagent.cli import jobs as cli_jobs
from sciagent.cli import study as cli_study
from sciagent.cli import tools as cli_tools
from sciagent.cli import ui as cli_ui
from sciagent.cli.approval import approve_command
from sciagent.cli.chem import chem_app
from sciagent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    RemoveUnknownResiduesOption,
    UnsandboxedOption,
    exits_on_error,
    fail,
    fail_internal,
    load_settings,
    settings_for,
)
from sciagent.cli.llm import auth_app, llm_app
from sciagent.cli.mcp import mcp_app
from sciagent.cli.sites import sites_app
from sciagent.cli.skills import skills_app
from sciagent.compute.sites import make_executor, resolve_site
from sciagent.config_trust import TRUST_ENV
from sciagent.console import err_console, md_progress, out_console
from sciagent.crash import record_internal_error
from sciagent.errors import SciagentError
from sciagent.progress import SimulationProgress
from sciagent.redaction import RedactingFormatter
from sciagent.science.simulate import SimulationOutcome, simulate_and_analyze
from sciagent.science.spec import MDSpec
from sciagent.summaries import simulation_table, structures_tables

app = typer.Typer(
    help="Agentic scientific workflows: molecular dynamics planned, run and reported.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(cli_study.run)
app.command()(cli_study.runs)
app.command()(cli_study.report)
app.command()(cli_tools.tools)
app.command("ask")(cli_ask.ask_command)
app.command("eval")(cli_eval.eval_command)
app.command("chat")(cli_ask.chat_command)
app.command("tell")(cli_ask.tell_command)
app.command("approve")(approve_command)
app.command("submit")(cli_jobs.submit_command)
app.command("ui")(cli_ui.ui_command)
app.add_typer(cli_jobs.job_app, name="job")
app.add_typer(llm_app, name="llm")
app.add_typer(auth_app, name="auth")
app.add_typer(sites_app, name="sites")
app.add_typer(mcp_app, name="mcp")
app.add_typer(skills_app, name="skills")
app.add_typer(chem_app, name="chem")

# MDSpec field → the flag a user typed, so a validation error names what the user can change.
_FLAG_FOR_FIELD = {
    "temperature_k": "--temperature",
    "production_steps": "--steps",
    "equilibration_steps": "--equilibration",
    "timestep_fs": "--timestep",
    "report_interval": "--report-interval",
    "max_wall_time_s": "--max-wall-time",
    "seed": "--seed",
}


def main() -> None:
    """The ``sciagent`` entry point: the app, with any bug turned into one line and a log file."""
    try:
        app(prog_name="sciagent")
    except Exception as exc:  # not ours: typer handled its own exits; ours became one-line errors
        try:
            fail_internal(record_internal_error(exc))
        except typer.Exit as end:
            sys.exit(end.exit_code)


@app.callback()
def setup(
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR", envvar="SCIAGENT_LOG_LEVEL")
    ] = "WARNING",
    trust_local_config: Annotated[
        bool,
        typer.Option(
            "--trust-local-config",
            help="let ./sciagent.toml set what only your own config may (endpoints, keys, default_llm, "
            "site scripts and policy, MCP servers, approval rules)",
        ),
    ] = False,
) -> None:
    """Set up logging for every command, and whether the project's sciagent.toml is trusted."""
    if trust_local_config:
        os.environ[TRUST_ENV] = "1"  # read where Settings loads; inherited by what sciagent starts
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"unknown --log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])  # every line scrubbed of registered credentials


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="a study's or a session's id (or a unique prefix)")],
    llm: cli_study.LlmOption = None,
    site: Annotated[str | None, typer.Option("--site", help="default: the run's own site")] = None,
    budget: Annotated[
        str | None,
        typer.Option("--budget", help="time it may take from now on (default: what a study had left)"),
    ] = None,
    approve: cli_study.ApproveOption = False,
    approve_all: cli_ask.ApproveAllOption = False,
    wait_for_approval: cli_ask.WaitApprovalOption = None,
    max_steps: cli_ask.MaxStepsOption = 20,
    allow_unsandboxed_code: UnsandboxedOption = False,
    takeover: Annotated[
        bool,
        typer.Option(
            "--takeover",
            help="resume though its owner, recorded on another host, never released it (only if that "
            "process is gone)",
        ),
    ] = False,
    workspace: cli_study.WorkspaceOption = None,
    as_json: cli_study.JsonOption = False,
) -> None:
    """Continue an interrupted study or ask/chat session: finished work is kept, not done again.

    One process works on a run at a time: while another owns it, this says which and exits 2.
    """
    kind = _run_kind(run_id, workspace)
    if kind == SESSION_KIND:
        unsandboxed = allow_unsandboxed_code
        approvals = cli_ask.Approvals(approve_all, wait_for_approval)
        wall, ws = budget or "30m", workspace
        cli_ask.resume_session(
            run_id, llm, site, wall, max_steps, approvals, unsandboxed, ws, as_json, takeover=takeover
        )
    elif kind == EVAL_KIND:
        fail(f"{run_id} is an evaluation: evaluations are not resumed, run `sciagent eval` again")
    elif kind == MCP_KIND:
        fail(f"{run_id} is the MCP server's record: `sciagent mcp serve` takes its simulations up again")
    elif kind == CHEM_KIND:
        fail(f"{run_id} is a chemistry calculation: it is not resumed, run `sciagent chem energy` again")
    else:
        cli_study.resume(run_id, llm, site, budget, approve, workspace, as_json, takeover=takeover)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run or session id, or a unique prefix")],
    workspace: cli_study.WorkspaceOption = None,
) -> None:
    """The timeline of a study (steps, model calls, simulations) or the transcript of a session."""
    if _run_kind(run_id, workspace) == SESSION_KIND:
        cli_ask.show_session(run_id, settings_for(workspace))
    else:
        cli_study.show(run_id, workspace)
    cli_study.show_jobs(run_id, workspace)  # a run carried through batch jobs (sciagent submit)


def _run_kind(run_id: str, workspace: Path | None) -> str:
    """What ``run_id`` names: ``session``, ``eval`` or ``study`` (also for an unknown id, which the
    study command then reports in its one line)."""
    settings = settings_for(workspace)
    path = settings.workspace.resolve() / JOURNAL_FILENAME
    if not path.exists():
        return "study"
    with Journal(path) as journal:
        try:
            return run_kind(journal.get_run(run_id).config)
        except SciagentError:
            return "study"


@app.command()
def structures() -> None:
    """List the bundled structures and the protein names sciagent maps to PDB ids."""
    for table in structures_tables():
        out_console.print(table)


@app.command()
def simulate(
    structure: Annotated[
        str, typer.Argument(help="file path, bundled name (villin), PDB id or protein name")
    ],
    temperature: Annotated[float, typer.Option(help="temperature in K")] = 300.0,
    steps: Annotated[int, typer.Option(help="production steps")] = 5000,
    equilibration: Annotated[int, typer.Option(help="equilibration steps before production")] = 1000,
    timestep: Annotated[float, typer.Option(help="timestep in fs")] = 2.0,
    solvent: Annotated[str, typer.Option(help="implicit, explicit or vacuum")] = "implicit",
    forcefield: Annotated[str, typer.Option(help="amber14, amber99sbildn or charmm36")] = "amber14",
    no_constraints: Annotated[
        bool, typer.Option("--no-constraints", help="do not constrain bonds to H")
    ] = False,
    remove_unknown_residues: RemoveUnknownResiduesOption = False,
    platform: Annotated[str, typer.Option(help="auto, CPU, CUDA, OpenCL or HIP")] = "auto",
    seed: Annotated[int, typer.Option(help="random seed for velocities and thermostat")] = 1,
    report_interval: Annotated[int, typer.Option(help="steps between frames and CSV rows")] = 100,
    max_wall_time: Annotated[
        float | None, typer.Option(help="seconds; stop with a checkpoint, resumable with the same --out")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="work directory; an existing one with a checkpoint resumes")
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="run it on this site (see `sciagent sites list`) instead of here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON object")] = False,
) -> None:
    """Run one molecular-dynamics simulation and analyse it."""

    spec = _spec_or_exit(
        structure=structure,
        temperature_k=temperature,
        production_steps=steps,
        equilibration_steps=equilibration,
        timestep_fs=timestep,
        solvent=solvent,
        forcefield=forcefield,
        constraints="none" if no_constraints else "hbonds",
        remove_unknown_residues=remove_unknown_residues,
        platform=platform,
        seed=seed,
        report_interval=min(report_interval, steps) if steps > 0 else report_interval,
        max_wall_time_s=max_wall_time,
    )
    workdir = (
        out or load_settings().workspace / f"simulate-{_slug(structure)}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    with exits_on_error():
        if site:
            outcome = _simulate_on_site(site, spec, workdir)
        else:
            with md_progress(structure) as progress:
                outcome = simulate_and_analyze(spec, workdir, progress)
    setup_failed = outcome.result.failure_class == "setup"
    if as_json:
        typer.echo(json.dumps(outcome.model_dump(mode="json")))
    elif not setup_failed:  # a setup failure ran nothing: its one-line error says it all
        out_console.print(simulation_table(outcome))
    if not outcome.result.ok:
        fail(outcome.result.message, EXIT_BAD_INPUT if setup_failed else EXIT_FAILED)


def _simulate_on_site(site: str, spec: MDSpec, workdir: Path) -> SimulationOutcome:
    """Send the simulation to ``site``'s executor; the analysis comes back, the trajectory stays there."""
    settings = load_settings()
    platform = resolve_site(site, settings.sites).platform
    if spec.platform == "auto" and platform != "auto":
        spec = spec.model_copy(update={"platform": platform})
    err_console.print(f"submitting to site {site} ...", highlight=False)
    with (
        make_executor(site, settings.sites, run_dir=Path(workdir) / "parsl") as executor,
        SimulationProgress(workdir, spec, site),
    ):
        return executor.result(executor.submit(simulate_and_analyze, spec, Path(workdir).resolve()))


def _spec_or_exit(**fields: object) -> MDSpec:
    try:
        return MDSpec(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "input"
        flag = _FLAG_FOR_FIELD.get(field, "--" + field.replace("_", "-"))
        value = (
            f" (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else ""
        )
        fail(f"invalid {flag}: {error['msg']}{value}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(text).stem).strip("-").lower()[:40] or "structure"
