"""Hold and release a queued job: psij has no such call, so the scheduler's own commands do it.

Slurm's ``uhold`` is a user hold even when sciagent runs as an operator (``hold`` would then be an
administrator's hold, which the job's owner could not release).
"""

from __future__ import annotations

from typing import Literal

from sciagent.compute.scheduler.commands import Scheduler, run_command

_COMMANDS: dict[tuple[Scheduler, str], list[str]] = {
    ("slurm", "hold"): ["scontrol", "uhold"],
    ("slurm", "release"): ["scontrol", "release"],
    ("pbspro", "hold"): ["qhold"],
    ("pbspro", "release"): ["qrls"],
}


def set_hold(scheduler: Scheduler, native_id: str, action: Literal["hold", "release"]) -> None:
    """Hold (keep it from starting) or release job ``native_id``; ``SchedulerError`` if refused."""
    run_command([*_COMMANDS[(scheduler, action)], native_id])
