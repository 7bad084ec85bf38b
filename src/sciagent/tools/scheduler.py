"""Batch-scheduler tools (Slurm, PBS Pro): thin adapters over ``sciagent.compute.scheduler``.

Before a tool acts on a queue it asks the site's policy (``[sites.NAME.policy]``), which reads the
user's job ledger for the site: by default sciagent cancels, holds and releases only the jobs it
submitted, and a refusal comes back to the model with its reason. Waiting for a job polls the
scheduler (every ``poll_seconds``), never the model.

A job script's request (queue, nodes, walltime, account) is recorded in the ledger when
``generate_job_script`` writes it, keyed by the script's content; ``submit_job`` finds it by the
content it reads, checks it against the site's bounds and policy under the site's submission lock,
and the job runs a copy of exactly that content. The previews say what an approval is about.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sciagent.atomic import write_atomic
from sciagent.compute.scheduler import hold, listing, psij_jobs, queues
from sciagent.compute.scheduler.commands import Scheduler, scheduler_of
from sciagent.compute.scheduler.ledger import JobLedger, JobRecord, digest_of, ledger_sites
from sciagent.compute.scheduler.policy import action_refusal, request_refusal, submission_refusal
from sciagent.compute.scheduler.scripts import write_job_script
from sciagent.compute.scheduler.values import SESSION_FILE, QueueName, StructureRef, walltime_seconds
from sciagent.compute.sites import SiteConfig, resolve_site
from sciagent.config import Settings
from sciagent.errors import SciagentError
from sciagent.sandbox import rundir
from sciagent.tools.files import confined
from sciagent.tools.registry import CallPreview, ToolArgumentsError, ToolContext, ToolFailed, define_tool

MAX_WAIT_S = 6 * 3600
MAX_SCRIPT_BYTES = 1 << 20
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
    structure: StructureRef = Field(
        description="bundled name (villin), PDB id or a file in the session directory"
    )
    length_ps: float = Field(default=10, gt=0, le=100_000, description="production length")
    timestep_fs: float = Field(default=2, gt=0, le=5)
    temperature_k: float = Field(default=300, gt=0, le=1000)
    queue: QueueName | None = Field(
        default=None, description="PBS queue or Slurm partition; default: the site's"
    )
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
    own = {job.native_id for job in JobLedger(arguments.site).jobs()}
    jobs = listing.list_jobs(scheduler, arguments.user, arguments.state)
    listed = [ListedJob(**job.model_dump(), submitted_by_sciagent=job.native_id in own) for job in jobs]
    return JobList(site=arguments.site, jobs=listed)


def job_status(arguments: JobArguments, context: ToolContext) -> JobState:
    """The state of a batch job now (QUEUED, ACTIVE, COMPLETED, FAILED, CANCELED) and its exit code."""
    site, record = _job(context, arguments)
    scheduler = _site(context, site)[1]
    seen = psij_jobs.status(scheduler, arguments.job_id, JobLedger(site).psij_dir)
    return _state(site, arguments.job_id, record, seen)


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
        JobLedger(site).psij_dir,
        timeout_s=arguments.timeout_s,
        poll_s=config.policy.poll_seconds,
    )
    return _state(site, arguments.job_id, record, seen)


def submit_job(arguments: SubmitArguments, context: ToolContext) -> JobState:
    """Submit a job script to a batch site, checked against the site's bounds and policy; returns its job id.

    A script generate_job_script wrote goes with the resources recorded then; any other script, or
    one edited since, only with the site's defaults, and only when the site is named.
    """
    plan = _plan(context, arguments)
    ledger, policy = JobLedger(plan.site), plan.config.policy
    with ledger.submitting():  # no other session submits to the site between the check and the record
        mine = [_refreshed(ledger, plan.scheduler, job) for job in ledger.jobs()]
        refusal = request_refusal(policy, plan.request, plan.queue, plan.config.account)
        refusal = refusal or submission_refusal(policy, mine, plan.queue, plan.digest, time.time())
        if refusal:
            raise ToolFailed(f"refused by the policy of site {plan.site}: {refusal}", "policy")
        run = write_atomic(ledger.scripts_dir / f"{plan.digest}.sh", plan.content, mode=0o500)
        stdout, stderr = plan.script.parent / "stdout.txt", plan.script.parent / "stderr.txt"
        request = plan.request.model_copy(update={"queue": plan.queue})
        native_id = psij_jobs.submit(plan.scheduler, request, ledger.psij_dir, stdout, stderr, run=run)
        record = JobRecord(
            native_id=native_id, site=plan.site, queue=plan.queue, script=str(plan.script),
            digest=plan.digest, nodes=request.nodes, walltime=request.walltime, account=request.account,
            stdout=str(stdout), stderr=str(stderr), submitted_at=time.time(),
        )  # fmt: skip
        ledger.save(record)
    return JobState(job_id=native_id, site=plan.site, state=record.state, submitted_by_sciagent=True)


def cancel_job(arguments: JobArguments, context: ToolContext) -> JobDone:
    """Cancel a batch job sciagent submitted (the site's policy may allow others)."""
    site, scheduler = _allowed(context, arguments, "cancel")
    psij_jobs.cancel(scheduler, arguments.job_id, JobLedger(site).psij_dir)
    ledger = JobLedger(site)
    record = ledger.find(arguments.job_id)
    if record is not None:
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
    JobLedger(record.site).save(record.model_copy(update={"diagnosis": arguments.diagnosis}))
    return JobDone(job_id=record.native_id, site=record.site, action="diagnosis recorded")


def generate_job_script(arguments: GenerateArguments, context: ToolContext) -> GeneratedScript:
    """Write a batch job script that runs an OpenMM simulation of a structure with sciagent on the node.

    The site gives the account, queue, walltime, nodes, filesystems and GPU binding; submit the
    script with submit_job, which asks for what is recorded here (editing the script drops it).
    """
    config, _ = _site(context, arguments.site)
    session = context.session_dir.resolve()
    directory = session / "jobs" / arguments.name
    if (directory / "job.sh").exists():
        raise ToolArgumentsError(f"jobs/{arguments.name} already exists: choose another name")
    request = write_job_script(
        arguments.site, config, directory,
        structure=arguments.structure, session_dir=session, length_ps=arguments.length_ps,
        timestep_fs=arguments.timestep_fs, temperature_k=arguments.temperature_k,
        overrides={"queue": arguments.queue, "walltime": arguments.walltime, "nodes": arguments.nodes},
    )  # fmt: skip
    content = Path(request.script).read_bytes()
    JobLedger(arguments.site).record_request(request, digest_of(content))
    return GeneratedScript(
        script=str(Path(request.script).relative_to(session)), request=request, text=content.decode()
    )


def preview_submit(arguments: SubmitArguments, context: ToolContext) -> CallPreview:
    """What submit_job would ask for: the site, the queue's real name, the resources and the script itself."""

    def build() -> CallPreview:
        plan = _plan(context, arguments)
        request = plan.request
        origin = "" if plan.recorded else " (not written by generate_job_script: the site's defaults)"
        return CallPreview(
            summary=(
                f"submit {arguments.script} to site {plan.site}: queue {plan.queue}, "
                f"{request.nodes} node(s), walltime {request.walltime}, "
                f"account {request.account or '(none)'}{origin}"
            ),
            detail=plan.content.decode(errors="replace"),
            facts={
                "site": plan.site, "queue": plan.queue, "nodes": request.nodes,
                "walltime_s": walltime_seconds(request.walltime), "account": request.account,
            },
        )  # fmt: skip

    return _safely(f"submit {arguments.script!r}", build)


def _job_preview(action: str) -> Callable[[JobArguments, ToolContext], CallPreview]:
    """The preview of ``action`` (cancel, hold, release) on a job: what the job is and whose."""

    def preview(arguments: JobArguments, context: ToolContext) -> CallPreview:
        def build() -> CallPreview:
            site, record = _job(context, arguments)
            facts: dict[str, object] = {"site": site, "job_id": arguments.job_id, "own": record is not None}
            if record is None:
                return CallPreview(
                    f"{action} job {arguments.job_id} on site {site}, not submitted by sciagent", facts=facts
                )
            facts |= {
                "queue": record.queue, "nodes": record.nodes,
                "walltime_s": walltime_seconds(record.walltime), "account": record.account,
            }  # fmt: skip
            return CallPreview(
                summary=(
                    f"{action} job {arguments.job_id} on site {site}: queue {record.queue}, {record.nodes} "
                    f"node(s), walltime {record.walltime}, account {record.account or '(none)'}"
                ),
                detail=f"script {record.script} (last seen {record.state})",
                facts=facts,
            )

        return _safely(f"{action} job {arguments.job_id!r}", build)

    return preview


def _safely(what: str, build: Callable[[], CallPreview]) -> CallPreview:
    """``build()``, or a preview saying why the call cannot go ahead: a preview never raises."""
    try:
        return build()
    except (SciagentError, OSError, ValueError) as exc:
        return CallPreview(summary=f"{what}: cannot go ahead: {exc}")


@dataclass(frozen=True)
class _Submission:
    """A submission as it would go: the script's content read once, its request, the queue's real name."""

    site: str
    config: SiteConfig
    scheduler: Scheduler
    script: Path
    content: bytes
    digest: str
    request: psij_jobs.JobRequest
    queue: str
    recorded: bool


def _plan(context: ToolContext, arguments: SubmitArguments) -> _Submission:
    """What ``submit_job`` would submit; never reads a request from a file the model could write."""
    script = confined(context, arguments.script)
    if not re.fullmatch(SESSION_FILE, script.relative_to(context.session_dir.resolve()).as_posix()):
        raise ToolArgumentsError(
            f"script {arguments.script!r}: name it with letters, digits, '_', '.', '-' and '/' only"
        )
    try:
        content = rundir.read_back(script.parent, script.name, MAX_SCRIPT_BYTES)
    except rundir.ScratchFileError as exc:
        raise ToolArgumentsError(
            f"script {arguments.script!r}: {exc} (generate_job_script writes one)"
        ) from exc
    digest = digest_of(content)
    if arguments.site is not None:
        _site(context, arguments.site)  # a configured batch site before its ledger is opened
    sites = [arguments.site] if arguments.site else ledger_sites()
    found = [(site, request) for site in sites if (request := JobLedger(site).request_for(script, digest))]
    if not found and arguments.site is None:
        raise ToolArgumentsError(
            f"script {arguments.script!r} has no request recorded by generate_job_script (it did not "
            "write it, or it was edited since): name the site to submit it with the site's defaults"
        )
    site = found[0][0] if found else arguments.site
    config, scheduler = _site(context, site)
    request = found[0][1] if found else psij_jobs.JobRequest.checked(
        site=site, script=str(script), queue=config.queue or config.partition, account=config.account,
        walltime=config.walltime, nodes=config.nodes_per_block, filesystems=config.filesystems,
    )  # fmt: skip
    return _Submission(
        site=site, config=config, scheduler=scheduler, script=script, content=content, digest=digest,
        request=request, queue=queues.real_queue(scheduler, request.queue), recorded=bool(found),
    )  # fmt: skip


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


def _state(site: str, job_id: str, record: JobRecord | None, seen: psij_jobs.JobStatus) -> JobState:
    """The tool's answer; a job of sciagent's has its ledger row brought up to date too.

    A job sciagent cancelled stays CANCELED: its killed script's exit status (PBS Pro reports
    256 + 15 after qdel's SIGTERM) reads to psij as a failure.
    """
    if record is not None and record.state == "CANCELED":
        seen = seen.model_copy(update={"state": "CANCELED"})
    if record is not None:
        JobLedger(site).save(record.model_copy(update=seen.model_dump()))
    return JobState(job_id=job_id, site=site, submitted_by_sciagent=record is not None, **seen.model_dump())


def _refreshed(ledger: JobLedger, scheduler: Scheduler, record: JobRecord) -> JobRecord:
    """``record`` with its state asked of the scheduler, unless it had already ended."""
    if record.final:
        return record
    fresh = record.model_copy(
        update=psij_jobs.status(scheduler, record.native_id, ledger.psij_dir).model_dump()
    )
    ledger.save(fresh)
    return fresh


def _job(context: ToolContext, arguments: JobArguments) -> tuple[str, JobRecord | None]:
    """The job's site and its ledger record (None: sciagent did not submit it)."""
    if arguments.site is not None:
        _site(context, arguments.site)
        return arguments.site, JobLedger(arguments.site).find(arguments.job_id)
    found = [record for site in ledger_sites() if (record := JobLedger(site).find(arguments.job_id))]
    if len(found) != 1:
        which = "several sites" if found else "none of sciagent's jobs"
        raise ToolArgumentsError(f"job {arguments.job_id} matches {which}: name its site")
    return found[0].site, found[0]


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


def _tail(path: Path, chars: int) -> str:
    """The last ``chars`` bytes of a job's output file: a regular file, opened without following a link
    or blocking (the file lies in the session, where the model may have put a link or a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd)
        if not stat.S_ISREG(size.st_mode):
            return ""
        handle.seek(max(0, size.st_size - chars))
        return handle.read(chars).decode(errors="replace")


SCHEDULER_TOOLS = [
    define_tool(list_queues, effects={"reads"}),
    define_tool(list_nodes, effects={"reads"}),
    define_tool(list_jobs, effects={"reads"}),
    define_tool(job_status, effects={"reads"}),
    define_tool(wait_for_job, effects={"reads"}, cost="minutes"),
    define_tool(generate_job_script, effects={"writes"}),
    define_tool(submit_job, effects={"spends"}, preview=preview_submit),
    define_tool(cancel_job, effects={"destroys"}, preview=_job_preview("cancel")),
    define_tool(hold_job, effects={"destroys"}, preview=_job_preview("hold")),
    define_tool(release_job, effects={"spends"}, preview=_job_preview("release")),
    define_tool(job_output, effects={"reads"}),
    define_tool(diagnose_job, effects={"writes"}),
]
