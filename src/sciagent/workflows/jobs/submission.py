"""Submitting a run's job script, optionally after another job, and cancelling a job: ``sbatch`` / ``qsub``.

psij (``compute.scheduler.psij_jobs``) writes its own directives around a command and has no job
dependencies; a run's script carries its directives already and a continuation must wait for the job
before it (``afterany``: whether that job ended well or was killed at its walltime). So these call the
scheduler's own commands through the one seam, ``commands.run_command``.
"""

from __future__ import annotations

import re
from pathlib import Path

from sciagent.compute.scheduler.commands import SchedulerError, run_command, scheduler_of
from sciagent.compute.scheduler.values import JOB_ID
from sciagent.compute.sites import SiteConfig, SiteUnavailable
from sciagent.errors import UserError


def submit_script(site_name: str, site: SiteConfig, script_path: Path, *, after: str | None) -> str:
    """Submit ``script_path`` to the site's scheduler and return the job id.

    Args:
        site_name: the site's name (for messages).
        site: a Slurm or PBS Pro site.
        script_path: a job script with its own directives (``render_job_script``).
        after: a job id this job may start only after, however that one ends (``afterany``).

    Raises:
        ConfigError: the site is not a batch site.
        UserError: ``after`` is not a job id.
        SiteUnavailable: the scheduler's command is missing or refused the job (its message, in one line).
    """
    scheduler = scheduler_of(site_name, site)
    if after is not None:
        _job_id(after)
    if scheduler == "slurm":
        args = ["sbatch", "--parsable", *([f"--dependency=afterany:{after}"] if after else [])]
    else:
        args = ["qsub", *(["-W", f"depend=afterany:{after}"] if after else [])]
    try:
        out = run_command([*args, str(script_path.resolve())])
    except SchedulerError as exc:
        raise SiteUnavailable(f"site {site_name} did not take the job: {_one_line(str(exc))}") from exc
    job_id = out.strip().split(";")[0]  # sbatch --parsable on a federation prints "ID;CLUSTER"
    if not re.fullmatch(JOB_ID, job_id):
        raise SiteUnavailable(f"site {site_name}: `{args[0]}` printed no job id: {_one_line(out)[:200]!r}")
    return job_id


def cancel(site_name: str, site: SiteConfig, job_id: str) -> None:
    """Cancel job ``job_id`` (``scancel`` / ``qdel``).

    Raises:
        ConfigError: the site is not a batch site.
        UserError: ``job_id`` is not a job id.
        SiteUnavailable: the scheduler's command is missing or refused (its message, in one line).
    """
    command = "scancel" if scheduler_of(site_name, site) == "slurm" else "qdel"
    try:
        run_command([command, _job_id(job_id)])
    except SchedulerError as exc:
        raise SiteUnavailable(f"site {site_name} did not cancel job {job_id}: {_one_line(str(exc))}") from exc


def _job_id(value: str) -> str:
    if not re.fullmatch(JOB_ID, value):
        raise UserError(f"{value!r} is not a batch job id (e.g. 1234 for Slurm, 1234.server for PBS Pro)")
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())
