"""``sciagent chem energy NAME|SMILES``: a molecule's energy with GFN2-xTB (offline), GFN1-xTB or MACE.

Exit codes follow ``sciagent.cli.common``: 2 for bad input (unknown molecule, unusable method or
device), 1 when the calculation ran and failed. An optimisation that did not converge is a result,
not a failure: it exits 0 and says ``converged: false``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from sciagent.cli.common import exits_on_error, fail, settings_for
from sciagent.console import err_console, out_console
from sciagent.progress import RunProgress
from sciagent.tools.chem import EnergyArguments
from sciagent.workflows.chem_run import run_chem_energy

chem_app = typer.Typer(
    help="Chemistry: molecule names to structures to energies (GFN2-xTB, GFN1-xTB, MACE).",
    no_args_is_help=True,
)


@chem_app.command("energy")
def energy(
    molecule: Annotated[
        str, typer.Argument(help="a molecule name (PubChem, or the offline table) or a SMILES")
    ],
    method: Annotated[str, typer.Option(help="GFN2-xTB, GFN1-xTB or mace")] = "GFN2-xTB",
    model: Annotated[str | None, typer.Option(help="for mace: a model file, mace-mp or mace-off")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or xpu (xTB: cpu only)")] = "cpu",
    optimize: Annotated[bool, typer.Option("--optimize", help="optimise the geometry first")] = False,
    optimizer: Annotated[str, typer.Option(help="BFGS or FIRE")] = "BFGS",
    fmax: Annotated[float, typer.Option(help="optimisation target: largest atomic force, eV/Å")] = 0.01,
    max_steps: Annotated[int, typer.Option("--max-steps", help="optimisation step limit")] = 200,
    vibrations: Annotated[bool, typer.Option("--vibrations", help="frequencies and thermochemistry")] = False,
    conformers: Annotated[int, typer.Option(help="RDKit conformers; the lowest MMFF one is used")] = 1,
    seed: Annotated[int, typer.Option(help="RDKit embedding seed")] = 42,
    site: Annotated[str, typer.Option(help="where to compute (see `sciagent sites list`)")] = "local",
    workspace: Annotated[
        Path | None, typer.Option(help="the workspace; the run's files go in its own directory")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Resolve MOLECULE, build 3D coordinates with RDKit and compute its energy (optimised if asked)."""
    try:
        arguments = EnergyArguments(
            molecule=molecule, method=method, model=model, device=device, optimize=optimize,
            optimizer=optimizer, fmax=fmax, max_steps=max_steps, vibrations=vibrations,
            conformers=conformers, seed=seed, site=site,
        )  # fmt: skip
    except ValidationError as exc:
        problem = exc.errors()[0]
        flag = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else "input"
        fail(f"{flag}: {problem['msg']}")
    settings = settings_for(workspace)
    progress = RunProgress(settings.workspace)
    with exits_on_error(), progress:
        done = run_chem_energy(arguments, settings, on_run=progress.follow)
    energy, run_dir = done.energy, done.run_dir
    if as_json:
        payload = {
            "run_id": done.run_id,
            "molecule": energy.molecule.model_dump(mode="json"),
            "formula": energy.formula,
            **energy.result.model_dump(mode="json", exclude={"trace", "xyz"}),
            "files": {kind: str(run_dir / path) for kind, path in energy.files.items()},
            "trace_plot": str(run_dir / energy.trace_plot) if energy.trace_plot else None,
            "report": str(done.report),
        }
        typer.echo(json.dumps(payload))
        return
    molecule_line = f"{molecule} → {energy.molecule.smiles} ({energy.molecule.source})"
    err_console.print(molecule_line, highlight=False)
    table = Table("quantity", "value", "unit", title=f"{energy.formula} {energy.result.method}")
    for row in energy.table:
        shown = f"{row.value:.8g}" if isinstance(row.value, float) else str(row.value)
        table.add_row(row.quantity, shown, row.unit)
    out_console.print(table)
    for note in energy.result.notes:
        err_console.print(f"note: {note}", highlight=False)
    out_console.print(f"run {done.run_id}: files and report.md in {run_dir}", highlight=False)
