"""``sciagent chem energy`` as a journal run: one ``chem_energy`` step, its files as artifacts, and a
report (the energies table and the optimisation trace) beside them.

The calculation is the agent tool's own (``tools.chem.chem_energy``), so a command-line energy and one a
model asked for are made, filed and tabulated the same way. A run that fails is journalled as failed
with the reason before the error goes on to the command.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.agent.ownership import owning
from sciagent.agent.session import CHEM_KIND
from sciagent.config import Settings
from sciagent.redaction import scrub
from sciagent.tools.chem import ChemEnergy, EnergyArguments, chem_energy
from sciagent.tools.registry import ToolContext

REPORT = "report.md"


@dataclass(frozen=True)
class ChemRun:
    run_id: str
    run_dir: Path
    energy: ChemEnergy
    report: Path


def run_chem_energy(
    arguments: EnergyArguments, settings: Settings, on_run: Callable[[str], None] | None = None
) -> ChemRun:
    """Compute one energy as a journal run of kind ``chem`` under ``settings.workspace``; ``on_run`` is
    told the run's id once it exists (to watch it).

    Raises:
        SciagentError: the molecule, method or site cannot be used, or the calculation failed (the run
            is journalled as failed first).
    """
    asked = arguments.model_dump(mode="json")
    with Journal.in_workspace(settings.workspace) as journal, ExitStack() as owned:
        run_id = journal.create_run(f"chem energy {arguments.molecule}", {"kind": CHEM_KIND, **asked})
        owned.enter_context(owning(journal, run_id, what="chem run"))
        if on_run is not None:
            on_run(run_id)
        run_dir = Path(settings.workspace).resolve() / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        step = journal.start_step(run_id, "chem_energy", arguments.molecule, asked)
        try:
            energy = chem_energy(arguments, ToolContext(run_dir, settings=settings))
        except BaseException as exc:  # journalled whatever it is (a bug, ^C), then passed on
            reason = str(exc) or type(exc).__name__
            journal.finish_step(step, "failed", reason)
            journal.set_run_status(
                run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", reason
            )
            raise
        journal.finish_step(step, "completed", _summary(energy), energy.model_dump(mode="json"))
        for kind, path in energy.files.items():
            journal.add_artifact(run_id, kind, str(run_dir / path))
        if energy.trace_plot:
            journal.add_artifact(run_id, "plot", str(run_dir / energy.trace_plot))
        report = run_dir / REPORT
        report.write_text(scrub(_report(arguments, energy)))
        journal.add_artifact(run_id, "report", str(report))
        journal.set_run_status(run_id, "completed")
    return ChemRun(run_id, run_dir, energy, report)


def _summary(energy: ChemEnergy) -> str:
    result = energy.result
    line = f"{energy.formula} {result.method}: {result.energy_hartree:.6f} Eh"
    if result.optimized:
        line += f", {'converged' if result.converged else 'NOT converged'} in {result.steps} steps"
    return line


def _report(arguments: EnergyArguments, energy: ChemEnergy) -> str:
    """Markdown: what was asked, where the molecule came from, the energies table and the trace."""
    lines = [
        f"# {arguments.molecule}: {energy.formula}, {energy.result.method}",
        "",
        f"- SMILES `{energy.molecule.smiles}` from {energy.molecule.source}",
        f"- geometry: {energy.geometry_source}",
        "",
        "| quantity | value | unit |",
        "|---|---|---|",
        *(f"| {row.quantity} | {_shown(row.value)} | {row.unit} |" for row in energy.table),
    ]
    lines += [f"\n- note: {note}" for note in energy.result.notes]
    if energy.trace_plot:
        lines += ["", f"![optimisation trace]({energy.trace_plot})"]
    return "\n".join(lines) + "\n"


def _shown(value: object) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)
