"""Analysis tools: one metric of a finished simulation, by its task id, computed where its files are.

Each tool is a thin adapter over ``science.trajectory_metrics``: the metric function is sent to the
executor of the site the simulation ran on (the trajectory stays there), and its pydantic result
comes back. ``compare_runs`` puts the summaries of several runs side by side in one table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sciagent.science import trajectory_metrics as metrics
from sciagent.science.trajectory_metrics import PerResidue, SecondaryStructureTimeline, Series
from sciagent.tools.registry import ToolArgumentsError, ToolContext, define_tool
from sciagent.tools.tasks import BoardTask, TaskArguments, board

Metric = Literal["rmsd", "radius_of_gyration", "rmsf", "sasa", "hydrogen_bonds", "helix_fraction"]


class RmsdArguments(TaskArguments):
    selection: metrics.RmsdSelection = Field(default="backbone", description="backbone, ca or heavy atoms")


class SeriesList(BaseModel):
    series: list[Series]


class CompareArguments(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"task_ids": ["sim-1", "sim-2"], "metrics": ["rmsd"]}]},
    )

    task_ids: list[str] = Field(min_length=1, max_length=20, description="finished simulations to compare")
    metrics: list[Metric] = Field(default=["rmsd", "radius_of_gyration"], min_length=1)


class ComparisonRow(BaseModel):
    task_id: str
    temperature_k: float | None
    pressure_bar: float | None
    ph: float | None
    values: dict[str, float] = Field(description="metric -> its production mean (RMSF: the maximum)")


class Comparison(BaseModel):
    metrics: list[str]
    units: dict[str, str]
    rows: list[ComparisonRow]


def finished_run(context: ToolContext, task_id: str) -> BoardTask:
    task = board(context).get(task_id)
    if task.workdir is None:
        raise ToolArgumentsError(f"task {task_id} is not a simulation")
    board(context).value(task)  # raises for a task still running, failed or cancelled
    return task


def on_site(context: ToolContext, task_id: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(workdir, *args)`` on the site the finished simulation ``task_id`` ran on."""
    task = finished_run(context, task_id)
    return board(context).run_where(task, fn, str(task.workdir), *args)


def rmsd(arguments: RmsdArguments, context: ToolContext) -> Series:
    """RMSD (Å) of a finished simulation's frames to its starting structure, after superposition."""
    return on_site(context, arguments.task_id, metrics.rmsd, arguments.selection)


def rmsf(arguments: TaskArguments, context: ToolContext) -> PerResidue:
    """Per-residue CA fluctuation (RMSF, Å) over a finished simulation's production."""
    return on_site(context, arguments.task_id, metrics.rmsf)


def radius_of_gyration(arguments: TaskArguments, context: ToolContext) -> Series:
    """Radius of gyration (nm, mass-weighted) per frame of a finished simulation."""
    return on_site(context, arguments.task_id, metrics.radius_of_gyration)


def secondary_structure(arguments: TaskArguments, context: ToolContext) -> SecondaryStructureTimeline:
    """DSSP secondary structure of a finished simulation: helix/strand/coil per frame, first vs last frame."""
    return on_site(context, arguments.task_id, metrics.secondary_structure)


def sasa(arguments: TaskArguments, context: ToolContext) -> Series:
    """Solvent-accessible surface area (nm², Shrake-Rupley) per frame of a finished simulation."""
    return on_site(context, arguments.task_id, metrics.sasa)


def hydrogen_bonds(arguments: TaskArguments, context: ToolContext) -> Series:
    """Protein hydrogen bonds per frame (Wernet-Nilsson) of a finished simulation."""
    return on_site(context, arguments.task_id, metrics.hydrogen_bonds)


def moments_of_inertia(arguments: TaskArguments, context: ToolContext) -> SeriesList:
    """The three principal moments of inertia (amu·nm²) per frame of a finished simulation."""
    return SeriesList(series=on_site(context, arguments.task_id, metrics.moments_of_inertia))


def energy_timeseries(arguments: TaskArguments, context: ToolContext) -> SeriesList:
    """Potential and total energy (kJ/mol) and temperature (K) over a finished simulation's production."""
    return SeriesList(series=on_site(context, arguments.task_id, metrics.energy_timeseries))


def compare_runs(arguments: CompareArguments, context: ToolContext) -> Comparison:
    """One table of several finished simulations: each metric's production mean (RMSF: its maximum;
    helix_fraction: the mean over frames), with each run's temperature, pressure and pH."""
    rows = []
    for task_id in arguments.task_ids:
        task = finished_run(context, task_id)
        values = on_site(context, task_id, metrics.summaries, list(arguments.metrics))
        spec = task.spec
        explicit = spec is not None and spec.solvent == "explicit"
        rows.append(
            ComparisonRow(
                task_id=task_id,
                temperature_k=spec.temperature_k if spec else None,
                pressure_bar=spec.pressure_bar if explicit and spec else None,
                ph=spec.ph if spec else None,
                values=values,
            )
        )
    units = {metric: metrics.SUMMARY_UNITS[metric] for metric in arguments.metrics}
    return Comparison(metrics=list(arguments.metrics), units=units, rows=rows)


ANALYSIS_TOOLS = [
    define_tool(rmsd, effects={"reads", "computes"}),
    define_tool(rmsf, effects={"reads", "computes"}),
    define_tool(radius_of_gyration, effects={"reads", "computes"}),
    define_tool(secondary_structure, effects={"reads", "computes"}),
    define_tool(sasa, effects={"reads", "computes"}),
    define_tool(hydrogen_bonds, effects={"reads", "computes"}),
    define_tool(moments_of_inertia, effects={"reads", "computes"}),
    define_tool(energy_timeseries, effects={"reads", "computes"}),
    define_tool(compare_runs, effects={"reads", "computes"}, cost="minutes"),
]
