"""Queues (partitions) and node counts, read from the scheduler: psij has no call for either.

Slurm is read with ``sinfo -h -o`` fields rather than ``sinfo --json``, whose layout changes with
each Slurm release (``openapi/v0.0.38`` in 22.05, other versions later); PBS Pro answers JSON
(``qstat -Q -f -F json``, ``pbsnodes -a -F json``).
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from sciagent.compute.scheduler.commands import Scheduler, SchedulerError, json_output, run_command
from sciagent.errors import UserError


class QueueInfo(BaseModel):
    """One queue (PBS) or partition (Slurm)."""

    name: str
    state: str = Field(description="up or down (PBS: enabled and started, or not)")
    default: bool = Field(default=False, description="where jobs go when no queue is named (Slurm)")
    max_walltime: str | None = Field(default=None, description="the longest walltime a job may ask for")
    max_nodes: int | None = None
    nodes: int | None = Field(default=None, description="nodes in the partition (Slurm)")
    jobs: int | None = Field(default=None, description="jobs in the queue (PBS)")


def list_queues(scheduler: Scheduler) -> list[QueueInfo]:
    """Every queue or partition with its state and limits."""
    if scheduler == "slurm":
        return _slurm_partitions(run_command(["sinfo", "-h", "-a", "-o", "%P|%a|%l|%D|%s"]))
    return _pbs_queues(json_output(["qstat", "-Q", "-f", "-F", "json"]))


def real_queue(scheduler: Scheduler, queue: str | None) -> str:
    """The scheduler's own name of ``queue``, or of its default queue when ``queue`` is None.

    Limits are counted per queue, so the default must not count apart from its name: Slurm marks
    its default partition in ``sinfo``, PBS Pro names it as the server's ``default_queue``.

    Raises:
        UserError: the scheduler has no queue of that name.
        SchedulerError: it names no default queue.
    """
    known = list_queues(scheduler)
    if queue is not None:
        if queue not in {info.name for info in known}:
            names = ", ".join(info.name for info in known)
            raise UserError(f"the scheduler has no queue {queue!r} (it has {names}): list_queues names them")
        return queue
    if scheduler == "slurm":
        defaults = [info.name for info in known if info.default]
    else:
        servers = json_output(["qstat", "-B", "-f", "-F", "json"]).get("Server", {})
        defaults = [server["default_queue"] for server in servers.values() if server.get("default_queue")]
    if not defaults:
        raise SchedulerError(f"the {scheduler} scheduler names no default queue: set the site's queue")
    return defaults[0]


def node_counts(scheduler: Scheduler) -> dict[str, int]:
    """How many nodes are in each state (``idle``, ``alloc``, ``down``...; PBS: ``free``, ``job-busy``...)."""
    if scheduler == "slurm":
        rows = [line.split("|") for line in run_command(["sinfo", "-h", "-N", "-o", "%N|%T"]).splitlines()]
        states = {row[0]: row[1] for row in rows if len(row) == 2}  # a node in two partitions counts once
    else:
        nodes = json_output(["pbsnodes", "-a", "-F", "json"]).get("nodes", {})
        states = {name: node.get("state", "unknown") for name, node in nodes.items()}
    return dict(Counter(states.values()))


def _slurm_partitions(out: str) -> list[QueueInfo]:
    queues: dict[str, QueueInfo] = {}
    for line in out.splitlines():
        name, state, limit, nodes, max_nodes = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        if name in queues:  # sinfo prints a partition once per group of differently configured nodes
            queues[name].nodes = (queues[name].nodes or 0) + int(nodes)
            continue
        queues[name] = QueueInfo(
            name=name,
            state=state,
            default=default,
            max_walltime=None if limit == "infinite" else limit,
            max_nodes=int(max_nodes) if max_nodes.isdigit() else None,
            nodes=int(nodes),
        )
    return list(queues.values())


def _pbs_queues(report: dict) -> list[QueueInfo]:
    queues = []
    for name, queue in report.get("Queue", {}).items():
        up = str(queue.get("enabled")) == "True" and str(queue.get("started")) == "True"
        limits = queue.get("resources_max", {})
        nodect = limits.get("nodect")
        queues.append(
            QueueInfo(
                name=name,
                state="up" if up else "down",
                max_walltime=limits.get("walltime"),
                max_nodes=int(nodect) if nodect is not None else None,
                jobs=queue.get("total_jobs"),
            )
        )
    return queues
