"""What one batch job's devices did, measured by the supervisor, for the report's allocation table.

The clock marks the moments that divide a job: the start, the model passing its health gate, the stop
request (walltime or signal) and the end. Simulating time is not estimated: each simulation appends its
own segments (``science/segments.py``: steps, seconds, the job that ran them) to its work directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sciagent.report.models import JobAllocation
from sciagent.science.segments import SEGMENTS_FILE, read_segments


@dataclass
class JobClock:
    """Monotonic marks of one job; a mark not reached stays None."""

    started: float = field(default_factory=time.monotonic)
    model_ready: float | None = None
    stop_requested: float | None = None
    ended: float | None = None

    def mark_stop(self) -> None:
        """The first stop request counts (a signal after the walltime watcher changes nothing)."""
        if self.stop_requested is None:
            self.stop_requested = time.monotonic()


@dataclass(frozen=True)
class Segment:
    """One simulation call's steps in one job: ``[from_step, to_step)``."""

    workdir: Path
    from_step: int
    to_step: int
    job_id: str | None
    wall_s: float


def segments(run_dir: Path) -> list[Segment]:
    """Every simulation segment recorded under ``run_dir``, in call order per work directory."""
    return [
        Segment(path.parent, row["from_step"], row["to_step"], row.get("job_id"), row["wall_s"])
        for path in sorted(run_dir.rglob(SEGMENTS_FILE))
        for row in read_segments(path.parent)
    ]


def job_allocation(
    *,
    index: int,
    job_id: str,
    model_devices: int,
    simulation_devices: int,
    clock: JobClock,
    simulating_s: float,
) -> JobAllocation:
    """Split ``devices x elapsed`` into the table's categories.

    The model's devices load (start → gate passed) and then serve; the simulations' devices simulate for
    the seconds their segments took and are idle for the rest; from the stop request to the end every
    device is the continuation's overhead (stopping, checkpointing, submitting the next job).
    """
    ended = clock.ended if clock.ended is not None else time.monotonic()
    working_end = clock.stop_requested if clock.stop_requested is not None else ended
    working_s = max(0.0, working_end - clock.started)
    ready_s = min(working_s, (clock.model_ready or clock.started) - clock.started) if model_devices else 0.0
    simulating = min(simulating_s, simulation_devices * working_s)
    return JobAllocation(
        index=index,
        job_id=job_id,
        devices=model_devices + simulation_devices,
        elapsed_s=ended - clock.started,
        model_starting=model_devices * ready_s,
        model_serving=model_devices * (working_s - ready_s),
        simulating=simulating,
        idle=simulation_devices * working_s - simulating,
        continuation=(model_devices + simulation_devices) * (ended - working_end),
    )
