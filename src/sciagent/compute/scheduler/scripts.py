"""Job scripts that run an OpenMM simulation with sciagent itself on a batch node.

The script holds only what runs on the node (the site's ``worker_init``, the GPU binding and one
``sciagent simulate`` line); what to ask the scheduler for (queue, account, walltime, nodes,
filesystems) is written beside it as ``job.json``, a ``JobRequest`` that ``submit_job`` hands to
psij, which writes the ``#SBATCH``/``#PBS`` lines. Both files can be read before anything is submitted.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2

from sciagent.compute.scheduler.commands import scheduler_of
from sciagent.compute.scheduler.psij_jobs import JobRequest
from sciagent.compute.sites import SiteConfig

REQUEST_FILE = "job.json"
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
    length_ps: float,
    timestep_fs: float,
    temperature_k: float,
    overrides: dict[str, object],
) -> JobRequest:
    """Write ``directory/job.sh`` and its ``job.json``; the request's fields default to the site's.

    ``overrides`` holds the queue, walltime or nodes asked for (None values are ignored).
    """
    scheduler_of(site_name, site)  # a batch site, or ConfigError
    directory.mkdir(parents=True, exist_ok=True)
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
    request = JobRequest(site=site_name, script=str(script), **(defaults | chosen))
    steps = max(1, round(length_ps * 1000 / timestep_fs))
    platform = site.platform if site.platform != "auto" else ("CPU" if not site.accelerators else "auto")
    devices = site.accelerators
    text = _template().render(
        description=f"{length_ps:g} ps of {structure} at {temperature_k:g} K, {timestep_fs:g} fs steps",
        site=site_name,
        asks=", ".join(
            f"{key} {value}" for key, value in request.model_dump(exclude={"site", "script"}).items() if value
        ),
        worker_init=site.effective_worker_init(),
        device_variable=_DEVICE_VARIABLE.get(site.gpu_vendor or "") if devices else None,
        device=devices[0] if devices else None,
        threads=site.cores_per_worker,
        structure=structure,
        steps=steps,
        timestep_fs=timestep_fs,
        equilibration=0,
        temperature_k=temperature_k,
        forcefield=_FORCEFIELD.get(platform, "amber14"),
        platform=platform,
        report_interval=max(1, steps // FRAMES),
        out=str(directory / "md"),
    )
    script.write_text(text)
    (directory / REQUEST_FILE).write_text(request.model_dump_json(indent=1))
    return request


def read_request(script: Path) -> JobRequest | None:
    """The ``JobRequest`` written beside ``script`` by ``write_job_script``, if there is one."""
    path = script.parent / REQUEST_FILE
    if not path.is_file():
        return None
    request = JobRequest.model_validate_json(path.read_text())
    return request if Path(request.script) == script else None


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("sciagent.compute", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    environment.filters["q"] = lambda value: shlex.quote(str(value))
    return environment.get_template("openmm_job.sh.j2")
