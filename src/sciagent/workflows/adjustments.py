"""How a simulation that blew up is changed: the documented fallback, and keeping its length fair."""

from __future__ import annotations

from sciagent.science.spec import MDSpec
from sciagent.workflows.study_schemas import Adjustment


def fallback_adjustment(spec: MDSpec) -> Adjustment:
    """The documented fix when the model gives none: halve the timestep, constrain H bonds, minimise."""
    halved = max(0.5, spec.timestep_fs / 2)
    timestep = 0.5 if halved < 1 else (1 if halved < 2 else 2)
    return Adjustment(
        timestep_fs=timestep,
        constraints="hbonds",
        minimize=True,
        rationale="fallback: halve the timestep, constrain bonds to hydrogen, minimise first",
    )


def rescaled_for_timestep(spec: MDSpec, changes: dict, affordable_steps: int) -> dict:
    """Apply a timestep change, keeping the simulated time if the budget affords the extra steps.

    Otherwise the step count stays (the run costs what it did) and the run simulates less time; the
    results table shows the ns actually simulated either way.
    """
    factor = max(1.0, spec.timestep_fs / changes["timestep_fs"])
    if spec.total_steps * factor > affordable_steps:
        factor = 1.0
    interval = max(1, round(spec.report_interval * factor))
    return {
        **changes,
        "production_steps": max(interval, round(spec.production_steps * factor) // interval * interval),
        "equilibration_steps": round(spec.equilibration_steps * factor),
        "report_interval": interval,
        "checkpoint_interval": max(interval, round(spec.checkpoint_interval * factor)),
    }
