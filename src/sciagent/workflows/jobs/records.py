"""The batch jobs of a run, as journal events: submitted, started, ended; read back as one record per job.

Events, not a new table: a job's life is a few facts told once each, by different processes (``submit``
on a login node, the supervisor in the job), and the journal's events keep them with their time and a
structured payload. ``jobs_of`` folds them into one ``JobRecord`` per job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sciagent.agent.journal import Journal

JOB_EVENT = "batch_job"  # the ``kind`` of every job event's data


@dataclass
class JobRecord:
    """One batch job of a run.

    Attributes:
        index: which job of the chain (0: the first, then each continuation).
        job_id: the scheduler's id.
        submitted_at / started_at / ended_at: journal timestamps (UTC, ISO 8601); None until it happened.
        script: the job script that was submitted.
        host: the node the supervisor ran on.
        ends_at: when the scheduler ends the allocation (seconds since the epoch), as the job read it.
        end_reason: why the job ended (the run finished, the walltime margin, a signal, a failure).
        allocation: what the job spent, by use (the supervisor's accounting); None if not recorded.
    """

    index: int
    job_id: str
    submitted_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    script: str | None = None
    host: str | None = None
    ends_at: float | None = None
    end_reason: str | None = None
    allocation: dict[str, Any] | None = None


def record_submitted(journal: Journal, run_id: str, job_id: str, index: int, script: Path | str) -> None:
    """The job ``job_id`` (``index`` of the chain) was submitted with ``script``."""
    _add(journal, run_id, f"batch job {index} submitted: {job_id}", "submitted", job_id, index,
         script=str(script))  # fmt: skip


def record_started(
    journal: Journal, run_id: str, job_id: str, index: int, host: str, ends_at: float | None
) -> None:
    """The job's supervisor started on ``host``; the allocation ends at ``ends_at`` (epoch seconds)."""
    _add(journal, run_id, f"batch job {index} started on {host}: {job_id}", "started", job_id, index,
         host=host, ends_at=ends_at)  # fmt: skip


def record_ended(
    journal: Journal, run_id: str, job_id: str, index: int, reason: str, allocation: dict[str, Any] | None
) -> None:
    """The job ended for ``reason``, having spent ``allocation`` (None: not accounted)."""
    _add(journal, run_id, f"batch job {index} ended: {job_id}: {reason}", "ended", job_id, index,
         end_reason=reason, allocation=allocation)  # fmt: skip


def jobs_of(journal: Journal, run_id: str) -> list[JobRecord]:
    """The run's batch jobs in chain order (empty for a run that never had one)."""
    jobs: dict[str, JobRecord] = {}
    for event in journal.events(run_id, kinds=(JOB_EVENT,)):
        data = event.data
        if data.get("kind") != JOB_EVENT:
            continue
        job = jobs.setdefault(data["job_id"], JobRecord(index=int(data["index"]), job_id=data["job_id"]))
        setattr(job, f"{data['phase']}_at", event.created_at)
        for key in ("script", "host", "ends_at", "end_reason", "allocation"):
            if key in data:
                setattr(job, key, data[key])
    return sorted(jobs.values(), key=lambda job: (job.index, job.submitted_at or job.started_at or ""))


def _add(
    journal: Journal, run_id: str, message: str, phase: str, job_id: str, index: int, **facts: Any
) -> None:
    data = {"kind": JOB_EVENT, "phase": phase, "job_id": job_id, "index": index, **facts}
    journal.add_event(run_id, "info", message, data)
