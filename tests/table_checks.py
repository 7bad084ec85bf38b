"""One check shared by the report and workflow tests: a results-table row holds the analysis exactly."""

from __future__ import annotations

from typing import Any

from sciagent.science.analysis import Analysis


def assert_row_is_the_analysis(row: dict[str, Any], analysis: Analysis) -> None:
    """Each analysis number of ``row`` is the value the analysis computed, not a rounded copy."""
    assert row["final_window_rmsd_mean_angstrom"] == analysis.final_window_rmsd_mean_angstrom
    assert row["rg_mean_nm"] == analysis.rg_mean_nm
    assert row["max_rmsf_angstrom"] == analysis.max_rmsf_angstrom
    assert row["ss_retention"] == analysis.secondary_structure.retention
    assert row["potential_energy_drift_kj_mol_per_ns"] == analysis.potential_energy_kj_mol.drift_per_ns
    assert row["mean_temperature_k"] == analysis.temperature_k.mean
    assert row["verdict"] == analysis.assessment.verdict
