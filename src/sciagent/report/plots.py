"""The report's plots: backbone RMSD, Rg, temperature and potential energy against production time.

Figures are made with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, never
through ``pyplot``: no global figure registry, no backend switch, so a report rendered inside a
notebook or a GUI program leaves that program's matplotlib alone, and nothing needs a display.

RMSD and Rg come from each completed condition's ``Analysis`` series. Temperature and potential
energy come from the production rows of its ``state.csv`` (``result.files["state_csv"]``), plotted
against time since the start of production, the clock the analysis uses. A condition whose CSV is
missing or unreadable (a run directory moved away before re-rendering) is left out of those two plots
with a note saying so, instead of failing the whole report.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sciagent.atomic import write_atomic
from sciagent.report.models import ConditionRecord, StudyRecord

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_DPI = 110


@dataclass(frozen=True)
class Series:
    """One condition's line on a plot, with the x values in ns of production time."""

    label: str
    time_ns: list[float]
    values: list[float]
    color: str
    target: float | None = None  # drawn as a dashed line (the thermostat's temperature)


@dataclass(frozen=True)
class Plot:
    """A rendered plot: PNG bytes and where they were saved."""

    name: str
    title: str
    png: bytes
    path: Path

    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI, so the HTML report needs no file beside it."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class PlotSet:
    """The plots drawn, and for people, what could not be drawn and why."""

    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def make_plots(record: StudyRecord, plots_dir: Path) -> PlotSet:
    """Draw every plot that has data, save each as ``plots_dir/<name>.png`` and return them."""
    completed = [
        (condition, _COLORS[index % len(_COLORS)])
        for index, condition in enumerate(record.conditions)
        if condition.outcome is not None and condition.outcome.result.ok
    ]
    analysed = [
        (c.name, c.outcome.analysis, color) for c, color in completed if c.outcome and c.outcome.analysis
    ]
    rmsd = [Series(name, a.time_ns, a.backbone_rmsd_angstrom, color) for name, a, color in analysed]
    rg = [Series(name, a.time_ns, a.radius_of_gyration_nm, color) for name, a, color in analysed]
    temperature, energy, notes = _state_series(completed)
    specs = [
        ("backbone_rmsd", "Backbone RMSD to the starting structure", "RMSD (Å)", rmsd),
        ("radius_of_gyration", "Radius of gyration (protein, mass-weighted)", "Rg (nm)", rg),
        ("temperature", "Temperature (dashed: thermostat target)", "T (K)", temperature),
        ("potential_energy", "Potential energy", "E_pot (kJ/mol)", energy),
    ]
    plots_dir.mkdir(parents=True, exist_ok=True)
    result = PlotSet(notes=notes)
    for name, title, ylabel, series in specs:
        if not series:
            continue
        png = _render(title, ylabel, series)
        path = plots_dir / f"{name}.png"
        write_atomic(path, png)
        result.plots.append(Plot(name=name, title=title, png=png, path=path))
    return result


def _state_series(
    completed: list[tuple[ConditionRecord, str]],
) -> tuple[list[Series], list[Series], list[str]]:
    """Temperature and potential-energy series from each condition's state CSV, and what was skipped."""
    temperature, energy, notes = [], [], []
    for condition, color in completed:
        if condition.outcome is None:
            continue
        result = condition.outcome.result
        path = result.files.get("state_csv")
        if not path:
            notes.append(f"{condition.name}'s temperature and energy: the run recorded no state.csv")
            continue
        spec = result.spec
        start_ps = spec.equilibration_steps * spec.timestep_fs / 1000.0
        try:
            time_ns, temps, potentials = _read_production(Path(path), start_ps)
        except (OSError, ValueError, KeyError) as exc:
            notes.append(
                f"{condition.name}'s temperature and energy: state.csv not read ({type(exc).__name__}: {exc})"
            )
            continue
        target = condition.outcome.analysis.target_temperature_k if condition.outcome.analysis else None
        temperature.append(Series(condition.name, time_ns, temps, color, target or spec.temperature_k))
        energy.append(Series(condition.name, time_ns, potentials, color))
    return temperature, energy, notes


def _read_production(path: Path, start_ps: float) -> tuple[list[float], list[float], list[float]]:
    """Production rows' time (ns since production began), temperature and potential energy."""
    time_ns, temps, potentials = [], [], []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["phase"] != "production":
                continue
            values = [float(row["time_ps"]), float(row["temperature_k"]), float(row["potential_kj_mol"])]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"a non-finite value at step {row['step']}")
            time_ns.append((values[0] - start_ps) / 1000.0)
            temps.append(values[1])
            potentials.append(values[2])
    if not time_ns:
        raise ValueError("no production rows")
    return time_ns, temps, potentials


def _render(title: str, ylabel: str, series: list[Series]) -> bytes:
    """One line per condition, in ps when every run is shorter than 1 ns, as PNG bytes."""
    longest = max(max(s.time_ns, default=0.0) for s in series)
    scale, unit = (1000.0, "ps") if longest < 1.0 else (1.0, "ns")
    figure = Figure(figsize=(7.0, 3.6), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    for s in series:
        marker = "o" if len(s.values) <= 60 else None
        axes.plot([t * scale for t in s.time_ns], s.values, color=s.color, label=s.label, marker=marker, ms=3)
        if s.target is not None:
            axes.axhline(s.target, color=s.color, linestyle="--", linewidth=1)
    axes.set_title(title, fontsize=11)
    axes.set_xlabel(f"production time ({unit})")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
