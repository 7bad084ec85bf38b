"""The retry policy's use of the stability verdict: which completed runs are worth a longer production.

The assessments are made by the analysis's own ``assess_stability``, so the policy is tested against
the failures the real rule reports, not against labels written here.
"""

from __future__ import annotations

import pytest

from sciagent.science.analysis import Analysis, SecondaryStructure, SeriesStats
from sciagent.science.md import MDResult
from sciagent.science.simulate import SimulationOutcome
from sciagent.science.spec import MDSpec
from sciagent.science.stability import RmsdDrift, assess_stability
from sciagent.workflows.study.policy import Action, needs_longer_production, next_action

WINDOW = {"window_ps": 25.0, "blocks": 5, "lookahead_ps": 25.0}
SETTLED = RmsdDrift(
    **WINDOW,
    change_angstrom=0.1,
    standard_error_angstrom=0.05,
    final_block_mean_angstrom=1.5,
    projected_angstrom=1.625,
)
DRIFTING = RmsdDrift(
    **WINDOW,
    change_angstrom=1.2,
    standard_error_angstrom=0.1,
    final_block_mean_angstrom=2.5,
    projected_angstrom=4.0,
)
STABLE_RUN = {
    "frames": 100,
    "production_ps": 50.0,
    "final_window_rmsd_mean_angstrom": 1.5,
    "rmsd_drift": SETTLED,
    "ss_retention": 0.9,
    "mean_temperature_k": 300.0,
    "target_temperature_k": 300.0,
}


def completed(**change: object) -> SimulationOutcome:
    """A completed run whose analysis holds the real assessment of ``STABLE_RUN`` changed by ``change``."""
    measured = {**STABLE_RUN, **change}
    assessment = assess_stability(**measured)  # type: ignore[arg-type]
    flat = SeriesStats(mean=0.0, std=0.0, drift_per_ns=0.0)
    analysis = Analysis(
        frames=measured["frames"],
        production_ps=measured["production_ps"],
        time_ns=[0.025, 0.05],
        backbone_rmsd_angstrom=[1.5, 1.5],
        radius_of_gyration_nm=[1.0, 1.0],
        ca_rmsf_angstrom=[0.5],
        residue_labels=["LEU1"],
        final_window_rmsd_mean_angstrom=measured["final_window_rmsd_mean_angstrom"],
        rmsd_drift=measured["rmsd_drift"],
        rg_mean_nm=1.0,
        max_rmsf_angstrom=0.5,
        secondary_structure=SecondaryStructure(first={}, last={}, retention=measured["ss_retention"]),
        potential_energy_kj_mol=flat,
        total_energy_kj_mol=flat,
        temperature_k=SeriesStats(mean=measured["mean_temperature_k"], std=10.0, drift_per_ns=0.0),
        target_temperature_k=measured["target_temperature_k"],
        assessment=assessment,
        thresholds={},
    )
    spec = MDSpec(structure="villin")
    result = MDResult(status="completed", message="completed", spec=spec, workdir="/tmp")
    return SimulationOutcome(result=result, analysis=analysis)


@pytest.mark.parametrize(
    ("change", "verdict", "action"),
    [
        ({}, "stable", Action.ACCEPT),
        ({"rmsd_drift": DRIFTING}, "inconclusive", Action.EXTEND),
        ({"production_ps": 20.0}, "inconclusive", Action.EXTEND),  # only too short: more production
        ({"frames": 5}, "inconclusive", Action.EXTEND),
        ({"rmsd_drift": None}, "inconclusive", Action.EXTEND),  # too few frames for the drift test
        # The thermostat, not the length, is at fault: a longer run is not the remedy.
        ({"mean_temperature_k": 330.0}, "inconclusive", Action.ACCEPT),
        ({"mean_temperature_k": 330.0, "rmsd_drift": DRIFTING}, "inconclusive", Action.EXTEND),
        # The fold is lost: extending a run that is also drifting or short will not bring it back.
        ({"final_window_rmsd_mean_angstrom": 5.0, "rmsd_drift": DRIFTING}, "unstable", Action.ACCEPT),
        ({"ss_retention": 0.3, "production_ps": 20.0}, "unstable", Action.ACCEPT),
    ],
)
def test_a_completed_run_is_extended_only_when_more_production_can_decide_it(
    change: dict[str, object], verdict: str, action: Action
) -> None:
    outcome = completed(**change)

    assert outcome.analysis is not None and outcome.analysis.assessment.verdict == verdict
    assert next_action(outcome) == action
    assert needs_longer_production(outcome) == (action == Action.EXTEND)


def test_a_completed_run_without_an_analysis_is_accepted_as_it_is() -> None:
    outcome = completed().model_copy(update={"analysis": None, "analysis_error": "ValueError: no frames"})

    assert not needs_longer_production(outcome)
    assert next_action(outcome) == Action.ACCEPT
