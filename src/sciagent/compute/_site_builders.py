"""From a ``SiteConfig`` to a live executor: one small function per Parsl provider, launcher and engine.

Parsl writes the job script itself, from its own per-scheduler templates (``parsl/providers/pbspro/
template.py``, ``slurm/template.py``); we only fill in their options, so nothing here formats a
``#PBS``/``#SBATCH`` script. Parsl's ``execute_wait`` is the one seam through which every ``qsub``,
``qstat``, ``sbatch`` ... runs; the PBS shim in ``tests/pbs_shim`` stands in behind it.

The HTEX of every Parsl site is CurveZMQ-encrypted (``SiteConfig.encrypts``), a local one's too: its
interchange listens on ``127.0.0.1``, where any user of the machine could attach as a worker, take
the tasks and hand back pickles. Parsl itself never checks that pyzmq can do it:
``HighThroughputExecutor.start`` calls ``parsl.curvezmq.create_certificates``, i.e.
``zmq.curve_keypair()``, which raises a bare ``ZMQError`` on a libzmq built without CURVE. So
``zmq.has("curve")`` is checked here, before anything starts. Where workers connect back to is
``SiteConfig.address``, else ``SiteConfig.interface`` resolved on this host, else Parsl's default
(``parsl.addresses.get_all_addresses``: every interface's address, the hostname's, the route's).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from sciagent.compute.sites import SiteConfig, SiteUnavailable
from sciagent.errors import ConfigError

if TYPE_CHECKING:
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers.base import Launcher
    from parsl.providers.base import ExecutionProvider

    from sciagent.compute.base import Executor

log = logging.getLogger(__name__)

_SCHEDULER_NAMES = {"pbspro": "PBS Pro", "slurm": "Slurm"}
_WARNED_UNENCRYPTED: set[str] = set()  # sites already warned about, so the warning comes once


def require_commands(name: str, provider: str, commands: tuple[str, ...]) -> None:
    """Fail early, and in one line, when the scheduler's commands are not here (Parsl would only log it).

    Raises:
        SiteUnavailable: the first missing command, and what to do about it.
    """
    missing = [command for command in commands if shutil.which(command) is None]
    if missing:
        scheduler = _SCHEDULER_NAMES[provider]
        raise SiteUnavailable(
            f"site {name}: `{missing[0]}` is not on PATH, so this machine cannot submit {scheduler} jobs; "
            "run sciagent on the cluster's login node, or use a globus site"
        )


def parsl_executor(name: str, site: SiteConfig, run_dir: Path) -> Executor:
    """A ``ParslExecutor`` on an HTEX whose provider matches ``site.provider``; its first block starts now."""
    from sciagent.compute.parsl_executor import ParslExecutor

    workers = workers_per_node(site)
    builders = {"local": _local_provider, "pbspro": _pbspro_provider, "slurm": _slurm_provider}
    provider = builders[site.provider](site, _launcher(site))
    htex = _htex(name, site, provider, workers)
    threads = site.cores_per_worker or (_local_threads(workers) if site.provider == "local" else None)
    env = {} if threads is None else {"OPENMM_CPU_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    capacity = workers * site.nodes_per_block * site.max_blocks
    # retries=0: the workflow's policy is the one owner of lost-worker retries (workflows/study/policy.py).
    return ParslExecutor(htex, name=name, run_dir=run_dir, retries=0, capacity=capacity, worker_env=env)


def globus_executor(name: str, site: SiteConfig) -> Executor:
    """The Globus Compute executor for ``site.endpoint_id`` (imported here: the SDK is heavy).

    Raises:
        SiteUnavailable: the Globus Compute executor is not available in this installation.
    """
    try:
        from sciagent.compute.globus_executor import GlobusExecutor
    except ImportError as exc:
        raise SiteUnavailable(f"site {name}: Globus Compute sites are not available here ({exc})") from exc
    capacity = {"capacity": workers_per_node(site) * site.nodes_per_block * site.max_blocks}
    return GlobusExecutor(site.endpoint_id or "", name=name, **(capacity if site.workers_per_node else {}))


def workers_per_node(site: SiteConfig) -> int:
    """Tasks one node runs at once: as set, else one per accelerator, else per ``cores_per_worker``.

    With nothing to go on, a batch node runs one task (which may use all its cores); this machine
    runs one per ``cores_per_worker`` of its cores.
    """
    if site.workers_per_node:
        return site.workers_per_node
    if site.accelerators:
        return len(site.accelerators)
    per_worker = site.cores_per_worker or 1
    if site.cpus_per_node:
        return max(1, site.cpus_per_node // per_worker)
    return max(1, _usable_cores() // per_worker) if site.provider == "local" else 1


def _htex(name: str, site: SiteConfig, provider: ExecutionProvider, workers: int) -> HighThroughputExecutor:
    from parsl.executors import HighThroughputExecutor

    local = site.provider == "local"
    encrypted = _encryption(name, site)
    # Here the cores are split so HTEX starts exactly `workers` (it caps them at cores / cores_per_worker).
    cores_per_worker = _usable_cores() / workers * (1 - 1e-9) if local else float(site.cores_per_worker or 1)
    return HighThroughputExecutor(
        label=name,
        provider=provider,
        address="127.0.0.1" if local else _interchange_address(name, site),  # None: every address here
        encrypted=encrypted,
        max_workers_per_node=workers,
        cores_per_worker=cores_per_worker,
        cpu_affinity=site.cpu_affinity,
        available_accelerators=site.accelerators,
        prefetch_capacity=0,  # long tasks: a task waits for a free worker rather than behind a busy one
        heartbeat_period=2 if local else 30,
        heartbeat_threshold=30 if local else 120,
    )


def unencrypted_because(name: str, site: SiteConfig) -> str | None:
    """Why this Parsl site's HTEX would run unencrypted, in one line; None when CurveZMQ protects it.

    Raises:
        SiteUnavailable: encryption is on (set, or a batch site's default) and this pyzmq's libzmq
            has no CURVE support.
    """
    import zmq

    reach = "any user of this machine" if site.provider == "local" else "anyone who reaches its ports"
    if not site.encrypts:
        return (
            f"site {name}: encrypted = false: tasks and results cross to its workers unencrypted, and "
            f"{reach} can attach to the interchange as a worker"
        )
    if zmq.has("curve"):
        return None
    fix = "install pyzmq's PyPI wheel (it has a CURVE-enabled libzmq: pip install --force-reinstall pyzmq)"
    if site.provider == "local" and site.encrypted is None:
        return (
            f"site {name}: this pyzmq's libzmq {zmq.zmq_version()} is built without CURVE, so its "
            f"interchange is unencrypted and {reach} can attach as a worker; {fix}"
        )
    raise SiteUnavailable(
        f"site {name}: this pyzmq's libzmq {zmq.zmq_version()} is built without CURVE, so Parsl "
        f"cannot encrypt the traffic to the workers; {fix}, or set encrypted = false "
        f"in [sites.{name}] in sciagent.toml to run unencrypted"
    )


def _encryption(name: str, site: SiteConfig) -> bool:
    """Whether this site's HTEX is encrypted; why not is warned once per site."""
    reason = unencrypted_because(name, site)
    if reason is not None and name not in _WARNED_UNENCRYPTED:
        _WARNED_UNENCRYPTED.add(name)
        log.warning("%s", reason)
    return reason is None


def _interchange_address(name: str, site: SiteConfig) -> str | None:
    """The address the workers connect to: ``address``, ``interface``'s IPv4 address, or None (all).

    Raises:
        ConfigError: ``interface`` does not exist on this host (the message lists those that do),
            or it has no IPv4 address.
    """
    if site.address or not site.interface:
        return site.address
    from parsl.addresses import address_by_interface

    here = [interface for _, interface in socket.if_nameindex()]
    fix = f"run sciagent on the site's login node, or set interface or address in [sites.{name}]"
    if site.interface not in here:
        raise ConfigError(
            f"site {name}: network interface {site.interface} does not exist on this host "
            f"(it has {', '.join(here)}); {fix}"
        )
    try:
        return address_by_interface(site.interface)
    except OSError as exc:  # the ioctl's EADDRNOTAVAIL: up, but no IPv4 address
        raise ConfigError(
            f"site {name}: network interface {site.interface} has no IPv4 address ({exc.strerror}); {fix}"
        ) from exc


def _launcher(site: SiteConfig) -> Launcher:
    """How a job starts one worker manager per node (``mpiexec`` binds with PALS' ``--cpu-bind``)."""
    from parsl.launchers import MpiExecLauncher, SimpleLauncher, SingleNodeLauncher, SrunLauncher

    if site.launcher == "mpiexec":
        return MpiExecLauncher(bind_cmd="--cpu-bind", overrides=site.launcher_options)
    if site.launcher == "srun":
        return SrunLauncher(overrides=site.launcher_options)
    return SimpleLauncher() if site.launcher == "simple" else SingleNodeLauncher()


def _local_provider(site: SiteConfig, launcher: Launcher) -> ExecutionProvider:
    from parsl.providers import LocalProvider

    return LocalProvider(
        nodes_per_block=1,
        launcher=launcher,
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        worker_init=site.worker_init or "",
    )


def _pbspro_provider(site: SiteConfig, launcher: Launcher) -> ExecutionProvider:
    """PBS Pro: ``select=N:ncpus=C[:select_options]``, ``-q``, ``-A``, ``-l filesystems=``, walltime."""
    from parsl.providers import PBSProProvider

    lines = [f"#PBS -l filesystems={site.filesystems}"] if site.filesystems else []
    lines += [line for line in site.scheduler_options.splitlines() if line.strip()]
    return PBSProProvider(
        account=site.account,
        queue=site.queue,
        scheduler_options="\n".join(lines),
        select_options=site.select_options,
        worker_init=site.effective_worker_init(),
        nodes_per_block=site.nodes_per_block,
        cpus_per_node=site.cpus_per_node or 1,
        init_blocks=1,
        min_blocks=0,
        max_blocks=site.max_blocks,
        launcher=launcher,
        walltime=site.walltime,
    )


def _slurm_provider(site: SiteConfig, launcher: Launcher) -> ExecutionProvider:
    """Slurm: ``--partition``, ``--account``, ``--time``, ``--gpus-per-node``, extra ``#SBATCH`` lines."""
    from parsl.providers import SlurmProvider

    return SlurmProvider(
        partition=site.partition,
        account=site.account,
        nodes_per_block=site.nodes_per_block,
        cores_per_node=site.cpus_per_node,
        gpus_per_node=len(site.accelerators) or None,
        init_blocks=1,
        min_blocks=0,
        max_blocks=site.max_blocks,
        walltime=site.walltime,
        scheduler_options="\n".join(line for line in site.scheduler_options.splitlines() if line.strip()),
        worker_init=site.effective_worker_init(),
        launcher=launcher,
    )


def _local_threads(workers: int) -> int:
    return max(1, _usable_cores() // workers)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
