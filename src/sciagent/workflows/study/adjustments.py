"""How a simulation that blew up is changed: the documented fallback, and keeping its length fair."""

from __future__ import annotations

from sciagent.science.spec import MDSpec
from sciagent.workflows.study.schemas import Adjustment


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


def rescaled_for_timestep(spec: MDSpec, changes: dict, affordable_steps: int) -> dict | None:
    """Apply a timestep change, keeping the simulated time as far as the budget affords the extra steps.

    Where even the old step count no longer fits what is left (the fix took time to decide), the
    production is cut to fit, so the adjusted run ends inside the budget instead of being stopped at
    its wall-time limit. None when not even the equilibration and one report interval fit. The
    results table shows the ps actually simulated either way.
    """
    wanted = max(1.0, spec.timestep_fs / changes["timestep_fs"])
    factor = min(wanted, max(1.0, affordable_steps / spec.total_steps))
    interval = max(1, round(spec.report_interval * factor))
    equilibration = round(spec.equilibration_steps * factor)
    production = min(round(spec.production_steps * factor), affordable_steps - equilibration)
    production = production // interval * interval
    if production < interval:
        return None
    return {
        **changes,
        "production_steps": production,
        "equilibration_steps": equilibration,
        "report_interval": interval,
        "checkpoint_interval": max(interval, round(spec.checkpoint_interval * factor)),
    }
