"""``sciagent submit``: a whole run as one batch job (and its continuations), model included or remote.

Bad input is refused before anything is written. Then the run is created in the journal (status
``queued``, its config holding the job spec), the spec and the script are written under
``<run>/jobs/``, the script is shown and approved as an action that ``spends`` an allocation (rules of
``[[approval.rules]]`` name it ``submit``; ``--yes`` answers an ask, never a deny), and it is submitted.
A refusal after the run was created marks it failed with the reason, so nothing is left ``queued``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from sciagent.agent.approvals import ApprovalDesk
from sciagent.agent.journal import Journal
from sciagent.agent.session import SESSION_KIND
from sciagent.cli.approval import TerminalApprover
from sciagent.cli.common import (
    EXIT_FAILED,
    duration_flag,
    exit_code_for,
    exits_on_error,
    fail,
    fail_internal,
    settings_for,
)
from sciagent.compute.scheduler.values import WALLTIME, walltime_seconds
from sciagent.compute.sites import SiteConfig, resolve_site
from sciagent.config import ApprovalDecision, Settings
from sciagent.console import out_console
from sciagent.crash import record_internal_error
from sciagent.errors import SciagentError, UserError
from sciagent.llm.profiles import resolve_profile
from sciagent.tools.approval import ApprovalPolicy, ApprovalRequest
from sciagent.tools.registry import CallPreview
from sciagent.workflows.jobs.records import record_submitted
from sciagent.workflows.jobs.script import job_request, render_job_script, script_name
from sciagent.workflows.jobs.spec import DEFAULT_MAX_CONTINUATIONS, JobSpec, ModelInJob
from sciagent.workflows.jobs.submission import submit_script
from sciagent.workflows.jobs.walltime import MIN_MARGIN_S

ACTION = "submit"  # what [[approval.rules]] call this action (tool = "submit")
_BACKENDS = ("vllm", "llama-cpp")

WalltimeOption = Annotated[
    str | None, typer.Option("--walltime", help="each job's walltime: 1h, 90m, HH:MM:SS (default: site's)")
]
InJobOption = Annotated[
    str | None,
    typer.Option("--llm-in-job", help="model served in the job: vllm:MODEL, llama-cpp, llama-cpp:FILE.gguf"),
]
DevicesOption = Annotated[
    int | None, typer.Option("--llm-devices", help="GPUs for vLLM, or CPU threads for llama.cpp (default 1)")
]
LlmOption = Annotated[str | None, typer.Option("--llm", help="a model profile: no model in the job")]
FallbackOption = Annotated[
    str | None, typer.Option("--fallback-llm", help="a profile to use if the served model fails its check")
]
BudgetOption = Annotated[
    str | None,
    typer.Option("--budget", help="working time of all jobs (default: each walltime less its margin)"),
]
ContinuationsOption = Annotated[
    int, typer.Option("--max-continuations", help="dependent jobs that may continue the run")
]
MarginOption = Annotated[
    str | None, typer.Option("--margin", help="stop this long before a job's walltime ends (default 60s)")
]
AskOption = Annotated[bool, typer.Option("--ask", help="a question (as `sciagent ask`), not a study")]


def submit_command(
    goal: Annotated[str, typer.Argument(help="the study's goal, or the question (--ask)")],
    site: Annotated[str, typer.Option("--site", help="a Slurm or PBS Pro site (sciagent sites list)")],
    walltime: WalltimeOption = None,
    llm_in_job: InJobOption = None,
    llm_devices: DevicesOption = None,
    llm: LlmOption = None,
    fallback_llm: FallbackOption = None,
    structure: Annotated[str | None, typer.Option("--structure", help="the study's structure")] = None,
    budget: BudgetOption = None,
    max_continuations: ContinuationsOption = DEFAULT_MAX_CONTINUATIONS,
    margin: MarginOption = None,
    ask: AskOption = False,
    yes: Annotated[bool, typer.Option("--yes", help="approve the submission without a prompt")] = False,
    workspace: Annotated[Path | None, typer.Option("--workspace", help="where runs live")] = None,
) -> None:
    """Submit a run as a batch job that serves its model, does the work and continues before its walltime.

    The default --budget is every job's working time: (1 + max continuations) x (walltime - margin).
    """
    settings = settings_for(workspace)
    site_config = _batch_site(site, settings)
    model_in_job = _model_in_job(llm_in_job, llm_devices, llm, site, site_config)
    for profile in (llm, fallback_llm):
        if profile is not None:
            with exits_on_error():
                resolve_profile(profile, settings.llm)
    if ask and structure:
        fail("--structure applies to a study; drop it or --ask")
    if not 0 <= max_continuations <= 20:
        fail(f"--max-continuations must be from 0 to 20, not {max_continuations}")
    walltime_s = _walltime(walltime, site_config)
    margin_s = duration_flag("--margin", margin) if margin is not None else None
    stop_s = margin_s or MIN_MARGIN_S
    if walltime_s <= 2 * stop_s:
        fail(f"--walltime of {walltime_s:.0f} s leaves too little time before its {stop_s:.0f} s stop margin")
    every_job_s = (1 + max_continuations) * (walltime_s - stop_s)
    budget_s = duration_flag("--budget", budget) if budget else every_job_s
    fields = {
        "run_id": "pending", "workspace": settings.workspace.resolve(), "directory": Path.cwd(), "site": site,
        "kind": "ask" if ask else "study", "goal": goal, "structure": None if ask else structure or "villin",
        "budget_s": budget_s, "walltime_s": walltime_s, "model_in_job": model_in_job, "llm": llm,
        "fallback_llm": fallback_llm, "max_continuations": max_continuations, "margin_s": margin_s,
    }  # fmt: skip
    with exits_on_error():
        request = job_request(JobSpec(**fields), site, site_config)  # checked before anything is written
    facts = {
        "site": site, "queue": request.queue, "nodes": request.nodes,
        "walltime_s": walltime_seconds(request.walltime), "account": request.account,
    }  # fmt: skip
    decision, reason = ApprovalPolicy.from_settings(settings).decide(ACTION, frozenset({"spends"}), facts)
    if decision == "deny":
        fail(f"refused: {reason}")
    if decision == "ask" and not yes and not sys.stdin.isatty():
        fail(f"refused: {reason} and there is no terminal to ask: add --yes to approve it")
    asks = (
        f"queue {request.queue or '(default)'}, 1 node, walltime {request.walltime}, "
        f"account {request.account or '(none)'}"
    )
    preview = CallPreview(f"submit to site {site}: {asks}", facts=facts)
    with Journal.in_workspace(settings.workspace.resolve()) as journal:
        _queue_and_submit(journal, fields, site_config, preview, (decision, reason), yes=yes, stop_s=stop_s)


def _queue_and_submit(
    journal: Journal,
    fields: dict[str, object],
    site: SiteConfig,
    preview: CallPreview,
    decided: tuple[ApprovalDecision, str],
    *,
    yes: bool,
    stop_s: float,
) -> None:
    """Create the queued run, write its spec and script, have it approved, submit it, record the job."""
    config: dict[str, object] = {"kind": SESSION_KIND} if fields["kind"] == "ask" else {}
    with journal.transaction():  # queued with its spec, or not created at all
        run_id = journal.create_run(str(fields["goal"]), config)
        spec = JobSpec(**(fields | {"run_id": run_id}))
        journal.update_run_config(run_id, config | {"job": spec.model_dump(mode="json")})
        journal.set_run_status(run_id, "queued")
    try:
        spec_path = spec.save()
        script = spec.jobs_dir / script_name(spec)
        text = render_job_script(spec, spec_path, spec.site, site, stop_margin_s=stop_s)
        script.write_text(text)
        shown = CallPreview(f"{preview.summary} (run {run_id})", text, preview.facts)
        arguments = {"site": spec.site, "script": str(script)}
        request = ApprovalRequest(ACTION, arguments, frozenset({"spends"}), *decided, shown)
        _approve(journal, run_id, request, yes=yes)
        job_id = submit_script(spec.site, site, script, after=None)
    except SciagentError as exc:
        journal.set_run_status(run_id, "failed", error=str(exc))
        fail(f"run {run_id} was not submitted: {exc}", exit_code_for(exc))
    except KeyboardInterrupt:
        journal.set_run_status(run_id, "failed", error="interrupted before it was submitted")
        fail(f"run {run_id} was not submitted: interrupted", EXIT_FAILED)
    record_submitted(journal, run_id, job_id, 0, script)
    for line in (
        f"run {run_id} queued as job {job_id}: {preview.summary}",
        f"follow it: sciagent show {run_id}",
    ):
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)


def _approve(journal: Journal, run_id: str, request: ApprovalRequest, *, yes: bool) -> None:
    """Show the script and have the submission approved; ``UserError`` when it is not."""
    if request.decision == "allow" or yes:
        out_console.print(request.preview.detail, highlight=False, markup=False, soft_wrap=True)
        why = "--yes" if request.decision == "ask" else request.reason
        data = {"kind": "approved_up_front", "by": why}
        journal.add_event(run_id, "info", f"submission approved ({why})", data)
        return
    verdict = ApprovalDesk(journal, run_id, terminal=TerminalApprover())(request)  # shows the script
    if not verdict.approved:
        raise UserError(f"refused: {request.reason}, and it was not: {verdict.reason}")


def _batch_site(name: str, settings: Settings) -> SiteConfig:
    with exits_on_error():
        site = resolve_site(name, settings.sites)
    if not (site.kind == "parsl" and site.provider in ("slurm", "pbspro")):
        fail(f"site {name} is not a Slurm or PBS Pro site: submit needs a batch queue (sciagent sites list)")
    return site


def _model_in_job(
    option: str | None, devices: int | None, profile: str | None, site_name: str, site: SiteConfig
) -> ModelInJob | None:
    """``--llm-in-job`` as a ``ModelInJob``, checked against the node; None with ``--llm``."""
    if (option is None) == (profile is None):
        fail("give one of --llm-in-job (a model served in the job) or --llm PROFILE (a model outside it)")
    if option is None:
        if devices is not None:
            fail("--llm-devices applies to --llm-in-job")
        return None
    backend, _, model = option.partition(":")
    if backend not in _BACKENDS:
        fail(f"--llm-in-job {option!r}: use vllm:MODEL, llama-cpp or llama-cpp:FILE.gguf")
    count = 1 if devices is None else devices
    if count < 1:
        fail(f"--llm-devices must be 1 or more, not {count}")
    if backend == "vllm":
        if not model:
            fail("--llm-in-job vllm needs the model: vllm:MODEL (a Hugging Face id or a directory)")
        gpus = len(site.accelerators)
        if count >= gpus:
            fail(f"site {site_name} has {gpus} GPU(s) a node: --llm-devices {count} leaves none to simulate")
    else:
        if model and not (model.endswith(".gguf") and Path(model).is_file()):
            fail(f"--llm-in-job llama-cpp:{model}: not a .gguf file here (the job reads the same path)")
        model = str(Path(model).resolve()) if model else ""
        if site.cpus_per_node and count >= site.cpus_per_node:
            cpus = site.cpus_per_node
            fail(f"site {site_name} has {cpus} CPUs per node: --llm-devices {count} leaves none to simulate")
    return ModelInJob(backend=backend, model=model or None, devices=count)  # type: ignore[arg-type]


def _walltime(text: str | None, site: SiteConfig) -> float:
    if text is None:
        return float(walltime_seconds(site.walltime))
    if re.fullmatch(WALLTIME, text):
        return float(walltime_seconds(text))
    return duration_flag("--walltime", text)


job_app = typer.Typer(help="What a submitted run's batch job runs (`sciagent submit` writes the script).")


@job_app.command("run")
def job_run_command(
    spec: Annotated[Path, typer.Option("--spec", help="the job's spec file, under <run>/jobs/")],
) -> None:
    """Carry one batch job of a submitted run: model server, study, walltime, continuation, teardown."""
    from pydantic import ValidationError

    from sciagent.workflows.jobs.supervisor import run_job

    if not spec.is_file():
        fail(f"no job spec at {spec}: `sciagent submit` writes it under the run's jobs/ directory")
    try:
        job = JobSpec.load(spec)
    except (ValidationError, ValueError) as exc:
        fail(f"{spec} is not a job spec ({type(exc).__name__}): submit the run again")
    settings = settings_for(None)
    try:
        end = run_job(spec, settings, notify=_notify)
    except SciagentError as exc:
        fail(str(exc), exit_code_for(exc))
    except Exception as exc:  # a bug: one line here, the traceback in the run directory
        fail_internal(record_internal_error(exc, job.run_dir))
    out_console.print(end.message, highlight=False, soft_wrap=True)
    raise typer.Exit(end.exit_code)


def _notify(phase: str, message: str) -> None:
    print(f"{phase}: {message}", file=sys.stderr, flush=True)
