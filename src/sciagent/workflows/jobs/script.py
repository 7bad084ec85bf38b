"""The batch script of one job of a run: the scheduler's directives and one ``exec`` of the supervisor.

The script carries no text a model or the user's question wrote: what the run is to do lives in the
spec file, and the script names only its path. Every directive value passes the patterns of
``compute.scheduler.values`` (through ``JobRequest`` where one exists), the site's bounds are checked
again here (a continuation is rendered from the config of its day), comment lines take single-line
values and shell values are quoted, so no value can add a line or a command.

``exec`` makes the supervisor the batch shell itself: Slurm's pre-limit signal (``--signal=B:USR1@N``
goes to the batch shell only) and the scheduler's SIGTERM reach it, not a bash that would not pass them on.
"""

from __future__ import annotations

import re
from pathlib import Path

from sciagent.compute.scheduler.commands import Scheduler, scheduler_of
from sciagent.compute.scheduler.policy import request_refusal
from sciagent.compute.scheduler.psij_jobs import JobRequest
from sciagent.compute.scheduler.scripts import job_template
from sciagent.compute.scheduler.values import DIRECTIVE_PATH, JOB_NAME, SELECT_OPTIONS
from sciagent.compute.sites import SiteConfig
from sciagent.errors import UserError
from sciagent.workflows.jobs.spec import JobSpec
from sciagent.workflows.jobs.walltime import slurm_signal_option

SCRIPT_TEMPLATE = "batch_run.sh.j2"
_PREFIX: dict[Scheduler, str] = {"slurm": "#SBATCH", "pbspro": "#PBS"}


def job_request(spec: JobSpec, site_name: str, site: SiteConfig) -> JobRequest:
    """What one job of ``spec`` asks ``site`` for (one node, the spec's walltime), checked.

    Raises:
        ConfigError: ``site`` is not a Slurm or PBS Pro site.
        UserError: a value does not fit its pattern, or the request exceeds the site's bounds
            (``[sites.NAME.policy]``); the message names which.
    """
    scheduler_of(site_name, site)
    request = JobRequest.checked(
        site=site_name,
        script=str(spec.jobs_dir / script_name(spec)),
        queue=site.queue or site.partition,
        account=site.account,
        walltime=_hhmmss(spec.walltime_s),
        nodes=1,
        filesystems=site.filesystems,
        gpus_per_node=len(site.accelerators),
    )
    refused = request_refusal(site.policy, request, request.queue or "(default)", site.account)
    if refused:
        raise UserError(f"site {site_name} refuses this job: {refused} ([sites.{site_name}.policy])")
    return request


def script_name(spec: JobSpec) -> str:
    """The script's file name in the run's jobs directory: one per job of the chain."""
    return f"job-{spec.continuation}.sh"


def render_job_script(
    spec: JobSpec, spec_path: Path, site_name: str, site: SiteConfig, *, stop_margin_s: float
) -> str:
    """The text of the batch script that runs ``sciagent job run --spec spec_path`` on one node of ``site``.

    ``stop_margin_s`` is how long before the walltime Slurm signals the supervisor (``USR1``); PBS Pro
    has no such signal, so the supervisor watches the job's end time itself.

    Raises:
        ConfigError: ``site`` is not a batch site.
        UserError: a value (queue, account, filesystems, select options, a path in a directive, an
            extra scheduler option) could add a line or a command, or the site's bounds refuse the job.
    """
    scheduler = scheduler_of(site_name, site)
    request = job_request(spec, site_name, site)
    name = _checked(JOB_NAME, f"sciagent-{spec.run_id}", "job name (from the run id)")
    stem = spec.jobs_dir.resolve() / f"job-{spec.continuation}"
    logs = {stream: f"{stem}.{stream}" for stream in ("out", "err")}
    if not re.fullmatch(DIRECTIVE_PATH, logs["out"]):
        raise UserError(
            f"the job's output file {logs['out']!r} cannot go into a #PBS/#SBATCH line: use a workspace "
            "whose path has only letters, digits, '_', '.', '+', '-' and '/'"
        )
    if scheduler == "pbspro":
        directives = _pbs_directives(request, site, name, logs)
    else:
        directives = _slurm_directives(request, name, logs, stop_margin_s)
    directives += _extra_options(site.scheduler_options, _PREFIX[scheduler], site_name)
    return job_template(SCRIPT_TEMPLATE).render(
        directives=directives,
        run_id=spec.run_id,
        job_number=spec.continuation + 1,
        most_jobs=spec.max_continuations + 1,
        site=site_name,
        spec_path=str(spec_path.resolve()),
        worker_init=site.effective_worker_init(),
        directory=str(spec.start_dir.resolve()),
    )


def _pbs_directives(request: JobRequest, site: SiteConfig, name: str, logs: dict[str, str]) -> list[str]:
    select = ["select=1"]
    if site.cpus_per_node:
        select.append(f"ncpus={site.cpus_per_node}")
    if site.select_options:
        select.append(_checked(SELECT_OPTIONS, site.select_options, "select_options"))
    lines = [f"#PBS -N {name}"]
    if request.account:
        lines.append(f"#PBS -A {request.account}")
    if request.queue:
        lines.append(f"#PBS -q {request.queue}")
    lines += [f"#PBS -l {':'.join(select)}", f"#PBS -l walltime={request.walltime}"]
    if request.filesystems:
        lines.append(f"#PBS -l filesystems={request.filesystems}")
    return [*lines, f"#PBS -o {logs['out']}", f"#PBS -e {logs['err']}"]


def _slurm_directives(
    request: JobRequest, name: str, logs: dict[str, str], stop_margin_s: float
) -> list[str]:
    # --exclusive: the supervisor splits the whole node between the model and the simulations.
    lines = [f"#SBATCH --job-name={name}", "#SBATCH --nodes=1", "#SBATCH --exclusive"]
    if request.account:
        lines.append(f"#SBATCH --account={request.account}")
    if request.queue:
        lines.append(f"#SBATCH --partition={request.queue}")
    lines.append(f"#SBATCH --time={request.walltime}")
    if request.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={request.gpus_per_node}")
    return [*lines, f"#SBATCH {slurm_signal_option(stop_margin_s)}", f"#SBATCH --output={logs['out']}",
            f"#SBATCH --error={logs['err']}"]  # fmt: skip


def _extra_options(options: str, prefix: str, site_name: str) -> list[str]:
    """The site's ``scheduler_options``: directive lines only (a command line would end the directives)."""
    lines = [line.strip() for line in options.splitlines() if line.strip()]
    for line in lines:
        if not line.startswith(prefix + " ") or not line.isprintable():
            raise UserError(
                f"site {site_name}: scheduler_options line {line!r} is not a {prefix} directive: "
                f"fix [sites.{site_name}] scheduler_options"
            )
    return lines


def _checked(pattern: str, value: str, what: str) -> str:
    if not re.fullmatch(pattern, value):
        raise UserError(f"{what} {value!r} cannot go into a job script: it does not match {pattern}")
    return value


def _hhmmss(seconds: float) -> str:
    minutes, secs = divmod(max(1, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"
