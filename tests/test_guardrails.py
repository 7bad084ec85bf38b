"""Guardrails and the retry policy as rules; the workflow tests drive the same rules through a real study."""

from __future__ import annotations

import pytest

from sciagent.errors import UserError
from sciagent.science.md import MDResult
from sciagent.science.simulate import SimulationOutcome
from sciagent.science.spec import MDSpec
from sciagent.science.stability import DEFAULT_THRESHOLDS
from sciagent.workflows.study.guardrails import (
    Allowance,
    Limits,
    Throughput,
    cheaper_plan,
    fit_plan,
    physical_checks,
)
from sciagent.workflows.study.plans import StudyPlan
from sciagent.workflows.study.policy import Action, RetryLimits, next_action


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


class Probe:
    """The guardrails' ``measure`` callback: a fixed speed per solvent, and a record of every call."""

    def __init__(self, implicit: float = 100.0, explicit: float = 10.0, workers: int = 2) -> None:
        self.speeds = {"implicit": implicit, "explicit": explicit}
        self.workers = workers
        self.calls: list[str] = []

    def __call__(self, plan: StudyPlan) -> Throughput:
        self.calls.append(plan.solvent)
        return Throughput(self.speeds[plan.solvent], self.workers, plan.solvent)


def _fit(plan: StudyPlan, budget_s: float, probe: Probe | None = None, max_run_s: float | None = None):
    return fit_plan(plan, lambda: Allowance(budget_s, max_run_s), probe or Probe())


def test_timestep_above_2_fs_without_hmr_is_lowered_and_recorded() -> None:
    plan, changes = physical_checks(_plan(timestep_fs=4))
    assert plan.timestep_fs == 2
    assert [c.field for c in changes] == ["timestep_fs"]
    kept, none = physical_checks(_plan(timestep_fs=4, hydrogen_mass_repartitioning=True))
    assert kept.timestep_fs == 4 and none == []


def test_free_bonds_to_hydrogen_above_1_fs_are_constrained_unless_asked_to_keep_them() -> None:
    plan, changes = physical_checks(
        _plan(timestep_fs=4, hydrogen_mass_repartitioning=True, constraints="none")
    )
    assert plan.constraints == "hbonds" and [c.field for c in changes] == ["constraints"]
    at_1_fs, none = physical_checks(_plan(timestep_fs=1, constraints="none"))
    assert at_1_fs.constraints == "none" and none == []
    keep = Limits(constrain_hydrogens_above_fs=None)
    kept, none = physical_checks(
        _plan(timestep_fs=4, hydrogen_mass_repartitioning=True, constraints="none"), keep
    )
    assert kept.constraints == "none" and none == []


def test_duplicate_temperatures_are_merged() -> None:
    plan, changes = physical_checks(_plan(elevated_temperatures_k=[400, 350, 400]))
    assert plan.temperatures_k == [300, 350, 400] and changes[0].field == "elevated_temperatures_k"


def test_a_plan_that_fits_is_left_alone() -> None:
    fitted, changes = _fit(_plan(production_ps=60), budget_s=3600)
    assert changes == [] and fitted.verdict_possible
    assert fitted.production_ps == pytest.approx(60.0)
    assert fitted.production_steps % fitted.report_interval == 0
    # 2 ps at 2 fs brings the thermostat to its target; a long run equilibrates for 2 % of production
    assert fitted.equilibration_steps == 1000
    long_run, _ = _fit(_plan(production_ps=500), budget_s=36000)
    assert long_run.equilibration_steps == int(long_run.production_steps * 0.02)
    assert fitted.conditions == [(300.0, 1), (400.0, 1)]


def test_a_production_too_short_for_a_verdict_is_raised_to_twice_the_documented_minimum() -> None:
    fitted, changes = _fit(_plan(production_ps=2), budget_s=3600)
    assert DEFAULT_THRESHOLDS.min_production_ps == 50.0
    assert fitted.production_ps == pytest.approx(2 * DEFAULT_THRESHOLDS.min_production_ps)
    assert changes[0].field == "production_ps" and changes[0].applied == 100.0
    assert "at least 50 ps" in changes[0].reason


def test_a_raised_length_is_open_ended_but_a_plans_own_length_is_its_maximum() -> None:
    """The guardrail's 100 ps is a floor to aim for, not the scientist's limit: those runs may go on to
    their deadline (3x the expected length bounds a machine far faster than measured). A plan that asked
    for 60 ps itself stops there, whatever the budget."""
    raised, _ = _fit(_plan(production_ps=2), budget_s=3600)
    assert raised.production_ps == pytest.approx(100.0)
    assert raised.max_production_steps == 3 * raised.production_steps
    own, _ = _fit(_plan(production_ps=60), budget_s=3600)
    assert own.max_production_steps == own.production_steps  # control: the plan's own length holds


def test_a_raised_production_is_cut_to_the_budget_but_not_below_the_minimum() -> None:
    """Two runs on two workers at 100 steps/s: 300 s fit about 96 ps each at 4 fs, not 100."""
    fitted, changes = _fit(_plan(production_ps=2, timestep_fs=4, hydrogen_mass_repartitioning=True), 300)
    assert 50 <= fitted.production_ps < 100 and fitted.verdict_possible
    assert [(c.proposed, c.applied) for c in changes] == [(2, 100.0), (100.0, fitted.production_ps)]


def test_production_is_cut_to_the_budget_and_the_estimate_fits() -> None:
    fitted, changes = _fit(_plan(production_ps=1000), budget_s=600)
    assert [c.field for c in changes] == ["production_ps"]
    assert 50 <= fitted.production_ps < 1000 and fitted.verdict_possible
    assert fitted.estimated_wall_s <= 600


def test_the_plan_gets_cheaper_before_it_gets_shorter_or_loses_runs() -> None:
    """Explicit solvent at 1 fs cannot give two runs 50 ps in 5 minutes; implicit at 4 fs with HMR can.

    Even at the implicit system's speed explicit solvent would not fit, so it is never probed.
    """
    probe = Probe(implicit=100.0, explicit=10.0)
    fitted, changes = _fit(_plan(solvent="explicit", timestep_fs=1), budget_s=300, probe=probe)
    assert probe.calls == ["implicit"]
    assert [(c.field, c.applied) for c in changes if c.field != "production_ps"] == [
        ("solvent", "implicit"),
        ("timestep_fs", 2),
        ("timestep_fs", 4),
    ]
    assert (fitted.solvent, fitted.timestep_fs, fitted.hydrogen_mass_amu, fitted.constraints) == (
        "implicit",
        4.0,
        3.0,
        "hbonds",
    )
    assert fitted.conditions == [(300.0, 1), (400.0, 1)] and fitted.verdict_possible
    assert fitted.production_ps >= 50


def test_explicit_solvent_is_probed_when_it_might_fit_and_dropped_when_it_does_not() -> None:
    plan = _plan(solvent="explicit", timestep_fs=4, hydrogen_mass_repartitioning=True, production_ps=50)
    probe = Probe(implicit=100.0, explicit=20.0)
    fitted, changes = _fit(plan, budget_s=400, probe=probe)
    assert probe.calls == ["implicit", "explicit"]  # at the implicit speed it would have fitted
    assert fitted.solvent == "implicit" and changes[0].field == "solvent"
    roomy, _ = _fit(plan, budget_s=3600, probe=Probe(implicit=100.0, explicit=20.0))
    assert roomy.solvent == "explicit" and roomy.verdict_possible


def test_runs_are_dropped_only_after_the_plan_is_as_cheap_as_it_gets() -> None:
    plan = _plan(
        timestep_fs=4,
        hydrogen_mass_repartitioning=True,
        replicas=2,
        elevated_temperatures_k=[350, 400],
        production_ps=50,
    )
    fitted, changes = _fit(plan, budget_s=400, probe=Probe(implicit=100.0, workers=1))
    assert [c.field for c in changes] == ["conditions"]
    assert fitted.conditions == [(300.0, 1), (400.0, 1)]  # replicas went first, then the mildest
    assert fitted.verdict_possible and fitted.production_ps == 50


def test_when_no_verdict_fits_two_runs_are_kept_short_and_the_plan_says_so() -> None:
    plan = _plan(timestep_fs=4, hydrogen_mass_repartitioning=True, elevated_temperatures_k=[350, 400])
    fitted, changes = _fit(plan, budget_s=120, probe=Probe(implicit=100.0, workers=2))
    assert fitted.temperatures_k == [300.0, 400.0] and not fitted.verdict_possible
    assert 2 <= fitted.production_ps < 50
    cut = next(c for c in changes if c.field == "production_ps" and c.proposed == 100)
    assert "no verdict possible" in cut.reason


def test_no_planned_run_is_longer_than_the_per_simulation_cap() -> None:
    probe = Probe(implicit=100.0, workers=2)
    fitted, changes = _fit(_plan(production_ps=1000), budget_s=3600, probe=probe, max_run_s=120)
    assert fitted.estimated_wall_s <= 120  # both runs in one wave, each under the cap
    assert any("per simulation" in c.reason for c in changes)


def test_a_budget_that_fits_nothing_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="--budget"):
        _fit(_plan(), budget_s=5)


def test_cheaper_plans_come_one_step_at_a_time_then_run_out() -> None:
    plan = _plan(solvent="explicit", timestep_fs=1, constraints="none")
    steps = []
    while (cheaper := cheaper_plan(plan, "too slow")) is not None:
        plan, change = cheaper
        steps.append((change.field, change.applied))
    assert steps == [("solvent", "implicit"), ("timestep_fs", 2), ("timestep_fs", 4)]
    assert plan.temperatures_k == [300, 400]
    assert (plan.constraints, plan.hydrogen_mass_repartitioning) == ("hbonds", True)


def _outcome(status: str, failure_class: str | None = None) -> SimulationOutcome:
    spec = MDSpec(structure="villin")
    result = MDResult(status=status, failure_class=failure_class, message="m", spec=spec, workdir="/tmp")
    return SimulationOutcome(result=result)


@pytest.mark.parametrize(
    ("outcome", "worker_lost", "action"),
    [
        (_outcome("completed"), False, Action.ACCEPT),
        (_outcome("failed", "instability"), False, Action.ADAPT),
        (_outcome("failed", "platform"), False, Action.STOP),  # deterministic: not retried
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
    plan = _plan(production_ps=1000)
    quick_setup = fit_plan(plan, lambda: Allowance(600), lambda p: FAST)[0]
    slow_setup = Throughput(steps_per_s=100.0, workers=2, solvent="implicit", overhead_s=60.0)
    fitted = fit_plan(plan, lambda: Allowance(600), lambda p: slow_setup)[0]
    assert fitted.production_steps < quick_setup.production_steps
    assert fitted.estimated_wall_s <= 600
