"""Rich tables that summarise results for people; the CLI prints them."""

from __future__ import annotations

from rich.table import Table

from sciagent.science.simulate import SimulationOutcome
from sciagent.science.structures import BUNDLED_STRUCTURES, PROTEIN_PDB_IDS


def structures_tables() -> list[Table]:
    """The bundled structures, and the protein names that map to PDB ids."""
    bundled = Table(title="Bundled structures (no network needed)")
    bundled.add_column("name")
    bundled.add_column("description")
    for name, description in BUNDLED_STRUCTURES.items():
        bundled.add_row(name, description)
    names = Table(title="Protein names (downloaded from the PDB once, then cached)")
    names.add_column("name")
    names.add_column("PDB id")
    for name, pdb_id in sorted(PROTEIN_PDB_IDS.items()):
        names.add_row(name, pdb_id)
    return [bundled, names]


def simulation_table(outcome: SimulationOutcome) -> Table:
    """One simulation's result and analysis, as label/value rows."""
    result, analysis = outcome.result, outcome.analysis
    table = Table(title=f"Simulation of {result.spec.structure}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    status = result.status + (f" ({result.failure_class})" if result.failure_class else "")
    rows = [
        ("status", status),
        ("message", result.message),
        ("steps", f"{result.steps_completed} of {result.spec.total_steps}"),
        ("production", f"{result.simulated_ns:.4g} ns at {result.spec.temperature_k:g} K"),
        ("speed", f"{result.ns_per_day:.3g} ns/day" if result.ns_per_day else "not measured"),
        ("platform", f"{result.platform} ({result.precision} precision), OpenMM {result.openmm_version}"),
    ]
    rows += [("choice", choice) for choice in result.choices]
    if result.preparation:
        rows.append(("preparation", result.preparation.summary()))
    if analysis:
        ss = analysis.secondary_structure
        retention = f"{ss.retention:.2f}" if ss.retention is not None else "n/a (no helix or strand)"
        rows += [
            ("backbone RMSD", f"{analysis.final_window_rmsd_mean_angstrom:.2f} Å (final-window mean)"),
            ("radius of gyration", f"{analysis.rg_mean_nm:.3f} nm (mean)"),
            ("max Cα RMSF", f"{analysis.max_rmsf_angstrom:.2f} Å"),
            ("secondary structure kept", retention),
            ("potential energy drift", f"{analysis.potential_energy_kj_mol.drift_per_ns:.4g} kJ/mol/ns"),
            ("temperature", f"{analysis.temperature_k.mean:.1f} ± {analysis.temperature_k.std:.1f} K"),
            ("assessment", f"{analysis.assessment.verdict}: " + "; ".join(analysis.assessment.reasons)),
        ]
    elif outcome.analysis_error:
        rows.append(("analysis", f"failed: {outcome.analysis_error}"))
    rows.append(("output", result.workdir))
    for label, value in rows:
        table.add_row(label, value)
    return table
