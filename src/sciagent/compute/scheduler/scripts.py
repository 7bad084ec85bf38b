"""Job scripts that run an OpenMM simulation with sciagent itself on a batch node.

The script holds only what runs on the node (the site's ``worker_init``, the GPU binding and one
``sciagent simulate`` line); what to ask the scheduler for (queue, account, walltime, nodes,
filesystems) is the returned ``JobRequest``, which the caller records where no model writes (the
job ledger) and ``submit_job`` hands to psij, which writes the ``#SBATCH``/``#PBS`` lines.

Every value a model chose is checked against a pattern (``values``) before it is rendered, shell
values are quoted and comment lines take only single-line values, so no value adds a line or a command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2

from sciagent.compute.scheduler.commands import scheduler_of
from sciagent.compute.scheduler.psij_jobs import JobRequest
from sciagent.compute.scheduler.values import STRUCTURE, one_line
from sciagent.compute.sites import SiteConfig
from sciagent.errors import UserError

FRAMES = 10  # trajectory frames and CSV rows a job's simulation writes
_DEVICE_VARIABLE = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "intel": "ZE_AFFINITY_MASK",
    "amd": "ROCR_VISIBLE_DEVICES",
}
_FORCEFIELD = {"CPU": "amber99sbildn"}  # GBSAOBCForce: several times faster than amber14's CustomGB on CPUs


def write_job_script(
    site_name: str,
    site: SiteConfig,
    directory: Path,
    *,
    structure: str,
    session_dir: Path,
    length_ps: float,
    timestep_fs: float,
    temperature_k: float,
    overrides: dict[str, object],
) -> JobRequest:
    """Write ``directory/job.sh`` and return what to ask the scheduler for (default: the site's).

    ``structure`` is a bundled name, PDB id or a file in ``session_dir`` (the job runs in
    ``directory``, so a file is written as its absolute path); ``overrides`` holds the queue,
    walltime or nodes asked for (None values are ignored).

    Raises:
        UserError: a value does not have its pattern (the message names it); nothing is written.
    """
    scheduler_of(site_name, site)  # a batch site, or ConfigError
    if len(structure) > 300 or not re.fullmatch(STRUCTURE, structure):
        raise UserError(
            f"structure {structure!r} is not a bundled name, PDB id or a file name relative to the "
            "session directory (letters, digits, '_', '-', single '.' and '/')"
        )
    script = directory / "job.sh"
    defaults = {
        "queue": site.queue or site.partition,
        "account": site.account,
        "walltime": site.walltime,
        "nodes": site.nodes_per_block,
        "filesystems": site.filesystems,
        "gpus_per_node": len(site.accelerators),
    }
    chosen = {key: value for key, value in overrides.items() if value is not None}
    request = JobRequest.checked(site=site_name, script=str(script), **(defaults | chosen))
    local = session_dir / structure
    if local.exists() and not local.resolve().is_relative_to(session_dir.resolve()):
        raise UserError(f"structure {structure!r} links outside the session directory")
    steps = max(1, round(length_ps * 1000 / timestep_fs))
    platform = site.platform if site.platform != "auto" else ("CPU" if not site.accelerators else "auto")
    devices = site.accelerators
    text = job_template("openmm_job.sh.j2").render(
        description=f"{length_ps:g} ps of {structure} at {temperature_k:g} K, {timestep_fs:g} fs steps",
        site=site_name,
        asks=", ".join(
            f"{key} {value}" for key, value in request.model_dump(exclude={"site", "script"}).items() if value
        ),
        worker_init=site.effective_worker_init(),
        device_variable=_DEVICE_VARIABLE.get(site.gpu_vendor or "") if devices else None,
        device=devices[0] if devices else None,
        threads=site.cores_per_worker,
        structure=str(local.resolve()) if local.is_file() else structure,
        steps=steps,
        timestep_fs=timestep_fs,
        equilibration=0,
        temperature_k=temperature_k,
        forcefield=_FORCEFIELD.get(platform, "amber14"),
        platform=platform,
        report_interval=max(1, steps // FRAMES),
        out=str(directory / "md"),
    )
    directory.mkdir(parents=True, exist_ok=True)
    script.write_text(text)
    return request


def job_template(name: str) -> jinja2.Template:
    """A job-script template of ``compute/templates``, with the ``q`` (shell quote) and ``line`` (one
    comment line, ``one_line``) filters every job script renders its values through."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("sciagent.compute", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    environment.filters["q"] = lambda value: shlex.quote(str(value))
    environment.filters["line"] = one_line
    return environment.get_template(name)
