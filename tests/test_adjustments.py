"""How a blown-up run is resized for its fix: the simulated time is kept where the budget allows,
and the run is cut to fit what is left rather than left to hit its wall-time limit."""

from __future__ import annotations

from sciagent.science.spec import MDSpec
from sciagent.workflows.study.adjustments import rescaled_for_timestep

HALVED = {"timestep_fs": 2.0, "constraints": "hbonds", "minimize": True}


def _spec() -> MDSpec:
    return MDSpec(
        structure="villin", timestep_fs=4.0, equilibration_steps=1000, production_steps=10000,
        report_interval=100, checkpoint_interval=1000,
    )  # fmt: skip


def test_the_simulated_time_is_kept_when_the_budget_affords_twice_the_steps() -> None:
    update = rescaled_for_timestep(_spec(), HALVED, affordable_steps=50_000)
    assert update is not None
    assert (update["equilibration_steps"], update["production_steps"]) == (2000, 20000)
    assert (update["report_interval"], update["checkpoint_interval"]) == (200, 2000)
    assert update["timestep_fs"] == 2.0


def test_the_time_kept_is_what_the_budget_affords_in_between() -> None:
    update = rescaled_for_timestep(_spec(), HALVED, affordable_steps=16_500)  # 1.5 x the old steps
    assert update is not None
    assert update["equilibration_steps"] == 1500 and update["report_interval"] == 150
    assert update["equilibration_steps"] + update["production_steps"] <= 16_500


def test_a_run_that_no_longer_fits_is_cut_to_what_is_left() -> None:
    update = rescaled_for_timestep(_spec(), HALVED, affordable_steps=6_050)
    assert update is not None
    assert update["equilibration_steps"] == 1000  # equilibration is kept whole
    assert update["production_steps"] == 5000  # whole report intervals only
    assert update["production_steps"] % update["report_interval"] == 0


def test_nothing_is_proposed_when_not_even_one_report_interval_fits() -> None:
    assert rescaled_for_timestep(_spec(), HALVED, affordable_steps=1_050) is None
    assert rescaled_for_timestep(_spec(), HALVED, affordable_steps=0) is None
