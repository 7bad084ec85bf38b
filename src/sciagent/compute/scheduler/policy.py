"""What sciagent may do on a batch site, decided before it acts, from the job ledger and the site's policy.

Pure functions: given a job request, the jobs sciagent submitted and ``[sites.NAME.policy]``, each
returns None (go ahead) or the reason for refusing, which the tool hands back to the model as its
observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from sciagent.compute.scheduler.values import AccountName, QueueName, Walltime, walltime_seconds

if TYPE_CHECKING:  # sites imports this module, and these import sites
    from sciagent.compute.scheduler.ledger import JobRecord
    from sciagent.compute.scheduler.psij_jobs import JobRequest


class SchedulerPolicy(BaseModel):
    """``[sites.NAME.policy]``: limits on what sciagent does to a batch site's queue.

    Attributes:
        max_jobs_per_queue: sciagent's own jobs queued or running in one queue at once; None: no limit.
        min_seconds_between_submissions: the least time between two of sciagent's submissions to the site.
        allow_resubmit_failed_without_diagnosis: submit a script again whose last job failed, before a
            diagnosis of that failure is recorded (``diagnose_job``).
        only_own_jobs: cancel, hold and release only jobs sciagent submitted (in the ledger).
        poll_seconds: how often monitoring asks the scheduler for a job's state (never the model).
        max_nodes: the most nodes one job may ask for; None: the scheduler's own limit.
        max_walltime: the longest walltime one job may ask for (``HH:MM:SS``); None: the scheduler's.
        allowed_queues: the queues (partitions) jobs may go to, by the scheduler's own names; None: any.
        allowed_accounts: accounts jobs may charge besides the site's ``account``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_jobs_per_queue: int | None = Field(default=None, ge=1)
    min_seconds_between_submissions: float = Field(default=0.0, ge=0)
    allow_resubmit_failed_without_diagnosis: bool = False
    only_own_jobs: bool = True
    poll_seconds: int = Field(default=30, ge=1, le=3600)
    max_nodes: int | None = Field(default=None, ge=1)
    max_walltime: Walltime | None = None
    allowed_queues: tuple[QueueName, ...] | None = None
    allowed_accounts: tuple[AccountName, ...] = ()


def request_refusal(
    policy: SchedulerPolicy, request: JobRequest, queue: str, site_account: str | None
) -> str | None:
    """Why ``request`` (to ``queue``, the scheduler's own name) exceeds the site's bounds, or None.

    Checked at submission whoever built the request: a recorded request outlives the config it was
    built from.
    """
    if policy.allowed_queues is not None and queue not in policy.allowed_queues:
        return f"queue {queue} is not one the site allows ({', '.join(policy.allowed_queues)})"
    if request.account != site_account and request.account not in policy.allowed_accounts:
        return f"account {request.account or '(none)'} is not the site's ({site_account or 'none'})"
    if policy.max_nodes is not None and request.nodes > policy.max_nodes:
        return f"{request.nodes} nodes is more than the site's limit of {policy.max_nodes}"
    if policy.max_walltime and walltime_seconds(request.walltime) > walltime_seconds(policy.max_walltime):
        return f"walltime {request.walltime} is longer than the site's limit of {policy.max_walltime}"
    return None


def submission_refusal(
    policy: SchedulerPolicy, jobs: Sequence[JobRecord], queue: str, digest: str, now: float
) -> str | None:
    """Why a new submission of the script with content ``digest`` to ``queue`` is refused, or None.

    ``jobs`` are the site's own; ``queue`` and theirs are the scheduler's real names (the default
    named two ways would count as two queues). A failed job is found by content, not path, so a
    copy of its script is the same job.
    """
    if jobs and now - jobs[-1].submitted_at < policy.min_seconds_between_submissions:
        since = now - jobs[-1].submitted_at
        return (
            f"the site's policy allows one submission every {policy.min_seconds_between_submissions:g} s; "
            f"job {jobs[-1].native_id} was submitted {since:.0f} s ago: "
            f"wait {policy.min_seconds_between_submissions - since:.0f} s"
        )
    live = [job.native_id for job in jobs if job.queue == queue and not job.final]
    if policy.max_jobs_per_queue is not None and len(live) >= policy.max_jobs_per_queue:
        return (
            f"the site's policy allows {policy.max_jobs_per_queue} of sciagent's jobs in queue "
            f"{queue} at once, and {', '.join(live)} is queued or running: "
            "wait for it to finish, or cancel it"
        )
    failed = [job for job in jobs if job.digest == digest and job.state == "FAILED"]
    if failed and not failed[-1].diagnosis and not policy.allow_resubmit_failed_without_diagnosis:
        return (
            f"job {failed[-1].native_id} of this script failed (exit code {failed[-1].exit_code}); "
            "read its output (job_output) and record why with diagnose_job before submitting it again"
        )
    return None


def action_refusal(policy: SchedulerPolicy, action: str, native_id: str, own: bool) -> str | None:
    """Why ``action`` (cancel, hold, release) on job ``native_id`` is refused, or None."""
    if policy.only_own_jobs and not own:
        return (
            f"job {native_id} was not submitted by sciagent (it is not in the job ledger), and the "
            f"site's policy lets sciagent {action} only its own jobs"
        )
    return None
