"""Chemistry tools: a molecule (name or SMILES) to its GFN2-xTB / GFN1-xTB / MACE energy, optionally
optimised, with vibrations and thermochemistry.

A thin adapter over ``science.chem``: the name is resolved and the structure built here, then
``calculate`` (one picklable call) goes to a site. On a ``local`` site an xTB job runs in this process;
MACE always runs in a worker process, because importing mace-torch makes later ``torch.load`` calls in
its process unpickle freely. Files (structures, the full result, the optimisation-trace plot) go to
``chem/<molecule>-<method>-<opt|sp>/`` of the session directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field

from sciagent.compute.sites import SiteConfig, make_executor, resolve_site
from sciagent.errors import SpecError
from sciagent.science.chem.calculate import ChemResult, ChemTask, TraceStep, calculate
from sciagent.science.chem.names import ResolvedMolecule, resolve
from sciagent.science.chem.structures import MoleculeStructure, smiles_to_structure
from sciagent.tools.registry import ToolContext, define_tool


class EnergyArguments(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"molecule": "aspirin", "method": "GFN2-xTB", "optimize": True}]},
    )

    molecule: str = Field(min_length=1, max_length=500, description="a molecule name (PubChem) or a SMILES")
    method: Literal["GFN2-xTB", "GFN1-xTB", "mace"] = "GFN2-xTB"
    model: str | None = Field(default=None, description="for mace: a model file path, mace-mp or mace-off")
    device: Literal["cpu", "cuda", "xpu"] = "cpu"
    optimize: bool = Field(default=False, description="optimise the geometry before the final energy")
    optimizer: Literal["BFGS", "FIRE"] = "BFGS"
    fmax: float = Field(default=0.01, gt=0, le=10, description="optimisation target: largest force, eV/Å")
    max_steps: int = Field(default=200, ge=1, le=10000)
    vibrations: bool = Field(default=False, description="harmonic frequencies and thermochemistry")
    conformers: int = Field(
        default=1, ge=1, le=100, description="RDKit conformers; the lowest MMFF one is used"
    )
    seed: int = Field(default=42, ge=0)
    site: str = Field(default="local", description="where to compute (a site from `sciagent sites`)")

    def task(self) -> ChemTask:
        """The calculation part of the arguments, as the science layer takes it."""
        return ChemTask.model_validate(self.model_dump(include=set(ChemTask.model_fields)))


class TableRow(BaseModel):
    quantity: str
    value: int | float | str | None
    unit: str


class ChemEnergy(BaseModel):
    """What a model and the report see: the numbers, how they were made, and where the files are."""

    molecule: ResolvedMolecule
    formula: str
    geometry_source: str
    result: ChemResult = Field(description="the full result (its trace and xyz are in the files)")
    table: list[TableRow]
    files: dict[str, str] = Field(description="kind -> path relative to the session directory")
    trace_plot: str | None = None


def run_energy(
    arguments: EnergyArguments, sites: Mapping[str, SiteConfig], run_dir: Path
) -> tuple[ResolvedMolecule, MoleculeStructure, ChemResult]:
    """Resolve the molecule and build its structure here (login nodes reach PubChem, compute nodes
    often cannot; bad input fails fast), then ``calculate`` where ``arguments.site`` says: in this
    process for xTB on a local site, else on the site's executor (a fresh worker process locally)."""
    site = resolve_site(arguments.site, sites)
    task = arguments.task()
    if task.method == "mace" and task.model is None:
        raise SpecError("--method mace needs --model: a MACE model file, mace-mp or mace-off")
    molecule = resolve(arguments.molecule)
    structure = smiles_to_structure(molecule.smiles, arguments.conformers, arguments.seed)
    if site.kind == "local" and task.method != "mace":
        return molecule, structure, calculate(structure, task)
    with make_executor(arguments.site, sites, run_dir=run_dir / "executor") as executor:
        return molecule, structure, executor.result(executor.submit(calculate, structure, task))


def energy_table(result: ChemResult) -> list[TableRow]:
    """The energies table of the journal and the report: one row per number, with its unit."""
    rows = [
        TableRow(quantity="energy", value=result.energy_hartree, unit="Eh"),
        TableRow(quantity="energy", value=result.energy_ev, unit="eV"),
        TableRow(quantity="final fmax", value=result.final_fmax_ev_per_a, unit="eV/Å"),
    ]
    if result.optimized:
        rows += [
            TableRow(quantity="converged", value=str(result.converged).lower(), unit=""),
            TableRow(quantity="optimisation steps", value=result.steps, unit=""),
        ]
    if result.dipole_debye is not None:
        rows.append(TableRow(quantity="dipole", value=result.dipole_debye, unit="D"))
    if result.frequencies_cm1:
        rows.append(TableRow(quantity="lowest frequency", value=result.frequencies_cm1[0], unit="cm^-1"))
    if result.thermochemistry is not None:
        thermo = result.thermochemistry
        rows += [
            TableRow(quantity="zero-point energy", value=thermo.zero_point_energy_ev, unit="eV"),
            TableRow(
                quantity=f"Gibbs energy ({thermo.temperature_k:g} K)", value=thermo.gibbs_energy_ev, unit="eV"
            ),
        ]
    return rows


def plot_trace(trace: list[TraceStep], title: str, target: Path) -> None:
    """Energy and largest force against optimisation step, as one PNG."""
    figure = Figure(figsize=(7.0, 3.6), dpi=110, layout="constrained")
    energy_axes = figure.add_subplot()
    steps = [step.step for step in trace]
    energy_axes.plot(steps, [step.energy_ev for step in trace], "o-", color="#1f77b4", ms=3, label="energy")
    energy_axes.set_xlabel("optimisation step")
    energy_axes.set_ylabel("energy (eV)", color="#1f77b4")
    force_axes = energy_axes.twinx()
    force_axes.semilogy(steps, [step.fmax_ev_per_a for step in trace], "s-", color="#d62728", ms=3)
    force_axes.set_ylabel("largest force (eV/Å)", color="#d62728")
    energy_axes.set_title(title, fontsize=11)
    energy_axes.grid(True, alpha=0.3)
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(target))


def save_outputs(
    session_dir: Path, structure: MoleculeStructure, result: ChemResult, label: str
) -> tuple[dict[str, str], str | None]:
    """Write the input structure (XYZ, SDF), the final XYZ, the full result and the trace plot."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[:40] or "molecule"
    stem = f"{slug}-{result.method}-{'opt' if result.optimized else 'sp'}"
    base, number = Path("chem") / stem, 1
    while (session_dir / base).exists():  # a later call never overwrites an earlier one's files
        number += 1
        base = Path("chem") / f"{stem}-{number}"
    (session_dir / base).mkdir(parents=True)
    files = {
        "input_xyz": base / "input.xyz",
        "input_sdf": base / "input.sdf",
        "final_xyz": base / "final.xyz",
        "result_json": base / "result.json",
    }
    (session_dir / files["input_xyz"]).write_text(structure.xyz)
    (session_dir / files["input_sdf"]).write_text(structure.sdf)
    (session_dir / files["final_xyz"]).write_text(result.xyz)
    (session_dir / files["result_json"]).write_text(result.model_dump_json(indent=1))
    plot = None
    if result.trace:
        plot = base / "optimisation-trace.png"
        verdict = "converged" if result.converged else "NOT converged"
        plot_trace(
            result.trace, f"{label}: {result.method} {result.optimizer} ({verdict})", session_dir / plot
        )
    return {kind: str(path) for kind, path in files.items()}, (str(plot) if plot else None)


def chem_energy(arguments: EnergyArguments, context: ToolContext) -> ChemEnergy:
    """Energy of a molecule given by name or SMILES: RDKit builds 3D coordinates, then GFN2-xTB
    (default, offline), GFN1-xTB or a MACE model computes the energy, after a geometry optimisation if
    `optimize` (the result says whether it converged and the final largest force) and with harmonic
    frequencies and thermochemistry if `vibrations`."""
    sites = context.settings.sites if context.settings is not None else {}
    molecule, structure, result = run_energy(arguments, sites, context.session_dir)
    files, plot = save_outputs(context.session_dir, structure, result, arguments.molecule)
    brief = result.model_copy(update={"trace": [], "xyz": f"see {files['final_xyz']}"})
    return ChemEnergy(
        molecule=molecule,
        formula=structure.formula,
        geometry_source=f"RDKit ETKDGv3 ({structure.conformers_embedded} conformer(s)), {structure.cleanup}",
        result=brief,
        table=energy_table(result),
        files=files,
        trace_plot=plot,
    )


CHEM_TOOLS = [define_tool(
        chem_energy, effects={"computes", "writes", "reaches_outside"}, cost="minutes", runs_on_site=True
    )]
