"""Guardrails: make a model's study plan physically sound, then fit it to the budget for a verdict.

The model proposes; these rules dispose, and every change is returned as a ``GuardrailChange`` so the
report can show what was changed and why.

``physical_checks`` (before any budget is considered):

- temperatures come from the schema's enumerations (290-450 K); duplicates are merged;
- a timestep above 2 fs needs hydrogen mass repartitioning (HMR), else it is lowered to 2 fs;
- above 1 fs, bonds to hydrogen are constrained: an unconstrained 4 fs plan is a predictable blow-up,
  not an experiment (``Limits.constrain_hydrogens_above_fs=None`` keeps it, to test recovery).

``fit_plan`` fits for scientific adequacy first. Every run should get at least the production a
stability verdict needs (``StabilityThresholds.min_production_ps`` in ``science/stability.py``: the one
documented place). When the budget, or the per-simulation cap, cannot give every run that much:

1. the plan gets cheaper, one step at a time (``cheaper_plan``): explicit solvent becomes implicit
   (re-measured: another system), 1 fs becomes 2 fs, 2 fs becomes 4 fs with HMR (bonds to H
   constrained throughout);
2. only then are runs dropped: replicas first, then the mildest elevated temperatures, down to
   ``min_conditions`` (a reference and one elevated temperature: fewer answers no thermal question);
3. only then are runs made shorter than a verdict needs (``verdict_possible`` is False and the report
   says how long they would have to be), down to ``floor_production_ps``, and then to a single run;
4. if not even that fits, the study cannot run (a ``UserError`` naming ``--budget``).

The plan's length (one too short for a verdict is raised to ``raised_production_factor`` times the
minimum) is each run's *maximum* (``FittedPlan.max_production_steps``): runs go until a deadline set
when they start (``workflows/study/pacing.py``) or this maximum, whichever comes first. The *expected*
production (``FittedPlan.production_steps``) is as much of it as fits at the measured speed, every run
in as many waves as the workers need and none longer than the per-simulation cap: it sizes the frames
and checkpoints, so a run the deadline ends early still leaves enough frames for the analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from sciagent.errors import UserError
from sciagent.report.models import GuardrailChange
from sciagent.science.stability import DEFAULT_THRESHOLDS
from sciagent.workflows.study.plans import StudyPlan

HMR_HYDROGEN_MASS_AMU = 3.0
HMR_TIMESTEP_FS = 4


@dataclass(frozen=True)
class Limits:
    """The bounds a plan is held to, in one place (the verdict's own minimum is in science/stability)."""

    max_conditions: int = 8  # temperatures x replicas
    min_conditions: int = 2  # a reference and one elevated temperature, as long as a floor run fits
    max_timestep_without_hmr_fs: float = 2.0  # with H-bond constraints, the standard safe limit
    constrain_hydrogens_above_fs: float | None = 1.0  # None: keep the plan's free bonds to H
    min_production_ps: float = DEFAULT_THRESHOLDS.min_production_ps  # what a stability verdict needs
    # A plan shorter than a verdict needs is raised to this multiple of the minimum, or to as much of
    # it as the budget fits (never below the minimum while a verdict fits). A run of exactly the
    # minimum whose backbone RMSD happens to breathe upward at its end is "still drifting" (villin at
    # 300 K: the default study's own seed, 3 runs of 3 at 50 ps; stable at 75 and 100 ps); twice the
    # minimum gives the drift test a window of 50 ps.
    raised_production_factor: float = 2.0
    # A length the guardrail chose (the plan's own was too short for a verdict) is not one the scientist
    # set: those runs go until their deadline, and their maximum, this multiple of the expected length,
    # only bounds a machine far faster than measured (the budget is the user's promise: use it).
    open_ended_factor: float = 3.0
    floor_production_ps: float = 2.0  # when no verdict fits: shorter runs tell nothing at all
    # Equilibration brings the system to temperature: Langevin at 1/ps needs ~2 ps; the structure's
    # own relaxation happens in production, whose first half the drift test leaves out anyway.
    equilibration_fraction: float = 0.02  # of production, for long runs...
    min_equilibration_ps: float = 2.0  # ...but at least this
    frames_per_run: int = 100  # trajectory frames aimed for in each run
    budget_safety: float = 0.85  # use this fraction of the time left, the rest absorbs noise
    task_overhead_s: float = 8.0  # per run, at least: worker start, preparation, minimisation


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Throughput:
    """Measured speed: steps per second for one run on one worker, how many workers run at once, and
    the seconds each run spends before its first step (worker start, preparation, minimisation)."""

    steps_per_s: float
    workers: int
    solvent: str
    overhead_s: float = 0.0


@dataclass(frozen=True)
class Allowance:
    """The time the runs may take: what is left of the study's budget, and each run's cap."""

    budget_s: float
    max_run_s: float | None = None


class FittedPlan(BaseModel):
    """A plan the workflow can execute as is."""

    temperatures_k: list[float]
    replicas: int
    timestep_fs: float
    hydrogen_mass_amu: float | None
    constraints: str
    solvent: str
    production_steps: int  # expected at the measured speed: sizes frames and checkpoints
    max_production_steps: int | None = None  # the most a run may produce (None: a state from before)
    equilibration_steps: int
    report_interval: int
    estimated_wall_s: float | None  # None: fitted before any speed was measured (provisional)
    verdict_possible: bool | None = True  # every run is at least as long as a verdict needs; None: unknown
    min_production_ps: float = DEFAULT_THRESHOLDS.min_production_ps
    ph: float | None = None  # the goal's, held for every run; None: the run spec's default
    pressure_bar: float | None = None

    @property
    def conditions(self) -> list[tuple[float, int]]:
        """(temperature, replica) pairs in run order: all temperatures of replica 1 first."""
        return [(t, r) for r in range(1, self.replicas + 1) for t in self.temperatures_k]

    @property
    def production_ps(self) -> float:
        return self.production_steps * self.timestep_fs / 1000.0

    @property
    def max_steps(self) -> int:
        """The production a run may reach before its deadline: the plan's length."""
        return max(self.production_steps, self.max_production_steps or 0)

    @property
    def max_production_ps(self) -> float:
        return self.max_steps * self.timestep_fs / 1000.0


def physical_checks(
    plan: StudyPlan, limits: Limits = DEFAULT_LIMITS
) -> tuple[StudyPlan, list[GuardrailChange]]:
    """Hold temperatures and integration to physical limits (before any budget is considered)."""
    changes: list[GuardrailChange] = []
    elevated = sorted(set(plan.elevated_temperatures_k))
    if elevated != list(plan.elevated_temperatures_k):
        changes.append(
            _change(
                "elevated_temperatures_k",
                plan.elevated_temperatures_k,
                elevated,
                "sorted, duplicates removed",
            )
        )
    timestep = plan.timestep_fs
    if timestep > limits.max_timestep_without_hmr_fs and not plan.hydrogen_mass_repartitioning:
        timestep = int(limits.max_timestep_without_hmr_fs)
        why = "a timestep above 2 fs needs hydrogen mass repartitioning, not in the plan"
        changes.append(_change("timestep_fs", plan.timestep_fs, timestep, why))
    constraints = plan.constraints
    above = limits.constrain_hydrogens_above_fs
    if constraints == "none" and above is not None and timestep > above:
        constraints = "hbonds"
        why = f"above {above:g} fs, free bonds to hydrogen blow up: they are constrained"
        changes.append(_change("constraints", "none", "hbonds", why))
    update = {"elevated_temperatures_k": elevated, "timestep_fs": timestep, "constraints": constraints}
    return plan.model_copy(update=update), changes


def cheaper_plan(plan: StudyPlan, why: str) -> tuple[StudyPlan, GuardrailChange] | None:
    """The next cheaper variant of ``plan`` (same temperatures), or None when there is none left."""
    if plan.solvent == "explicit":
        return plan.model_copy(update={"solvent": "implicit"}), _change(
            "solvent", "explicit", "implicit", why
        )
    if plan.timestep_fs == 1:
        cheaper = plan.model_copy(update={"timestep_fs": 2, "constraints": "hbonds"})
        return cheaper, _change("timestep_fs", 1, 2, f"{why} (bonds to hydrogen constrained)")
    if plan.timestep_fs < HMR_TIMESTEP_FS:
        update = {
            "timestep_fs": HMR_TIMESTEP_FS,
            "hydrogen_mass_repartitioning": True,
            "constraints": "hbonds",
        }
        how = f"hydrogen mass repartitioned to {HMR_HYDROGEN_MASS_AMU:g} amu, bonds to hydrogen constrained"
        change = _change("timestep_fs", plan.timestep_fs, HMR_TIMESTEP_FS, f"{why} ({how})")
        return plan.model_copy(update=update), change
    return None


def fit_plan(
    plan: StudyPlan,
    allowance: Callable[[], Allowance],
    measure: Callable[[StudyPlan], Throughput | None],
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[FittedPlan, list[GuardrailChange]]:
    """Fit ``plan`` (already through ``physical_checks``) to the time ``allowance()`` gives.

    ``measure(plan)`` returns the throughput of ``plan``'s system (the workflow runs a probe); it is
    called again when the solvent changes. ``allowance`` is called after each measurement, since a
    probe spends part of the budget. For a plan with no cheaper physics to choose, ``measure`` may
    return None (no speed measured yet): the fit is then provisional, every run kept and expected to
    reach the verdict's minimum, and the runs measure their own speed as they go.

    Raises:
        UserError: not even one run of ``floor_production_ps`` fits.
    """
    changes: list[GuardrailChange] = []
    temperatures, replicas = list(plan.temperatures_k), plan.replicas
    while len(temperatures) * replicas > limits.max_conditions:
        replicas, temperatures = drop_one(replicas, temperatures)
    if (len(temperatures), replicas) != (len(plan.temperatures_k), plan.replicas):
        changes.append(_runs_change(plan, temperatures, replicas, f"at most {limits.max_conditions} runs"))
    open_ended = plan.production_ps < limits.min_production_ps
    if open_ended:
        raised = limits.raised_production_factor * limits.min_production_ps
        why = (
            f"a stability verdict needs at least {limits.min_production_ps:g} ps per run; {raised:g} ps or"
            " more where the budget allows, so that a run still settling at the minimum can be judged"
        )
        changes.append(_change("production_ps", plan.production_ps, raised, why))
        plan = plan.model_copy(update={"production_ps": raised})
    measured: dict[str, Throughput] = {}
    if cheaper_plan(plan, "") is None:
        known = measure(plan)
        if known is None:  # provisional: no speed to fit to, and no physics choice it could change
            steps = _steps(limits.min_production_ps, plan.timestep_fs, limits)
            return _sized(plan, temperatures, replicas, steps, None, limits, None, open_ended), changes
        measured[plan.solvent] = known

    def measure_once(candidate: StudyPlan) -> Throughput:  # one measurement per system (solvent)
        if candidate.solvent not in measured:
            speed = measure(candidate)
            assert speed is not None, "only a plan with no cheaper physics may go unmeasured"
            measured[candidate.solvent] = speed
        return measured[candidate.solvent]

    plan, throughput = _cheapen_until_adequate(
        plan, len(temperatures) * replicas, allowance, measure_once, limits, changes
    )

    def affordable(candidate: StudyPlan, runs: int) -> int:
        return affordable_steps(allowance(), runs, throughput, limits)

    def fits_a_verdict(candidate: StudyPlan, runs: int) -> bool:
        return _fits_a_verdict(candidate, runs, throughput, allowance(), limits)

    before_drop = (list(temperatures), replicas)
    while not fits_a_verdict(plan, len(temperatures) * replicas) and (
        len(temperatures) * replicas > limits.min_conditions
    ):
        replicas, temperatures = drop_one(replicas, temperatures)
    verdict_possible = fits_a_verdict(plan, len(temperatures) * replicas)
    floor = _steps(limits.floor_production_ps, plan.timestep_fs, limits)
    while affordable(plan, len(temperatures) * replicas) < floor and len(temperatures) * replicas > 1:
        replicas, temperatures = drop_one(replicas, temperatures)
    if (temperatures, replicas) != before_drop:
        reason = (
            f"the budget cannot give every run the {limits.min_production_ps:g} ps a verdict needs"
            if verdict_possible
            else f"the budget cannot fit even {limits.floor_production_ps:g} ps runs for all"
        )
        changes.append(_runs_change(plan, temperatures, replicas, reason))
    runs = len(temperatures) * replicas
    total = affordable(plan, runs)
    if total < floor:
        left = allowance()
        raise UserError(
            f"the budget cannot fit even one {limits.floor_production_ps:g} ps run ({left.budget_s:.0f} s "
            f"left at the measured {throughput.steps_per_s:.0f} steps/s"
            + (f", at most {left.max_run_s:.0f} s per simulation" if left.max_run_s else "")
            + "): raise --budget"
            + (" or --max-simulation-time" if left.max_run_s else "")
        )
    fitted = _sized(plan, temperatures, replicas, total, throughput, limits, verdict_possible, open_ended)
    if fitted.production_ps < plan.production_ps - 1e-9:
        reason = (
            f"fits the {allowance().budget_s:.0f} s left at {throughput.steps_per_s:.0f} steps/s on "
            f"{throughput.workers} worker(s)"
        )
        if allowance().max_run_s:
            reason += f", at most {allowance().max_run_s:.0f} s per simulation"
        if not verdict_possible:
            reason += (
                f"; shorter than the {limits.min_production_ps:g} ps a verdict needs: no verdict possible"
            )
        changes.append(_change("production_ps", plan.production_ps, round(fitted.production_ps, 3), reason))
    return fitted, changes


def _cheapen_until_adequate(
    plan: StudyPlan,
    runs: int,
    allowance: Callable[[], Allowance],
    measure: Callable[[StudyPlan], Throughput],
    limits: Limits,
    changes: list[GuardrailChange],
) -> tuple[StudyPlan, Throughput]:
    """Make ``plan`` cheaper, a step at a time, until each of ``runs`` gets what a verdict needs.

    For a plan in explicit solvent the implicit system is measured first: the same protein in
    explicit solvent costs at least as much per step (all its forces plus thousands of waters under
    PME, against a GB term over the protein alone), so when even the implicit speed cannot fit the plan,
    explicit solvent is dropped without spending the budget on probing it. That holds for proteins
    of up to a few thousand atoms, where GB without a cutoff is the cheaper model.
    """
    if plan.solvent == "explicit":
        lower_bound = measure(plan.model_copy(update={"solvent": "implicit"}))
        if _fits_a_verdict(plan, runs, lower_bound, allowance(), limits):
            throughput = measure(plan)
        else:
            why = _why(plan, runs, lower_bound, allowance(), limits)
            cheaper = cheaper_plan(
                plan, f"{why} (the implicit system's speed: explicit solvent is slower still)"
            )
            assert cheaper is not None  # explicit solvent always has the implicit variant
            plan, change = cheaper
            changes.append(change)
            throughput = lower_bound
    else:
        throughput = measure(plan)
    while not _fits_a_verdict(plan, runs, throughput, allowance(), limits):
        cheaper = cheaper_plan(plan, _why(plan, runs, throughput, allowance(), limits))
        if cheaper is None:
            break
        plan, change = cheaper
        changes.append(change)
        if change.field == "solvent":
            throughput = measure(plan)
    return plan, throughput


def _fits_a_verdict(
    plan: StudyPlan, runs: int, throughput: Throughput, allowance: Allowance, limits: Limits
) -> bool:
    needed = _steps(limits.min_production_ps, plan.timestep_fs, limits)
    return affordable_steps(allowance, runs, throughput, limits) >= needed


def wall_time_for(
    fitted: FittedPlan, production_ps: float, throughput: Throughput, limits: Limits = DEFAULT_LIMITS
) -> float:
    """Seconds the runs of ``fitted`` would take at ``production_ps`` each (budget safety included)."""
    steps = _steps(production_ps, fitted.timestep_fs, limits)
    return _wall_s(steps, len(fitted.conditions), throughput, limits) / limits.budget_safety


def _sized(
    plan: StudyPlan,
    temperatures: list[float],
    replicas: int,
    affordable_steps: int,
    throughput: Throughput | None,
    limits: Limits,
    verdict_possible: bool | None,
    open_ended: bool = False,
) -> FittedPlan:
    """Step counts for a production as long as the plan asks, or as ``affordable_steps`` allows; an
    ``open_ended`` plan (its length the guardrail's, not the scientist's) may run to ``open_ended_factor``
    times the expected length before its deadline."""
    wanted = math.ceil(plan.production_ps * 1000.0 / plan.timestep_fs)
    if _steps(plan.production_ps, plan.timestep_fs, limits) <= affordable_steps:
        production = wanted
    else:
        production = _production_steps(affordable_steps, plan.timestep_fs, limits)
    report_interval = _report_interval(production, limits.frames_per_run)
    production = max(report_interval, production // report_interval * report_interval)
    longest = max(production, math.ceil(wanted / report_interval) * report_interval)
    if open_ended:
        runway = math.ceil(limits.open_ended_factor * production / report_interval) * report_interval
        longest = max(longest, runway)
    equilibration = _equilibration_steps(production, plan.timestep_fs, limits)
    runs = len(temperatures) * replicas
    estimated_wall_s = _wall_s(production + equilibration, runs, throughput, limits) if throughput else None
    return FittedPlan(
        temperatures_k=[float(t) for t in temperatures],
        replicas=replicas,
        timestep_fs=float(plan.timestep_fs),
        hydrogen_mass_amu=HMR_HYDROGEN_MASS_AMU if plan.hydrogen_mass_repartitioning else None,
        constraints=plan.constraints,
        solvent=plan.solvent,
        production_steps=production,
        max_production_steps=longest,
        equilibration_steps=equilibration,
        report_interval=report_interval,
        estimated_wall_s=estimated_wall_s,
        verdict_possible=verdict_possible,
        min_production_ps=limits.min_production_ps,
    )


def _why(plan: StudyPlan, runs: int, throughput: Throughput, allowance: Allowance, limits: Limits) -> str:
    need = _wall_s(_steps(limits.min_production_ps, plan.timestep_fs, limits), runs, throughput, limits)
    text = (
        f"{runs} run(s) of {limits.min_production_ps:g} ps in {plan.solvent} solvent at "
        f"{plan.timestep_fs} fs need about {need / limits.budget_safety:.0f} s at "
        f"{throughput.steps_per_s:.0f} steps/s; {allowance.budget_s:.0f} s are left"
    )
    return text + (f", at most {allowance.max_run_s:.0f} s per simulation" if allowance.max_run_s else "")


def _report_interval(production_steps: int, frames: int) -> int:
    """About ``frames`` frames: a multiple of 10 steps, one that divides the production if one is close."""
    longest = max(10, production_steps // frames // 10 * 10)
    shortest = max(10, longest // 2)  # at most twice the frames aimed for
    divisor = next((i for i in range(longest, shortest - 1, -10) if production_steps % i == 0), None)
    return divisor or longest


def _equilibration_steps(production_steps: int, timestep_fs: float, limits: Limits) -> int:
    minimum = math.ceil(limits.min_equilibration_ps * 1000.0 / timestep_fs)
    return max(minimum, int(production_steps * limits.equilibration_fraction))


def _steps(picoseconds: float, timestep_fs: float, limits: Limits) -> int:
    """Total steps (production plus equilibration) for a production of ``picoseconds``."""
    production = math.ceil(picoseconds * 1000.0 / timestep_fs)
    return production + _equilibration_steps(production, timestep_fs, limits)


def _production_steps(total_steps: int, timestep_fs: float, limits: Limits) -> int:
    """The longest production whose total (with its equilibration) is at most ``total_steps``."""
    minimum = math.ceil(limits.min_equilibration_ps * 1000.0 / timestep_fs)
    return max(0, min(int(total_steps / (1 + limits.equilibration_fraction)), total_steps - minimum))


def _waves(runs: int, workers: int) -> int:
    return math.ceil(runs / max(1, workers))


def affordable_steps(
    allowance: Allowance, runs: int, throughput: Throughput, limits: Limits = DEFAULT_LIMITS
) -> int:
    """Total steps one of ``runs`` runs may take: its share of the budget (with the safety margin and
    its set-up time), and no more than the per-run cap. The workflow sizes adapted runs with it too."""
    overhead = max(limits.task_overhead_s, throughput.overhead_s)
    per_run_s = allowance.budget_s * limits.budget_safety / _waves(runs, throughput.workers) - overhead
    if allowance.max_run_s is not None:
        per_run_s = min(per_run_s, allowance.max_run_s * limits.budget_safety - overhead)
    return max(0, int(per_run_s * throughput.steps_per_s))


def _wall_s(steps: int, runs: int, throughput: Throughput, limits: Limits) -> float:
    overhead = max(limits.task_overhead_s, throughput.overhead_s)
    return _waves(runs, throughput.workers) * (steps / throughput.steps_per_s + overhead)


def drop_one(replicas: int, temperatures: list) -> tuple[int, list]:
    """Fewer runs: first fewer replicas, then the mildest elevated temperature (the fit's order, and the
    live estimate's while the runs run).

    The reference and the hottest temperature are kept longest: together they ask the study's question
    most sharply (a stressed fold against a physiological one).
    """
    if replicas > 1:
        return replicas - 1, temperatures
    if len(temperatures) > 2:
        return replicas, [temperatures[0], *temperatures[2:]]
    return replicas, temperatures[:-1]


def _change(field: str, proposed: object, applied: object, reason: str) -> GuardrailChange:
    return GuardrailChange(field=field, proposed=proposed, applied=applied, reason=reason)


def _runs_change(plan: StudyPlan, temperatures: list, replicas: int, reason: str) -> GuardrailChange:
    return _change(
        "conditions",
        {"temperatures_k": list(plan.temperatures_k), "replicas": plan.replicas},
        {"temperatures_k": list(temperatures), "replicas": replicas},
        reason,
    )
