"""Named *sites* (where tasks run) and the one function that turns a name into an ``Executor``.

A site is configuration only: which engine (``local`` processes, ``parsl`` pilot jobs, a ``globus``
Compute endpoint) and, for Parsl, which batch scheduler and what to ask it for. Built-in sites
(``sciagent sites list``):

- ``local``: ``LocalExecutor``, one process per task on this machine.
- ``local-parsl``: Parsl's HighThroughputExecutor with a LocalProvider, one worker per core.
- ``polaris``: PBS Pro, 4 NVIDIA A100 per node, one worker pinned to each (``CUDA_VISIBLE_DEVICES``),
  ``filesystems=home:eagle``, one manager per node through ``mpiexec`` (Parsl's shipped Polaris config).
- ``aurora``: PBS Pro, 12 Intel GPU tiles per node, one worker pinned to each (``ZE_AFFINITY_MASK``),
  ``filesystems=home:flare``, OpenMM's OpenCL platform, ALCF's CPU binding (cores 0 and 52 left to the OS),
  workers connecting back over the login node's ``hsn0`` (Slingshot), as ALCF's Parsl guide does.
- ``slurm``: a generic Slurm cluster; ``sbatch`` must be on PATH.

Every Parsl site's HTEX traffic is CurveZMQ-encrypted (``SiteConfig.encrypted``), ``local-parsl``'s too:
loopback is not a trust boundary, any user of a login node can connect to its ``127.0.0.1`` ports.

``[sites.NAME]`` tables in ``sciagent.toml`` add sites or override fields of a built-in one (only
the fields written there), as ``[llm.NAME]`` does for model profiles. Options a site cannot work
without (a PBS account, a Globus endpoint id) are checked when the site is used, not when the
config is read, so the built-in templates list fine before they are filled in.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sciagent.compute.scheduler.policy import SchedulerPolicy
from sciagent.errors import ConfigError, SciagentError
from sciagent.overlay import overlay_builtins
from sciagent.science.spec import PlatformName

if TYPE_CHECKING:
    from sciagent.compute.base import Executor

SiteKind = Literal["local", "parsl", "globus"]
ProviderName = Literal["local", "pbspro", "slurm"]
LauncherName = Literal["simple", "mpiexec", "srun", "single-node"]
GpuVendor = Literal["nvidia", "intel", "amd"]

_WALLTIME = re.compile(r"^\d{1,3}:[0-5]\d:[0-5]\d$")
_VENDOR_PLATFORM: dict[str, PlatformName] = {"nvidia": "CUDA", "intel": "OpenCL", "amd": "HIP"}
_PBS_ONLY = ("queue", "filesystems", "select_options")
_SCHEDULER_COMMANDS = {"pbspro": ("qsub", "qstat", "qdel"), "slurm": ("sbatch", "squeue", "scancel")}


class SiteUnavailable(SciagentError):
    """A site is configured correctly but cannot be reached from here (no scheduler, submit refused)."""


class SiteConfig(BaseModel):
    """How to reach one site and what to ask its scheduler for.

    Attributes:
        kind: ``local`` (processes here), ``parsl`` (HTEX pilot jobs) or ``globus`` (a Compute endpoint).
        description: a line for ``sciagent sites list``.
        provider: the Parsl provider: ``local``, ``pbspro`` or ``slurm``.
        account: the allocation charged (``qsub -A``, ``#SBATCH --account``); required for PBS Pro.
        queue: the PBS queue (``qsub -q``); Slurm uses ``partition``.
        partition: the Slurm partition (``#SBATCH --partition``).
        walltime: per batch job (block), ``HH:MM:SS``.
        nodes_per_block: nodes in each batch job.
        max_blocks: batch jobs that may be queued or running at once.
        workers_per_node: tasks a node runs at once; default one per accelerator, else one per
            ``cores_per_worker`` cores.
        cores_per_worker: CPU threads each task may use (also ``OPENMM_CPU_THREADS`` on the worker).
        cpus_per_node: the PBS ``ncpus`` of the select line.
        gpus_per_node: a count (devices ``0..N-1``) or the device ids to pin one worker to each,
            e.g. Aurora's tiles ``"0.0" .. "5.1"`` (Parsl sets ``CUDA_VISIBLE_DEVICES``,
            ``ROCR_VISIBLE_DEVICES`` and ``ZE_AFFINITY_MASK`` per worker).
        gpu_vendor: picks the default OpenMM platform (CUDA, OpenCL, HIP).
        cpu_affinity: Parsl's worker CPU binding (``none``, ``block``, ``alternating``, ``list:...``).
        worker_init: shell lines run in the job before the workers start (activate the environment);
            ``None`` puts this interpreter's ``bin/`` first on PATH, which is right when the site
            shares this filesystem.
        scheduler_options: extra ``#PBS`` / ``#SBATCH`` lines for the job script.
        select_options: appended to PBS's ``-l select=N:ncpus=C`` (e.g. ``ngpus=4``).
        filesystems: PBS ``-l filesystems=`` (ALCF requires it: ``home:eagle``, ``home:flare``).
        launcher: how the job starts one worker manager per node.
        launcher_options: extra arguments for ``mpiexec`` / ``srun``.
        openmm_platform: the OpenMM platform for simulations there; default from ``gpu_vendor``.
        remote_workdir: where runs go on the site's filesystem; default the local workspace.
        endpoint_id: the Globus Compute endpoint (``globus`` only).
        address: the IP address or hostname of this machine that the batch job's worker managers
            connect back to (Parsl's HTEX ``address``); wins over ``interface``. Unset with no
            ``interface``: Parsl hands the workers every address of this host and each manager
            keeps the first it reaches. Batch sites only: a ``local`` provider always listens on
            ``127.0.0.1``.
        interface: a network interface of this machine (e.g. ``hsn0``, Aurora's Slingshot
            network) whose IPv4 address the workers connect to, looked up when the executor is
            built (Parsl's ``address_by_interface``), so one template works on every login node.
            Facility login nodes have several networks and the compute nodes reach only some.
        policy: ``[sites.NAME.policy]``, what the batch-job tools may do there (``SchedulerPolicy``:
            most jobs per queue, least seconds between submissions, no resubmission of a failed
            job before a diagnosis, only sciagent's own jobs, how often monitoring polls).
        encrypted: CurveZMQ encryption and authentication of the traffic between this machine's
            Parsl interchange and the workers (HTEX ``encrypted``). Tasks and results are pickles
            and cross the facility network; without it anyone who can reach the interchange's port
            could read them, or attach as a worker, take tasks and hand back pickles. Default: on
            for every provider (a ``local`` interchange listens on ``127.0.0.1``, which every user of
            the machine can reach). ``false`` is honoured with a warning; pyzmq must be built with
            CURVE otherwise, except that a ``local`` site left unset runs unencrypted, with a warning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: SiteKind
    description: str | None = None
    provider: ProviderName = "local"
    account: str | None = None
    queue: str | None = None
    partition: str | None = None
    walltime: str = "00:30:00"
    nodes_per_block: int = Field(default=1, ge=1)
    max_blocks: int = Field(default=1, ge=1)
    workers_per_node: int | None = Field(default=None, ge=1)
    cores_per_worker: int | None = Field(default=None, ge=1)
    cpus_per_node: int | None = Field(default=None, ge=1)
    gpus_per_node: int | list[str] | None = None
    gpu_vendor: GpuVendor | None = None
    cpu_affinity: str = "none"
    worker_init: str | None = None
    scheduler_options: str = ""
    select_options: str = ""
    filesystems: str | None = None
    launcher: LauncherName = "single-node"
    launcher_options: str = ""
    openmm_platform: PlatformName | None = None
    remote_workdir: str | None = None
    endpoint_id: str | None = None
    address: str | None = None
    interface: str | None = None
    encrypted: bool | None = None
    policy: SchedulerPolicy = Field(default_factory=SchedulerPolicy)

    @field_validator("walltime")
    @classmethod
    def _walltime_format(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(f"walltime must be HH:MM:SS (e.g. 01:00:00), got {value!r}")
        return value

    @field_validator("gpus_per_node")
    @classmethod
    def _gpus(cls, value: int | list[str] | None) -> int | list[str] | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("gpus_per_node must be a count of 0 or more, or a list of device ids")
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("gpus_per_node as a list must name each device id once")
        return value

    @model_validator(mode="after")
    def _options_fit_provider(self) -> SiteConfig:
        if self.kind == "parsl" and self.provider != "pbspro":
            for option in _PBS_ONLY:
                if getattr(self, option):
                    raise ValueError(f"{option} applies to pbspro sites, not {self.provider}")
        if self.partition and not (self.kind == "parsl" and self.provider == "slurm"):
            raise ValueError("partition applies to slurm sites; PBS Pro uses queue")
        if self.endpoint_id and self.kind != "globus":
            raise ValueError("endpoint_id applies to globus sites")
        batch = self.kind == "parsl" and self.provider != "local"
        for option in ("address", "interface"):
            if getattr(self, option) and not batch:
                raise ValueError(
                    f"{option} applies to pbspro and slurm sites; a local one listens on 127.0.0.1"
                )
        if self.encrypted is not None and self.kind != "parsl":
            raise ValueError("encrypted applies to parsl sites")
        return self

    @property
    def encrypts(self) -> bool:
        """Whether HTEX traffic is to be CurveZMQ-encrypted: ``encrypted``, else on."""
        return self.encrypted is not False

    @property
    def accelerators(self) -> list[str]:
        """The device ids workers are pinned to, one worker each (empty: no pinning)."""
        if isinstance(self.gpus_per_node, list):
            return list(self.gpus_per_node)
        return [str(i) for i in range(self.gpus_per_node or 0)]

    @property
    def platform(self) -> PlatformName:
        """The OpenMM platform to ask for in simulations that run on this site."""
        if self.openmm_platform:
            return self.openmm_platform
        return _VENDOR_PLATFORM[self.gpu_vendor] if self.gpu_vendor else "auto"

    @property
    def where(self) -> str:
        """Where tasks run, in a few words, for listings (no secrets: ids and names only)."""
        if self.kind == "local":
            return "this machine (processes)"
        if self.kind == "globus":
            return f"Globus Compute endpoint {self.endpoint_id or '(endpoint_id not set)'}"
        if self.provider == "local":
            return "this machine (Parsl workers)"
        if self.provider == "pbspro":
            return f"PBS Pro queue {self.queue or '(default)'}, {self.nodes_per_block} node(s)/job"
        return f"Slurm partition {self.partition or '(default)'}, {self.nodes_per_block} node(s)/job"

    def effective_worker_init(self) -> str:
        """``worker_init`` (default: a PATH line that finds this interpreter's Parsl and sciagent).

        Intel tile ids (``card.tile``, Aurora) mean something only in Level Zero's COMPOSITE
        hierarchy (the default is FLAT, one device per tile), so that line is always added for them.
        """
        default = f'export PATH="{Path(sys.executable).parent}:$PATH"'
        lines = [default if self.worker_init is None else self.worker_init]
        if self.gpu_vendor == "intel" and any("." in device for device in self.accelerators):
            lines.append("export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE")
        return "\n".join(lines)


def _tiles(gpus: int, tiles: int) -> list[str]:
    return [f"{gpu}.{tile}" for gpu in range(gpus) for tile in range(tiles)]


def _aurora_affinity() -> str:
    """ALCF's binding: 8 cores + their hyperthreads per tile; cores 0 and 52 are left to the OS."""
    blocks = [
        f"{lo}-{lo + 7},{lo + 104}-{lo + 111}" for first in (1, 53) for lo in range(first, first + 48, 8)
    ]
    return "list:" + ":".join(blocks)


# The interchange address of the ALCF sites follows ALCF's published Parsl configurations
# (github.com/argonne-lcf/user-guides, read at 7d04a3f, Aug 2026):
# - docs/aurora/workflows/parsl.md: every HTEX/MPIExecutor config sets
#   ``address=address_by_interface('hsn0')``, "Ensures connections are made over the slingshot
#   network"; hence ``interface="hsn0"``.
# - docs/polaris/workflows/parsl.md: the config sets no ``address`` (Parsl's default: all of the
#   host's addresses). Commit 1b11df2d (Feb 2025, "removed outdated options") dropped its earlier
#   ``address_by_interface("bond0")``; Parsl's own parsl/configs/polaris.py (parsl 2026.10.26)
#   still sets bond0, so ``interface = "bond0"`` in [sites.polaris] is the fallback if needed.
# Neither sets ``encrypted``: they take Parsl's default, True, as every batch site here does.
BUILTIN_SITES: dict[str, SiteConfig] = {
    "local": SiteConfig(kind="local", description="one process per task on this machine"),
    "local-parsl": SiteConfig(
        kind="parsl", provider="local", description="Parsl HTEX on this machine, one worker per core"
    ),
    "polaris": SiteConfig(
        kind="parsl",
        provider="pbspro",
        description="ALCF Polaris: PBS Pro, 4 NVIDIA A100 per node",
        queue="debug",
        walltime="01:00:00",
        cpus_per_node=64,
        gpus_per_node=4,
        gpu_vendor="nvidia",
        cores_per_worker=16,
        cpu_affinity="alternating",
        select_options="ngpus=4",
        filesystems="home:eagle",
        scheduler_options="#PBS -l place=scatter",
        launcher="mpiexec",
        launcher_options="--depth=64 --ppn 1",
        openmm_platform="CUDA",
    ),
    "aurora": SiteConfig(
        kind="parsl",
        provider="pbspro",
        description="ALCF Aurora: PBS Pro, 6 Intel GPUs (12 tiles) per node",
        queue="debug",
        walltime="01:00:00",
        cpus_per_node=208,
        gpus_per_node=_tiles(6, 2),
        gpu_vendor="intel",
        cores_per_worker=16,
        cpu_affinity=_aurora_affinity(),
        filesystems="home:flare",
        scheduler_options="#PBS -l place=scatter",
        launcher="mpiexec",
        launcher_options="--ppn 1",
        openmm_platform="OpenCL",
        interface="hsn0",
    ),
    "slurm": SiteConfig(
        kind="parsl", provider="slurm", description="a Slurm cluster (sbatch on PATH)", launcher="srun"
    ),
}


def overlay_builtin_sites(tables: object) -> object:
    """Lay the user's ``[sites.NAME]`` tables over the built-in site of the same name, field by field.

    ``Settings`` calls this before validating ``sites``, so ``[sites.polaris]`` holding only
    ``account = "MYPROJ"`` keeps every other Polaris setting.
    """
    return overlay_builtins(tables, BUILTIN_SITES, SiteConfig)


def all_sites(sites: Mapping[str, SiteConfig]) -> dict[str, SiteConfig]:
    """The built-in sites plus the user's ``sites`` (``Settings.sites``: each already includes its
    built-in base)."""
    return BUILTIN_SITES | dict(sites)


def resolve_site(name: str, sites: Mapping[str, SiteConfig]) -> SiteConfig:
    """The site called ``name`` among the built-ins and the user's ``sites`` (``Settings.sites``),
    checked to have what its engine needs.

    Raises:
        ConfigError: no such site (the message lists the known ones), or a required option is
            missing (the message names the site, the option and where to set it).
    """
    known_sites = all_sites(sites)
    if name not in known_sites:
        known = ", ".join(sorted(known_sites))
        raise ConfigError(
            f"unknown site {name}: known sites are {known}; add [sites.{name}] to sciagent.toml"
        )
    site = known_sites[name]
    missing = _missing_option(site)
    if missing:
        option, why = missing
        raise ConfigError(
            f"site {name}: {option} is not set ({why}); set it in [sites.{name}] in sciagent.toml"
        )
    return site


def _missing_option(site: SiteConfig) -> tuple[str, str] | None:
    if site.kind == "globus" and not site.endpoint_id:
        return "endpoint_id", "a globus site needs the Compute endpoint's id"
    if site.kind == "parsl" and site.provider == "pbspro" and not site.account:
        return "account", "PBS Pro jobs are charged to a project: qsub -A"
    return None


def make_executor(name: str, sites: Mapping[str, SiteConfig], *, run_dir: Path) -> Executor:
    """Build the executor for site ``name`` (looked up as ``resolve_site`` does, among the built-ins
    and the user's ``sites``); ``run_dir`` holds Parsl's job scripts and logs.

    Parsl sites start their first batch job (block) here, so the returned executor is live:
    use it as a context manager, or call ``shutdown``, so no job or worker is left behind.

    Raises:
        ConfigError: unknown site or a missing option.
        SiteUnavailable: the scheduler's commands are not on PATH, or it refused the job.
    """
    from sciagent.compute import _site_builders as builders

    site = resolve_site(name, sites)
    if site.kind == "local":
        from sciagent.compute.local import LocalExecutor

        return LocalExecutor(site.workers_per_node, threads_per_worker=site.cores_per_worker, name=name)
    if site.kind == "globus":
        return builders.globus_executor(name, site)
    if site.provider in _SCHEDULER_COMMANDS:
        builders.require_commands(name, site.provider, _SCHEDULER_COMMANDS[site.provider])
    return builders.parsl_executor(name, site, run_dir)
