"""Guardrails and the retry policy: pure rules, table-driven."""

from __future__ import annotations

import pytest

from sciagent.agent.guardrails import Limits, Throughput, cheaper_plan, fit_to_budget, physical_checks
from sciagent.agent.policy import Action, RetryLimits, next_action
from sciagent.errors import UserError
from sciagent.science.md import MDResult
from sciagent.science.simulate import SimulationOutcome
from sciagent.science.spec import MDSpec
from sciagent.workflows.study_schemas import StudyPlan


def _plan(**changes: object) -> StudyPlan:
    fields = {
        "reference_temperature_k": 300,
        "elevated_temperatures_k": [400],
        "replicas": 1,
        "timestep_fs": 2,
        "hydrogen_mass_repartitioning": False,
        "constraints": "hbonds",
        "production_ps": 10,
        "solvent": "implicit",
        "rationale": "test",
    }
    return StudyPlan(**{**fields, **changes})


FAST = Throughput(steps_per_s=100.0, workers=2, solvent="implicit")


def test_timestep_above_2_fs_without_hmr_is_lowered_and_recorded() -> None:
    plan, changes = physical_checks(_plan(timestep_fs=4))
    assert plan.timestep_fs == 2
    assert [c.field for c in changes] == ["timestep_fs"]
    kept, none = physical_checks(_plan(timestep_fs=4, hydrogen_mass_repartitioning=True))
    assert kept.timestep_fs == 4 and none == []


def test_duplicate_temperatures_are_merged() -> None:
    plan, changes = physical_checks(_plan(elevated_temperatures_k=[400, 350, 400]))
    assert plan.temperatures_k == [300, 350, 400] and changes[0].field == "elevated_temperatures_k"


def test_a_plan_that_fits_is_left_alone() -> None:
    fitted, changes = fit_to_budget(_plan(production_ps=2), budget_s=3600, throughput=FAST)
    assert changes == []
    assert fitted.production_ps == pytest.approx(2.0)
    assert fitted.production_steps % fitted.report_interval == 0
    # 20 % of production, but at least 2 ps so the thermostat reaches the target temperature
    assert fitted.equilibration_steps == max(1000, int(fitted.production_steps * 0.2))
    assert fitted.conditions == [(300.0, 1), (400.0, 1)]


def test_production_is_cut_to_the_budget_and_the_estimate_fits() -> None:
    fitted, changes = fit_to_budget(_plan(production_ps=1000), budget_s=120, throughput=FAST)
    assert [c.field for c in changes] == ["production_ps"]
    assert fitted.production_ps < 1000
    assert fitted.estimated_wall_s <= 120


def test_too_short_a_production_is_lengthened() -> None:
    fitted, changes = fit_to_budget(_plan(production_ps=1), budget_s=3600, throughput=FAST)
    assert fitted.production_ps == pytest.approx(Limits().min_production_ps)
    assert changes[0].field == "production_ps" and changes[0].applied == Limits().min_production_ps


def test_runs_are_dropped_when_even_minimal_runs_do_not_fit() -> None:
    slow = Throughput(steps_per_s=30.0, workers=1, solvent="implicit")
    fitted, changes = fit_to_budget(_plan(replicas=2), budget_s=150, throughput=slow)
    assert len(fitted.conditions) < 4
    assert any(c.field == "conditions" for c in changes)


def test_a_budget_that_fits_nothing_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="--budget"):
        fit_to_budget(_plan(), budget_s=5, throughput=FAST)


def test_cheaper_plans_come_one_step_at_a_time_then_run_out() -> None:
    plan = _plan(solvent="explicit", timestep_fs=1)
    steps = []
    while (cheaper := cheaper_plan(plan, "too slow")) is not None:
        plan, change = cheaper
        steps.append((change.field, change.applied))
    assert steps == [("solvent", "implicit"), ("timestep_fs", 2)]
    assert plan.temperatures_k == [300, 400]


def _outcome(status: str, failure_class: str | None = None) -> SimulationOutcome:
    spec = MDSpec(structure="villin")
    result = MDResult(status=status, failure_class=failure_class, message="m", spec=spec, workdir="/tmp")
    return SimulationOutcome(result=result)


@pytest.mark.parametrize(
    ("outcome", "worker_lost", "action"),
    [
        (_outcome("completed"), False, Action.ACCEPT),
        (_outcome("failed", "instability"), False, Action.ADAPT),
        (_outcome("failed", "platform"), False, Action.RETRY),
        (_outcome("failed", "setup"), False, Action.STOP),
        (_outcome("failed", "timeout"), False, Action.STOP),
        (None, True, Action.RETRY),
        (None, False, Action.STOP),
    ],
)
def test_next_action_by_failure_class(
    outcome: SimulationOutcome | None, worker_lost: bool, action: Action
) -> None:
    assert next_action(outcome, worker_lost=worker_lost) == action


def test_backoff_grows_and_is_capped() -> None:
    limits = RetryLimits(backoff_base_s=2, backoff_max_s=5)
    assert [limits.backoff_s(n) for n in (1, 2, 3)] == [2, 4, 5]


def test_a_measured_setup_overhead_shortens_the_runs_that_fit() -> None:
    quick_setup = fit_to_budget(_plan(production_ps=1000), budget_s=300, throughput=FAST)[0]
    slow_setup = Throughput(steps_per_s=100.0, workers=2, solvent="explicit", overhead_s=60.0)
    fitted = fit_to_budget(_plan(production_ps=1000), budget_s=300, throughput=slow_setup)[0]
    assert fitted.production_steps < quick_setup.production_steps
    assert fitted.estimated_wall_s <= 300
