"""Batch-scheduler tools (Slurm, PBS Pro): thin adapters over ``sciagent.compute.scheduler``.

Before a tool acts on a queue it asks the site's policy (``[sites.NAME.policy]``), which reads the
workspace's job ledger: by default sciagent cancels, holds and releases only the jobs it submitted,
and a refusal comes back to the model with its reason. Waiting for a job polls the scheduler
(every ``poll_seconds``), never the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sciagent.compute.scheduler import hold, listing, psij_jobs, queues
from sciagent.compute.scheduler.commands import Scheduler, scheduler_of
from sciagent.compute.scheduler.ledger import JobLedger, JobRecord
from sciagent.compute.scheduler.policy import action_refusal, submission_refusal
from sciagent.compute.scheduler.scripts import read_request, write_job_script
from sciagent.compute.sites import SiteConfig, resolve_site
from sciagent.config import Settings
from sciagent.tools.files import confined
from sciagent.tools.registry import ToolArgumentsError, ToolContext, ToolFailed, define_tool

LEDGER_FILE = "scheduler-jobs.sqlite"
MAX_WAIT_S = 6 * 3600
SITE_HELP = "a Slurm or PBS Pro site (sciagent sites list)"


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteArguments(_Arguments):
    site: str = Field(description=SITE_HELP)


class JobArguments(_Arguments):
    job_id: str = Field(description="the scheduler's job id")
    site: str | None = Field(default=None, description="needed only for a job sciagent did not submit")


class ListJobsArguments(SiteArguments):
    user: str | None = Field(default=None, description="only this user's jobs")
    state: str | None = Field(default=None, description="only jobs in this state (e.g. PENDING, RUNNING)")


class WaitArguments(JobArguments):
    timeout_s: float = Field(default=600, gt=0, le=MAX_WAIT_S, description="stop waiting after this long")


class OutputArguments(JobArguments):
    max_chars: int = Field(default=4000, ge=100, le=64_000, description="the last characters of each")


class DiagnoseArguments(JobArguments):
    diagnosis: str = Field(min_length=10, description="why the job failed, read from its output")


class SubmitArguments(_Arguments):
    model_config = ConfigDict(json_schema_extra={"examples": [{"script": "jobs/villin/job.sh"}]})
    script: str = Field(description="a bash script in the session directory (generate_job_script writes one)")
    site: str | None = Field(
        default=None, description=f"{SITE_HELP}; default: the one generate_job_script chose"
    )


class GenerateArguments(SiteArguments):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"site": "slurm", "structure": "villin", "length_ps": 1}]},
    )
    structure: str = Field(description="bundled name (villin), PDB id or a file in the session directory")
    length_ps: float = Field(default=10, gt=0, le=100_000, description="production length")
    timestep_fs: float = Field(default=2, gt=0, le=5)
    temperature_k: float = Field(default=300, gt=0, le=1000)
    queue: str | None = Field(default=None, description="PBS queue or Slurm partition; default: the site's")
    walltime: str | None = Field(default=None, pattern=r"^\d{1,3}:[0-5]\d:[0-5]\d$", description="HH:MM:SS")
    nodes: int | None = Field(default=None, ge=1, le=10_000)
    name: str = Field(default="job", pattern=r"^[A-Za-z0-9_-]{1,40}$", description="the job's directory name")


class QueueList(BaseModel):
    site: str
    queues: list[queues.QueueInfo]


class NodeCounts(BaseModel):
    site: str
    total: int
    by_state: dict[str, int]


class ListedJob(listing.QueuedJob):
    submitted_by_sciagent: bool


class JobList(BaseModel):
    site: str
    jobs: list[ListedJob]


class JobState(BaseModel):
    job_id: str
    site: str
    state: str = Field(description="QUEUED, ACTIVE, COMPLETED, FAILED or CANCELED")
    exit_code: int | None = None
    message: str | None = None
    submitted_by_sciagent: bool


class JobDone(BaseModel):
    job_id: str
    site: str
    action: str


class JobOutput(BaseModel):
    job_id: str
    state: str
    stdout_tail: str
    stderr_tail: str


class GeneratedScript(BaseModel):
    script: str = Field(description="relative to the session directory: pass it to submit_job")
    request: psij_jobs.JobRequest
    text: str


def list_queues(arguments: SiteArguments, context: ToolContext) -> QueueList:
    """List a batch site's queues (Slurm partitions) with their state and limits (walltime, nodes)."""
    return QueueList(site=arguments.site, queues=queues.list_queues(_site(context, arguments.site)[1]))


def list_nodes(arguments: SiteArguments, context: ToolContext) -> NodeCounts:
    """Count a batch site's nodes in each state (idle, allocated, down...)."""
    counts = queues.node_counts(_site(context, arguments.site)[1])
    return NodeCounts(site=arguments.site, total=sum(counts.values()), by_state=counts)


def list_jobs(arguments: ListJobsArguments, context: ToolContext) -> JobList:
    """List the jobs in a batch site's queue, optionally only one user's or one state's."""
    scheduler = _site(context, arguments.site)[1]
    own = {job.native_id for job in _ledger(context).jobs(arguments.site)}
    jobs = listing.list_jobs(scheduler, arguments.user, arguments.state)
    listed = [ListedJob(**job.model_dump(), submitted_by_sciagent=job.native_id in own) for job in jobs]
    return JobList(site=arguments.site, jobs=listed)


def job_status(arguments: JobArguments, context: ToolContext) -> JobState:
    """The state of a batch job now (QUEUED, ACTIVE, COMPLETED, FAILED, CANCELED) and its exit code."""
    site, record = _job(context, arguments)
    scheduler = _site(context, site)[1]
    return _state(
        context, site, arguments.job_id, record, psij_jobs.status(scheduler, arguments.job_id, _psij(context))
    )


def wait_for_job(arguments: WaitArguments, context: ToolContext) -> JobState:
    """Wait until a batch job ends (or the timeout passes) and return its state.

    The scheduler is polled every ``poll_seconds`` of the site's policy, not the model: call this
    once rather than job_status in a loop.
    """
    site, record = _job(context, arguments)
    config, scheduler = _site(context, site)
    seen = psij_jobs.wait(
        scheduler,
        arguments.job_id,
        _psij(context),
        timeout_s=arguments.timeout_s,
        poll_s=config.policy.poll_seconds,
    )
    return _state(context, site, arguments.job_id, record, seen)


def submit_job(arguments: SubmitArguments, context: ToolContext) -> JobState:
    """Submit a job script to a batch site (checked against the site's policy first); returns its job id."""
    script = confined(context, arguments.script)
    if not script.is_file():
        raise ToolArgumentsError(
            f"script {arguments.script!r} does not exist: generate_job_script writes one"
        )
    request = read_request(script)
    site = arguments.site or (request.site if request else None)
    if site is None:
        raise ToolArgumentsError("name the site: this script was not written by generate_job_script")
    config, scheduler = _site(context, site)
    if request is None or request.site != site:
        request = psij_jobs.JobRequest(
            site=site, script=str(script), queue=config.queue or config.partition, account=config.account,
            walltime=config.walltime, nodes=config.nodes_per_block, filesystems=config.filesystems,
        )  # fmt: skip
    ledger = _ledger(context)
    mine = [_refreshed(context, ledger, scheduler, job) for job in ledger.jobs(site)]
    refusal = submission_refusal(config.policy, mine, request.queue, str(script), time.time())
    if refusal:
        raise ToolFailed(f"refused by the policy of site {site}: {refusal}", "policy")
    stdout, stderr = script.parent / "stdout.txt", script.parent / "stderr.txt"
    native_id = psij_jobs.submit(scheduler, request, _psij(context), stdout, stderr)
    record = JobRecord(
        native_id=native_id, site=site, queue=request.queue, script=str(script),
        stdout=str(stdout), stderr=str(stderr), submitted_at=time.time(),
    )  # fmt: skip
    ledger.save(record)
    return JobState(job_id=native_id, site=site, state=record.state, submitted_by_sciagent=True)


def cancel_job(arguments: JobArguments, context: ToolContext) -> JobDone:
    """Cancel a batch job sciagent submitted (the site's policy may allow others)."""
    site, scheduler = _allowed(context, arguments, "cancel")
    psij_jobs.cancel(scheduler, arguments.job_id, _psij(context))
    ledger = _ledger(context)
    for record in ledger.find(arguments.job_id, site):
        ledger.save(record.model_copy(update={"state": "CANCELED"}))
    return JobDone(job_id=arguments.job_id, site=site, action="cancelled")


def hold_job(arguments: JobArguments, context: ToolContext) -> JobDone:
    """Hold a queued batch job sciagent submitted, so that it does not start until released."""
    return _set_hold(arguments, context, "hold")


def release_job(arguments: JobArguments, context: ToolContext) -> JobDone:
    """Release a held batch job sciagent submitted, so that it may start."""
    return _set_hold(arguments, context, "release")


def job_output(arguments: OutputArguments, context: ToolContext) -> JobOutput:
    """The end of a batch job's stdout and stderr (jobs sciagent submitted)."""
    record = _own(context, arguments)
    return JobOutput(
        job_id=record.native_id,
        state=record.state,
        stdout_tail=_tail(Path(record.stdout), arguments.max_chars),
        stderr_tail=_tail(Path(record.stderr), arguments.max_chars),
    )


def diagnose_job(arguments: DiagnoseArguments, context: ToolContext) -> JobDone:
    """Record why a failed batch job failed: needed before its script may be submitted again."""
    record = _own(context, arguments)
    _ledger(context).save(record.model_copy(update={"diagnosis": arguments.diagnosis}))
    return JobDone(job_id=record.native_id, site=record.site, action="diagnosis recorded")


def generate_job_script(arguments: GenerateArguments, context: ToolContext) -> GeneratedScript:
    """Write a batch job script that runs an OpenMM simulation of a structure with sciagent on the node.

    The site gives the account, queue, walltime, nodes, filesystems and GPU binding; submit the
    script with submit_job.
    """
    config, _ = _site(context, arguments.site)
    directory = context.session_dir / "jobs" / arguments.name
    if (directory / "job.sh").exists():
        raise ToolArgumentsError(f"jobs/{arguments.name} already exists: choose another name")
    request = write_job_script(
        arguments.site, config, directory,
        structure=arguments.structure, length_ps=arguments.length_ps,
        timestep_fs=arguments.timestep_fs, temperature_k=arguments.temperature_k,
        overrides={"queue": arguments.queue, "walltime": arguments.walltime, "nodes": arguments.nodes},
    )  # fmt: skip
    script = Path(request.script)
    return GeneratedScript(
        script=str(script.relative_to(context.session_dir)), request=request, text=script.read_text()
    )


def _set_hold(arguments: JobArguments, context: ToolContext, action: Literal["hold", "release"]) -> JobDone:
    site, scheduler = _allowed(context, arguments, action)
    hold.set_hold(scheduler, arguments.job_id, action)
    return JobDone(job_id=arguments.job_id, site=site, action="held" if action == "hold" else "released")


def _allowed(context: ToolContext, arguments: JobArguments, action: str) -> tuple[str, Scheduler]:
    """The job's site and scheduler, once the site's policy allows ``action`` on it."""
    site, record = _job(context, arguments)
    config, scheduler = _site(context, site)
    refusal = action_refusal(config.policy, action, arguments.job_id, own=record is not None)
    if refusal:
        raise ToolFailed(f"refused by the policy of site {site}: {refusal}", "policy")
    return site, scheduler


def _state(
    context: ToolContext, site: str, job_id: str, record: JobRecord | None, seen: psij_jobs.JobStatus
) -> JobState:
    """The tool's answer; a job of sciagent's has its ledger row brought up to date too.

    A job sciagent cancelled stays CANCELED: its killed script's exit status (PBS Pro reports
    256 + 15 after qdel's SIGTERM) reads to psij as a failure.
    """
    if record is not None and record.state == "CANCELED":
        seen = seen.model_copy(update={"state": "CANCELED"})
    if record is not None:
        _ledger(context).save(record.model_copy(update=seen.model_dump()))
    return JobState(job_id=job_id, site=site, submitted_by_sciagent=record is not None, **seen.model_dump())


def _refreshed(context: ToolContext, ledger: JobLedger, scheduler: Scheduler, record: JobRecord) -> JobRecord:
    """``record`` with its state asked of the scheduler, unless it had already ended."""
    if record.final:
        return record
    fresh = record.model_copy(
        update=psij_jobs.status(scheduler, record.native_id, _psij(context)).model_dump()
    )
    ledger.save(fresh)
    return fresh


def _job(context: ToolContext, arguments: JobArguments) -> tuple[str, JobRecord | None]:
    """The job's site and its ledger record (None: sciagent did not submit it)."""
    records = _ledger(context).find(arguments.job_id, arguments.site)
    if len(records) == 1:
        return records[0].site, records[0]
    if arguments.site is None:
        which = "several sites" if records else "none of sciagent's jobs"
        raise ToolArgumentsError(f"job {arguments.job_id} matches {which}: name its site")
    return arguments.site, None


def _own(context: ToolContext, arguments: JobArguments) -> JobRecord:
    site, record = _job(context, arguments)
    if record is None:
        raise ToolArgumentsError(f"job {arguments.job_id} on {site} was not submitted by sciagent")
    return record


def _site(context: ToolContext, name: str) -> tuple[SiteConfig, Scheduler]:
    site = resolve_site(name, _settings(context).sites)
    return site, scheduler_of(name, site)


def _settings(context: ToolContext) -> Settings:
    if context.settings is None:
        raise ToolFailed("the batch-job tools need the session's settings (its sites and workspace)", "setup")
    return context.settings


def _ledger(context: ToolContext) -> JobLedger:
    return JobLedger(_settings(context).workspace / LEDGER_FILE)


def _psij(context: ToolContext) -> Path:
    """psij's work directory: its submit scripts and exit-code files, kept for re-attaching."""
    return (_settings(context).workspace / "scheduler" / "psij").resolve()


def _tail(path: Path, chars: int) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - chars))
        return handle.read().decode(errors="replace")


SCHEDULER_TOOLS = [
    define_tool(list_queues),
    define_tool(list_nodes),
    define_tool(list_jobs),
    define_tool(job_status),
    define_tool(wait_for_job, cost="minutes"),
    define_tool(generate_job_script),
    define_tool(submit_job, needs_approval=True),
    define_tool(cancel_job, needs_approval=True),
    define_tool(hold_job, needs_approval=True),
    define_tool(release_job, needs_approval=True),
    define_tool(job_output),
    define_tool(diagnose_job),
]
