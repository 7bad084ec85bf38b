"""Write a Globus Compute endpoint configuration for Aurora or Polaris (ALCF, PBS Pro).

Why generate it: the pieces that make an endpoint work on these machines are easy to get wrong by
hand and fail late, in a batch job's log: the ``filesystems`` resource PBS requires, one worker per
GPU (tile) pinned to it, the launcher that puts one worker manager on each node, and an
environment whose Python matches the submitting one. The facts differ per machine and live in the
one table below; the YAML layout lives in ``templates/endpoint_config.yaml.j2``.

The output is the 4.x endpoint's ``engine:`` format (``GlobusComputeEngine`` over Parsl's
``PBSProProvider`` and ``MpiExecLauncher``), usable as a single-user ``config.yaml`` or as the
user template of a multi-user endpoint.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Literal

import jinja2

__all__ = ["MACHINES", "Machine", "render_endpoint_config"]


@dataclass(frozen=True)
class Machine:
    """What an endpoint needs to know about one system (public facility facts)."""

    title: str
    filesystems: str  # PBS refuses jobs that do not name the filesystems they use
    cpus_per_node: int
    accelerators: tuple[str, ...]  # one worker per entry, pinned to it
    accelerator_kind: str
    select_options: str | None  # appended to ``#PBS -l select=N:ncpus=C``
    mpiexec_overrides: str
    queue: str
    worker_init: str  # default environment set-up: a venv on the facility's Python
    gpu_env: tuple[str, ...]  # shell lines that every worker_init gets


MACHINES: dict[str, Machine] = {
    "aurora": Machine(
        title="Aurora",
        filesystems="home:flare",
        cpus_per_node=208,
        accelerators=tuple(f"{card}.{tile}" for card in range(6) for tile in range(2)),  # 12 tiles
        accelerator_kind="GPU tile",
        select_options=None,
        mpiexec_overrides="--ppn 1",
        queue="debug",
        worker_init='module load frameworks\nsource "$HOME/venvs/sciagent/bin/activate"',
        gpu_env=(
            "# Intel GPUs: expose each card's two tiles as card.tile, the ids in available_accelerators",
            "export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE",
        ),
    ),
    "polaris": Machine(
        title="Polaris",
        filesystems="home:eagle",
        cpus_per_node=64,
        accelerators=("0", "1", "2", "3"),  # 4 A100s
        accelerator_kind="GPU",
        select_options="ngpus=4",
        mpiexec_overrides="--depth=64 --ppn 1",
        queue="debug",
        worker_init=(
            "module use /soft/modulefiles\nmodule load conda\nconda activate base\n"
            'source "$HOME/venvs/sciagent/bin/activate"'
        ),
        gpu_env=(),
    ),
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WALLTIME = re.compile(r"\d{2}:[0-5]\d:[0-5]\d")


def render_endpoint_config(
    machine: Literal["aurora", "polaris"],
    *,
    account: str,
    queue: str | None = None,
    walltime: str | None = None,
    nodes: int | None = None,
    worker_init: str | None = None,
) -> str:
    """The text of an endpoint ``config.yaml`` for ``machine``.

    Args:
        machine: ``aurora`` or ``polaris``.
        account: the PBS allocation (project) to charge, ``-A``.
        queue: the PBS queue; the machine's ``debug`` queue by default.
        walltime: each batch job's limit, HH:MM:SS; 01:00:00 by default.
        nodes: nodes per batch job (one worker per GPU or tile on each); 1 by default.
        worker_init: shell lines each job runs before starting workers, to load modules and
            activate the Python environment with sciagent; the default loads the facility's
            Python and activates ``$HOME/venvs/sciagent`` (make it with
            ``python -m venv --system-site-packages`` from that Python, so the versions match).

    Raises:
        ValueError: an unknown machine, a missing or malformed account or queue, a walltime not
            in HH:MM:SS, fewer than one node or an empty worker_init.
    """
    facts = MACHINES.get(machine)
    if facts is None:
        raise ValueError(f"unknown machine {machine!r}: use one of {', '.join(MACHINES)}")
    if not account or not _NAME.fullmatch(account):
        raise ValueError(
            f"account must be a PBS allocation (project) name such as MyProject, got {account!r}"
        )
    queue = facts.queue if queue is None else queue
    if not _NAME.fullmatch(queue):
        raise ValueError(f"queue must be a PBS queue name such as debug or prod, got {queue!r}")
    walltime = "01:00:00" if walltime is None else walltime
    if not _WALLTIME.fullmatch(walltime) or walltime == "00:00:00":
        raise ValueError(f"walltime must be HH:MM:SS and more than zero, such as 01:00:00, got {walltime!r}")
    nodes = 1 if nodes is None else nodes
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be a whole number of at least 1, got {nodes!r}")
    setup = facts.worker_init if worker_init is None else textwrap.dedent(worker_init).strip()
    if not setup:
        raise ValueError("worker_init is empty: leave it out for the default, or give the set-up commands")
    lines = [setup, *facts.gpu_env]
    return _template().render(
        machine=machine,
        m=facts,
        account=account,
        queue=queue,
        walltime=walltime,
        nodes=nodes,
        worker_init="\n".join(lines),
    )


def _yaml(value: Any) -> str:
    """A YAML scalar or flow list: JSON is YAML, and quoting keeps ``01:00:00`` a string (YAML 1.1
    would read it as a number of seconds) and a ``#PBS`` line from reading as a comment."""
    return json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("sciagent.compute", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["yaml"] = _yaml
    return environment.get_template("endpoint_config.yaml.j2")
