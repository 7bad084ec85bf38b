"""Submit, follow and cancel batch jobs through psij-python, one API for Slurm and PBS Pro.

psij writes its submit scripts and exit-code files into a work directory we choose (the
workspace's, not ``~/.psij``) and keeps them (``keep_files``), so any later process can re-attach
to a job by its native id and still tell a failure from a success. Each call makes its own psij
executor: psij follows a job with a polling thread, and the thread ends with its executor.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel, Field, ValidationError

from sciagent.compute.scheduler.commands import Scheduler, SchedulerError
from sciagent.compute.scheduler.values import AccountName, Filesystems, QueueName, SiteName, Walltime
from sciagent.errors import UserError

if TYPE_CHECKING:
    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutor

_PSIJ_NAMES: dict[Scheduler, str] = {"slurm": "slurm", "pbspro": "pbs"}
_FIRST_POLL_S = 1  # psij's first poll, after it starts its thread (the job must be attached by then)


class JobRequest(BaseModel):
    """What to ask the scheduler for when submitting a script.

    Every field has a pattern or a bound (``values``): psij writes them into ``#SBATCH``/``#PBS``
    lines, where a line break would start a command.

    Attributes:
        site: the site's name in the configuration.
        script: the bash script to run (no scheduler directives needed: psij writes them).
        queue: the PBS queue or Slurm partition; None: the scheduler's default.
        account: the allocation charged.
        walltime: ``HH:MM:SS``.
        nodes: how many nodes.
        filesystems: PBS ``-l filesystems=`` (ALCF requires it).
        gpus_per_node: Slurm ``--gpus-per-node``; 0 asks for none.
    """

    site: SiteName
    script: str
    queue: QueueName | None = None
    account: AccountName | None = None
    walltime: Walltime = "00:30:00"
    nodes: int = Field(default=1, ge=1, le=100_000)
    filesystems: Filesystems | None = None
    gpus_per_node: int = Field(default=0, ge=0, le=64)

    @classmethod
    def checked(cls, **fields: object) -> JobRequest:
        """A request from ``fields``, or ``UserError`` naming the first value that does not fit."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise UserError(f"job request: {where} {problem.get('input')!r}: {problem['msg']}") from exc


class JobStatus(BaseModel):
    """A job's state as psij reports it: QUEUED, ACTIVE, COMPLETED, FAILED or CANCELED."""

    state: str
    exit_code: int | None = None
    message: str | None = None


def submit(
    scheduler: Scheduler, request: JobRequest, workdir: Path, stdout: Path, stderr: Path, *, run: Path
) -> str:
    """Submit ``request`` and return the scheduler's job id; ``SchedulerError`` if it was refused.

    The job runs ``run``, a copy of ``request.script`` that was checked, in the script's directory:
    an edit of the script in between (or before the job starts) changes nothing.
    """
    from psij import Job, JobAttributes, JobSpec, ResourceSpecV1, SubmitException

    hours, minutes, seconds = (int(part) for part in request.walltime.split(":"))
    custom: dict[str, object] = {}
    if request.filesystems and scheduler == "pbspro":
        custom["pbs.l"] = f"filesystems={request.filesystems}"
    if request.gpus_per_node and scheduler == "slurm":
        custom["slurm.gpus-per-node"] = request.gpus_per_node
    script = Path(request.script)
    spec = JobSpec(
        executable="/bin/bash",
        arguments=[str(run)],
        directory=script.parent,
        name=re.sub(r"[^A-Za-z0-9_.-]", "_", script.parent.name)[:40] or "sciagent",
        stdout_path=stdout,
        stderr_path=stderr,
        resources=ResourceSpecV1(node_count=request.nodes),
        attributes=JobAttributes(
            duration=timedelta(hours=hours, minutes=minutes, seconds=seconds),
            queue_name=request.queue,
            account=request.account,
            custom_attributes=custom or None,
        ),
    )
    job = Job(spec)
    try:
        _executor(scheduler, workdir, poll_s=3600).submit(job)
    except (SubmitException, OSError) as exc:
        raise SchedulerError(f"the {scheduler} scheduler refused the job: {exc}") from exc
    if not job.native_id:
        raise SchedulerError(f"the {scheduler} scheduler gave no job id")
    return job.native_id


def status(scheduler: Scheduler, native_id: str, workdir: Path, timeout_s: float = 60) -> JobStatus:
    """The job's state now (one scheduler poll)."""
    return wait(scheduler, native_id, workdir, timeout_s=timeout_s, poll_s=60, until_final=False)


def wait(
    scheduler: Scheduler,
    native_id: str,
    workdir: Path,
    *,
    timeout_s: float,
    poll_s: int,
    until_final: bool = True,
) -> JobStatus:
    """Poll the scheduler every ``poll_s`` until the job ends (or, ``until_final=False``, is first seen).

    Returns the last state seen when ``timeout_s`` passes first.
    """
    from psij import Job, JobState

    job = Job()
    _executor(scheduler, workdir, poll_s=poll_s).attach(job, native_id)
    targets = [JobState.COMPLETED, JobState.FAILED, JobState.CANCELED]
    if not until_final:
        targets += [JobState.QUEUED, JobState.ACTIVE]
    job.wait(timeout=timedelta(seconds=timeout_s), target_states=targets)
    seen = job.status
    if seen.state == JobState.NEW:
        silent = f"the {scheduler} scheduler did not report job {native_id} within {timeout_s:.0f} s"
        raise SchedulerError(silent)
    return JobStatus(state=str(seen.state), exit_code=seen.exit_code, message=seen.message)


def cancel(scheduler: Scheduler, native_id: str, workdir: Path) -> None:
    """Cancel job ``native_id``; ``SchedulerError`` if the scheduler refused."""
    from psij import Job, SubmitException

    executor = _executor(scheduler, workdir, poll_s=3600)
    job = Job()
    executor.attach(job, native_id)
    try:
        executor.cancel(job)
    except SubmitException as exc:
        raise SchedulerError(f"the {scheduler} scheduler did not cancel job {native_id}: {exc}") from exc


def _executor(scheduler: Scheduler, workdir: Path, poll_s: int) -> BatchSchedulerExecutor:
    from psij import JobExecutor
    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

    workdir.mkdir(parents=True, exist_ok=True)
    config = BatchSchedulerExecutorConfig(
        work_directory=workdir,
        queue_polling_interval=poll_s,
        initial_queue_polling_delay=_FIRST_POLL_S,
        keep_files=True,
    )
    return cast("BatchSchedulerExecutor", JobExecutor.get_instance(_PSIJ_NAMES[scheduler], config=config))
