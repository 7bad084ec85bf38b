"""The ``plot`` tool: one metric of several finished simulations overlaid, as a PNG in the session.

Drawn with ``matplotlib.figure.Figure`` and the Agg canvas (never ``pyplot``), as the report's
plots are, so it needs no display and leaves a host program's matplotlib alone. The values come
from the same kernels as the analysis tools, computed on the site where each trajectory is.
"""

from __future__ import annotations

import re
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field

from sciagent.science import trajectory_metrics as metrics
from sciagent.science.spec import MDSpec
from sciagent.tools.analysis import finished_run, on_site
from sciagent.tools.registry import ToolContext, define_tool

PlottedMetric = Literal[
    "rmsd",
    "radius_of_gyration",
    "sasa",
    "hydrogen_bonds",
    "helix_fraction",
    "potential_energy",
    "temperature",
]
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class PlotArguments(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"task_ids": ["sim-1", "sim-2"], "metric": "rmsd"}]},
    )

    task_ids: list[str] = Field(min_length=1, max_length=8, description="finished simulations: a line each")
    metric: PlottedMetric = Field(description="what to plot against production time")
    filename: str | None = Field(default=None, description="PNG name in the session's plots/ directory")


class PlottedLine(BaseModel):
    task_id: str
    label: str
    points: int
    mean: float


class Plot(BaseModel):
    path: str = Field(description="the PNG, relative to the session directory")
    metric: str
    unit: str
    lines: list[PlottedLine]


def _series(context: ToolContext, task_id: str, metric: PlottedMetric) -> metrics.Series:
    if metric == "helix_fraction":
        timeline = on_site(context, task_id, metrics.secondary_structure)
        return metrics.series_of("helix fraction", "fraction", timeline.time_ps, timeline.helix)
    if metric in ("potential_energy", "temperature"):
        energies = on_site(context, task_id, metrics.energy_timeseries)
        return energies[0] if metric == "potential_energy" else energies[2]
    kernels = {
        "rmsd": metrics.rmsd,
        "radius_of_gyration": metrics.radius_of_gyration,
        "sasa": metrics.sasa,
        "hydrogen_bonds": metrics.hydrogen_bonds,
    }
    return on_site(context, task_id, kernels[metric])


def plot(arguments: PlotArguments, context: ToolContext) -> Plot:
    """Plot one metric of finished simulations against production time, overlaid in one PNG, each line
    labelled with its task id and conditions (temperature, pressure, pH)."""
    figure = Figure(figsize=(7.0, 4.2), dpi=110)
    axes = figure.add_subplot()
    lines, unit = [], ""
    for number, task_id in enumerate(arguments.task_ids):
        task = finished_run(context, task_id)
        series = _series(context, task_id, arguments.metric)
        unit = series.unit
        label = _label(task_id, task.spec)
        axes.plot(series.time_ps, series.values, color=_COLORS[number % len(_COLORS)], label=label, lw=1.4)
        lines.append(PlottedLine(task_id=task_id, label=label, points=len(series.values), mean=series.mean))
    title = arguments.metric.replace("_", " ")
    axes.set_xlabel("production time (ps)")
    axes.set_ylabel(f"{title} ({unit})")
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    default = f"{arguments.metric}-{'-'.join(arguments.task_ids)}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", arguments.filename or default).strip(".")
    relative = f"plots/{name.removesuffix('.png')}.png"
    target = context.session_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(target))
    return Plot(path=relative, metric=arguments.metric, unit=unit, lines=lines)


def _label(task_id: str, spec: MDSpec | None) -> str:
    if spec is None:
        return task_id
    parts = [f"{spec.temperature_k:g} K"]
    if spec.solvent == "explicit":
        parts.append(f"{spec.pressure_bar:g} bar")
    parts.append(f"pH {spec.ph:g}")
    return f"{task_id} ({', '.join(parts)})"


PLOT_TOOLS = [define_tool(plot, effects={"computes", "writes"}, cost="minutes")]
