"""The jobs in the scheduler's queue, anyone's: psij's ``list()`` gives ids only, so this reads them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sciagent.compute.scheduler.commands import Scheduler, json_output, run_command

_SQUEUE_FIELDS = "%i|%j|%u|%P|%T|%r"
_PBS_STATES = {"Q": "QUEUED", "R": "RUNNING", "H": "HELD", "E": "EXITING", "F": "FINISHED", "W": "WAITING"}


class QueuedJob(BaseModel):
    """One job as the scheduler lists it."""

    native_id: str
    name: str
    user: str
    queue: str
    state: str = Field(description="Slurm PENDING/RUNNING..., PBS QUEUED/RUNNING/HELD...")
    reason: str | None = Field(default=None, description="why it waits (Slurm), or the scheduler's comment")


def list_jobs(scheduler: Scheduler, user: str | None = None, state: str | None = None) -> list[QueuedJob]:
    """The jobs queued or running (of ``user``, in ``state``: either filter may be None)."""
    if scheduler == "slurm":
        rows = run_command(["squeue", "-h", "-o", _SQUEUE_FIELDS] + (["-u", user] if user else []))
        jobs = [_slurm_job(line.split("|")) for line in rows.splitlines() if line.strip()]
    else:
        report = json_output(["qstat", "-f", "-F", "json"])
        jobs = [_pbs_job(native_id, job) for native_id, job in report.get("Jobs", {}).items()]
        jobs = [job for job in jobs if user is None or job.user == user]
    return [job for job in jobs if state is None or job.state == state.upper()]


def _slurm_job(fields: list[str]) -> QueuedJob:
    native_id, name, user, queue, state, reason = fields
    return QueuedJob(
        native_id=native_id, name=name, user=user, queue=queue, state=state,
        reason=None if reason == "None" else reason,
    )  # fmt: skip


def _pbs_job(native_id: str, job: dict) -> QueuedJob:
    state = job.get("job_state", "?")
    return QueuedJob(
        native_id=native_id,
        name=job.get("Job_Name", ""),
        user=job.get("Job_Owner", "").split("@")[0],
        queue=job.get("queue", ""),
        state=_PBS_STATES.get(state, state),
        reason=job.get("comment"),
    )
