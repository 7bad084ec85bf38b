"""When this batch job's allocation ends, and how long before that to stop.

The end is read from the scheduler's own record of the job, not computed from a walltime the
supervisor was told: a job may start late, be extended or shortened by an administrator, and only
the scheduler knows. Slurm records the end (``squeue -o %e``, local time); PBS Pro records the
start (``stime``) and the walltime asked for (``Resource_List.walltime``), whose sum is the end.

Both schedulers also warn a job before they kill it, which the supervisor handles in case its own
clock is late: Slurm sends what ``--signal=B:USR1@SECONDS`` asks for to the batch shell (``B:``)
that many seconds before the limit; PBS Pro sends SIGTERM at the limit, then SIGKILL after the
server's ``kill_delay`` (10 s by default).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

from sciagent.compute.scheduler.commands import Scheduler, SchedulerError, json_output, run_command

PRE_LIMIT_SIGNAL: dict[str, signal.Signals] = {"slurm": signal.SIGUSR1, "pbspro": signal.SIGTERM}
MIN_MARGIN_S = 60.0  # Slurm delivers --signal up to 60 s early; a qsub/sbatch may take seconds
_JOB_ID_ENV: dict[Scheduler, str] = {"slurm": "SLURM_JOB_ID", "pbspro": "PBS_JOBID"}
_PBS_TIME = "%a %b %d %H:%M:%S %Y"  # ctime(), as qstat -F json prints stime
_SLURM_TIME = "%Y-%m-%dT%H:%M:%S"


def current_scheduler(environ: Mapping[str, str] | None = None) -> Scheduler | None:
    """The scheduler whose batch job this process runs in (by its job id variable), or None."""
    env = os.environ if environ is None else environ
    for scheduler, variable in _JOB_ID_ENV.items():
        if env.get(variable):
            return scheduler
    return None


def current_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """This batch job's id as its scheduler names it (``SLURM_JOB_ID``, ``PBS_JOBID``), or None."""
    env = os.environ if environ is None else environ
    scheduler = current_scheduler(env)
    return env[_JOB_ID_ENV[scheduler]] if scheduler else None


def job_end_time(environ: Mapping[str, str] | None = None) -> float | None:
    """When this batch job's allocation ends (epoch seconds); None outside a job or with no limit.

    Raises:
        SchedulerError: the scheduler's command failed, or its record lacks the end or cannot be read.
    """
    scheduler, job_id = current_scheduler(environ), current_job_id(environ)
    if scheduler is None or job_id is None:
        return None
    if scheduler == "slurm":
        return _slurm_end(job_id)
    return _pbs_end(job_id)


def _slurm_end(job_id: str) -> float | None:
    text = run_command(["squeue", "-h", "-j", job_id, "-o", "%e"]).strip()
    if text in ("", "N/A", "Unknown", "NONE"):  # no time limit (or not yet known)
        return None
    return _local_time(text, _SLURM_TIME, f"squeue's end time of job {job_id}")


def _pbs_end(job_id: str) -> float | None:
    document = json_output(["qstat", "-f", "-F", "json", job_id])
    record = next(iter((document.get("Jobs") or {}).values()), None)
    if record is None:
        raise SchedulerError(f"`qstat -f -F json {job_id}` did not report the job")
    walltime = (record.get("Resource_List") or {}).get("walltime")
    if not walltime:
        return None
    if not record.get("stime"):
        raise SchedulerError(f"`qstat -f -F json {job_id}` has no start time (stime) for a running job")
    started = _local_time(record["stime"], _PBS_TIME, f"qstat's stime of job {job_id}")
    return started + _hms_seconds(walltime, job_id)


def _local_time(text: str, fmt: str, what: str) -> float:
    try:
        return time.mktime(time.strptime(text, fmt))
    except ValueError as exc:
        raise SchedulerError(f"{what} is not a time: {text!r}") from exc


def _hms_seconds(text: str, job_id: str) -> float:
    """PBS walltime ``[[HH:]MM:]SS`` in seconds."""
    try:
        parts = [int(part) for part in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3:
        raise SchedulerError(f"qstat's walltime of job {job_id} is not [[HH:]MM:]SS: {text!r}")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)


def stop_margin_s(checkpoint_interval_s: float, stop_s: float, configured: float | None = None) -> float:
    """How long before the allocation ends the supervisor stops taking work and winds down.

    ``configured`` (``--margin``) wins. Otherwise ``max(60, checkpoint_interval_s + 2 * stop_s)``:
    a running simulation may need up to one checkpoint interval to reach its next checkpoint, then
    stopping cleanly takes ``stop_s`` (checkpoints written, the continuation submitted, children
    ended), doubled because a busy node halves the speed of anything measured on a quiet one; at
    least 60 s because Slurm may deliver its warning that much early and a submission takes seconds.
    """
    if configured is not None:
        return configured
    return max(MIN_MARGIN_S, checkpoint_interval_s + 2.0 * stop_s)


def pre_limit_signal(scheduler: Scheduler) -> signal.Signals:
    """The signal ``scheduler`` sends a job before killing it at its limit (the supervisor handles it)."""
    return PRE_LIMIT_SIGNAL[scheduler]


def slurm_signal_option(margin_s: float) -> str:
    """The ``sbatch`` option that sends SIGUSR1 to the batch shell ``margin_s`` before the limit."""
    return f"--signal=B:USR1@{max(1, round(margin_s))}"
