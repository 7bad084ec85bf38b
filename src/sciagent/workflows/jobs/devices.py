"""How one batch job's node is shared between the model server and the simulations.

Single-system mode serves the model on the same node as the simulations. Left alone, vLLM and
OpenMM both take the first GPU and fight over its memory, and llama.cpp's threads meet at a
barrier after every operation, so one MD worker on a core it uses stalls it (``default_threads``
in ``sciagent.llm.embedded``). So the job's devices are split once, before anything starts: the
model gets the first ``ModelInJob.devices`` GPUs (vLLM) or CPUs (llama.cpp), the simulations get
the rest, one worker pinned per GPU as sites pin them today.

The CPUs counted are this process's affinity (``os.sched_getaffinity(0)``): inside a Slurm or PBS
job that is the job's share of the node, not ``os.cpu_count()``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sciagent.compute.sites import SiteConfig
from sciagent.errors import UserError
from sciagent.workflows.jobs.spec import ModelInJob

# The variable each vendor's runtime reads to see only some devices (as Parsl sets per worker).
VISIBLE_DEVICES_ENV: dict[str, str] = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "intel": "ZE_AFFINITY_MASK",
    "amd": "ROCR_VISIBLE_DEVICES",
}


@dataclass(frozen=True)
class NodeSplit:
    """The model server's share of the node and the simulations' share.

    Attributes:
        model_env: environment for the model server (its visible GPUs); empty without a model.
        model_devices: the GPU ids the model server uses (none for llama.cpp).
        model_cpus: the CPUs the model server is pinned to; empty: not pinned (vLLM, which shares
            the CPUs with the simulations' GPU workers, or no model).
        model_threads: llama.cpp's ``--n_threads`` (one per CPU it has); None for vLLM.
        simulation_devices: the GPU ids the simulations get, one worker pinned to each.
        simulation_cpus: the CPUs the simulations (and the supervisor) are pinned to.
        simulation_site: the site the simulations run on inside the job.
    """

    model_env: dict[str, str]
    model_devices: tuple[str, ...]
    model_cpus: frozenset[int]
    model_threads: int | None
    simulation_devices: tuple[str, ...]
    simulation_cpus: frozenset[int]
    simulation_site: SiteConfig


def split_node(site: SiteConfig, model: ModelInJob | None, cpus: set[int] | None = None) -> NodeSplit:
    """Split the job's node between ``model`` and the simulations of ``site``.

    Args:
        site: the batch site the job runs on (its ``accelerators`` and ``gpu_vendor``).
        model: the model served in the job; None (multi-system mode): everything to simulations.
        cpus: the job's CPUs; default this process's affinity.

    Raises:
        UserError: the split leaves the simulations nothing, asks for more than the node has, or
            asks for vLLM where the site has no GPUs; one line naming the option to change.
    """
    job_cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    devices = site.accelerators
    if model is None:
        return _split(site, {}, (), frozenset(), None, devices, job_cpus)
    if model.backend == "vllm":
        if not devices or not site.gpu_vendor:
            raise UserError(
                "vllm needs GPUs and this site lists none (its gpus_per_node or gpu_vendor is unset): "
                "use --llm-in-job llama-cpp, or a GPU site"
            )
        _check_share("GPU", model.devices, len(devices))
        mine = tuple(devices[: model.devices])
        env = _visible_env(site, mine)
        return _split(site, env, mine, frozenset(), None, devices[model.devices :], job_cpus)
    _check_share("CPU", model.devices, len(job_cpus))
    mine_cpus = frozenset(job_cpus[: model.devices])
    rest = [cpu for cpu in job_cpus if cpu not in mine_cpus]
    return _split(site, {}, (), mine_cpus, model.devices, devices, rest)


def _check_share(what: str, wanted: int, available: int) -> None:
    if wanted > available:
        raise UserError(
            f"--llm-devices {wanted} asks for more {what}s than the job has ({available}): "
            "lower --llm-devices"
        )
    if wanted == available:
        raise UserError(
            f"--llm-devices {wanted} gives the model every {what} of the job ({available}) and leaves none "
            "for the simulations: lower --llm-devices"
        )


def _visible_env(site: SiteConfig, mine: tuple[str, ...]) -> dict[str, str]:
    """The model server's visible-devices variable for the vendor.

    vLLM runs with ``ZE_FLAT_DEVICE_HIERARCHY=FLAT`` (one device per tile, ``sciagent.llm.serve``),
    where ``ZE_AFFINITY_MASK`` takes flat indices, not the ``card.tile`` ids the site lists for
    its COMPOSITE-mode workers: tile ``c.t`` is flat index ``c * tiles_per_card + t``, the tiles
    per card read from the highest tile id the site lists.
    """
    vendor = site.gpu_vendor or "nvidia"
    if vendor == "intel" and any("." in device for device in site.accelerators):
        tiles = 1 + max(int(device.partition(".")[2] or 0) for device in site.accelerators)
        flat = [int(card) * tiles + int(tile or 0) for card, _, tile in (d.partition(".") for d in mine)]
        return {"ZE_FLAT_DEVICE_HIERARCHY": "FLAT", VISIBLE_DEVICES_ENV[vendor]: ",".join(map(str, flat))}
    return {VISIBLE_DEVICES_ENV[vendor]: ",".join(mine)}


def _split(
    site: SiteConfig,
    model_env: dict[str, str],
    model_devices: tuple[str, ...],
    model_cpus: frozenset[int],
    model_threads: int | None,
    simulation_devices: list[str],
    simulation_cpus: list[int],
) -> NodeSplit:
    return NodeSplit(
        model_env=model_env,
        model_devices=model_devices,
        model_cpus=model_cpus,
        model_threads=model_threads,
        simulation_devices=tuple(simulation_devices),
        simulation_cpus=frozenset(simulation_cpus),
        simulation_site=_simulation_site(site, simulation_devices, len(simulation_cpus)),
    )


def _simulation_site(site: SiteConfig, devices: list[str], cpus: int) -> SiteConfig:
    """Inside the job: Parsl workers here, one per GPU left; on CPU, one process with the CPUs left."""
    if devices:
        return SiteConfig(
            kind="parsl",
            provider="local",
            description="the simulations' share of this batch job's node",
            gpus_per_node=devices,
            gpu_vendor=site.gpu_vendor,
            openmm_platform=site.openmm_platform,
            cores_per_worker=site.cores_per_worker,
            worker_init=site.worker_init,
        )
    return SiteConfig(
        kind="local",
        description="the simulations' share of this batch job's node",
        workers_per_node=1,
        cores_per_worker=cpus,
        openmm_platform=site.openmm_platform,
    )


def pin(cpus: Collection[int], pid: int = 0) -> None:
    """Restrict process ``pid`` (0: this one) to ``cpus``; its later children inherit the set."""
    os.sched_setaffinity(pid, cpus)


def pinning_preexec(cpus: Collection[int]) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen`` that pins the child before it runs anything.

    Pinning in the child before ``exec`` (rather than after ``Popen`` returns) means threads and
    processes the program starts at once are inside the set too.
    """
    return functools.partial(pin, frozenset(cpus))
