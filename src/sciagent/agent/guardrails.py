"""Guardrails: make a model's study plan physically sound and fit it to the compute budget.

The model proposes; these rules dispose, and every change is returned as a ``GuardrailChange`` so the
report can show what was changed and why. The rules:

- temperatures come from the schema's enumerations (290-450 K); duplicates are merged; at most
  ``max_conditions`` runs;
- a timestep above 2 fs needs hydrogen mass repartitioning (HMR), else it is lowered to 2 fs;
- a production shorter than ``min_production_ps`` is lengthened to it;
- a plan too expensive for even one minimal run gets cheaper, one step at a time (``cheaper_plan``):
  explicit solvent becomes implicit, then a 1 fs timestep becomes 2 fs (bonds to H constrained);
- the production length is cut so that every run, in as many waves as the workers need, finishes
  within the budget at the measured speed; if even ``min_production_ps`` does not fit, replicas and
  then the highest temperatures are dropped; if one short run does not fit, the study cannot run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel

from sciagent.errors import UserError
from sciagent.report.models import GuardrailChange
from sciagent.workflows.study_schemas import StudyPlan

HMR_HYDROGEN_MASS_AMU = 3.0


@dataclass(frozen=True)
class Limits:
    """The bounds a plan is held to; one documented place."""

    max_conditions: int = 8  # temperatures x replicas
    max_timestep_without_hmr_fs: float = 2.0  # with H-bond constraints, the standard safe limit
    min_production_ps: float = 2.0  # shorter runs tell nothing about stability
    equilibration_fraction: float = 0.2  # equilibration as a fraction of production...
    min_equilibration_ps: float = 2.0  # ...but at least this: Langevin at 1/ps needs ~2 ps to reach T
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


class FittedPlan(BaseModel):
    """A plan the workflow can execute as is."""

    temperatures_k: list[float]
    replicas: int
    timestep_fs: float
    hydrogen_mass_amu: float | None
    constraints: str
    solvent: str
    production_steps: int
    equilibration_steps: int
    report_interval: int
    estimated_wall_s: float

    @property
    def conditions(self) -> list[tuple[float, int]]:
        """(temperature, replica) pairs in run order: all temperatures of replica 1 first."""
        return [(t, r) for r in range(1, self.replicas + 1) for t in self.temperatures_k]

    @property
    def production_ps(self) -> float:
        return self.production_steps * self.timestep_fs / 1000.0


def physical_checks(
    plan: StudyPlan, limits: Limits = DEFAULT_LIMITS
) -> tuple[StudyPlan, list[GuardrailChange]]:
    """Hold temperatures and timestep to physical limits (before any budget is considered)."""
    changes: list[GuardrailChange] = []
    elevated = sorted(set(plan.elevated_temperatures_k))
    if elevated != list(plan.elevated_temperatures_k):
        changes.append(
            GuardrailChange(
                field="elevated_temperatures_k",
                proposed=list(plan.elevated_temperatures_k),
                applied=elevated,
                reason="sorted, duplicates removed",
            )
        )
    timestep = plan.timestep_fs
    if timestep > limits.max_timestep_without_hmr_fs and not plan.hydrogen_mass_repartitioning:
        timestep = limits.max_timestep_without_hmr_fs
        changes.append(
            GuardrailChange(
                field="timestep_fs",
                proposed=plan.timestep_fs,
                applied=timestep,
                reason="a timestep above 2 fs needs hydrogen mass repartitioning, not in the plan",
            )
        )
    return plan.model_copy(update={"elevated_temperatures_k": elevated, "timestep_fs": timestep}), changes


def fit_to_budget(
    plan: StudyPlan, budget_s: float, throughput: Throughput, limits: Limits = DEFAULT_LIMITS
) -> tuple[FittedPlan, list[GuardrailChange]]:
    """Choose run lengths (and if needed fewer runs) so the study finishes within ``budget_s``.

    Raises:
        UserError: not even one minimal run fits in the budget.
    """
    changes: list[GuardrailChange] = []
    temperatures, replicas = list(plan.temperatures_k), plan.replicas
    while len(temperatures) * replicas > limits.max_conditions:
        replicas, temperatures = _drop_one(replicas, temperatures)
    if (len(temperatures), replicas) != (len(plan.temperatures_k), plan.replicas):
        changes.append(_runs_change(plan, temperatures, replicas, f"at most {limits.max_conditions} runs"))
    if plan.production_ps < limits.min_production_ps:
        changes.append(
            GuardrailChange(
                field="production_ps",
                proposed=plan.production_ps,
                applied=limits.min_production_ps,
                reason=f"runs shorter than {limits.min_production_ps:g} ps tell nothing about stability",
            )
        )
        plan = plan.model_copy(update={"production_ps": limits.min_production_ps})
    steps_needed = _steps(plan.production_ps, plan.timestep_fs, limits)
    minimum = _steps(limits.min_production_ps, plan.timestep_fs, limits)
    affordable = _affordable_steps(budget_s, len(temperatures) * replicas, throughput, limits)
    before_drop = (list(temperatures), replicas)
    while affordable < minimum and len(temperatures) * replicas > 1:
        replicas, temperatures = _drop_one(replicas, temperatures)
        affordable = _affordable_steps(budget_s, len(temperatures) * replicas, throughput, limits)
    if affordable < minimum:
        raise UserError(
            f"the budget of {budget_s:.0f} s cannot fit even one {limits.min_production_ps:g} ps run "
            f"at the measured {throughput.steps_per_s:.0f} steps/s: raise --budget"
        )
    if (temperatures, replicas) != before_drop:
        changes.append(
            _runs_change(plan, temperatures, replicas, "the budget cannot fit the minimal run length for all")
        )
    total = min(steps_needed, affordable)
    production = _production_steps(total, plan.timestep_fs, limits)
    if production * plan.timestep_fs / 1000.0 < plan.production_ps:
        changes.append(
            GuardrailChange(
                field="production_ps",
                proposed=plan.production_ps,
                applied=round(production * plan.timestep_fs / 1000.0, 3),
                reason=f"fits the {budget_s:.0f} s budget at {throughput.steps_per_s:.0f} steps/s "
                f"on {throughput.workers} worker(s)",
            )
        )
    report_interval = max(10, production // limits.frames_per_run // 10 * 10)
    production = max(report_interval, production // report_interval * report_interval)
    equilibration = _equilibration_steps(production, plan.timestep_fs, limits)
    fitted = FittedPlan(
        temperatures_k=[float(t) for t in temperatures],
        replicas=replicas,
        timestep_fs=float(plan.timestep_fs),
        hydrogen_mass_amu=HMR_HYDROGEN_MASS_AMU if plan.hydrogen_mass_repartitioning else None,
        constraints=plan.constraints,
        solvent=plan.solvent,
        production_steps=production,
        equilibration_steps=equilibration,
        report_interval=report_interval,
        estimated_wall_s=_wall_s(
            production + equilibration, len(temperatures) * replicas, throughput, limits
        ),
    )
    return fitted, changes


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


def _affordable_steps(budget_s: float, runs: int, throughput: Throughput, limits: Limits) -> int:
    overhead = max(limits.task_overhead_s, throughput.overhead_s)
    per_run_s = budget_s * limits.budget_safety / _waves(runs, throughput.workers) - overhead
    return max(0, int(per_run_s * throughput.steps_per_s))


def _wall_s(steps: int, runs: int, throughput: Throughput, limits: Limits) -> float:
    overhead = max(limits.task_overhead_s, throughput.overhead_s)
    return _waves(runs, throughput.workers) * (steps / throughput.steps_per_s + overhead)


def _drop_one(replicas: int, temperatures: list) -> tuple[int, list]:
    """Fewer runs: first fewer replicas, then drop the highest temperature."""
    if replicas > 1:
        return replicas - 1, temperatures
    return replicas, temperatures[:-1]


def _runs_change(plan: StudyPlan, temperatures: list, replicas: int, reason: str) -> GuardrailChange:
    return GuardrailChange(
        field="conditions",
        proposed={"temperatures_k": list(plan.temperatures_k), "replicas": plan.replicas},
        applied={"temperatures_k": list(temperatures), "replicas": replicas},
        reason=reason,
    )


def cheaper_plan(plan: StudyPlan, why: str) -> tuple[StudyPlan, GuardrailChange] | None:
    """The next cheaper variant of ``plan`` (same temperatures), or None when there is none left."""
    if plan.solvent == "explicit":
        change = GuardrailChange(field="solvent", proposed="explicit", applied="implicit", reason=why)
        return plan.model_copy(update={"solvent": "implicit"}), change
    if plan.timestep_fs == 1 and plan.constraints == "hbonds":
        change = GuardrailChange(field="timestep_fs", proposed=1, applied=2, reason=why)
        return plan.model_copy(update={"timestep_fs": 2}), change
    return None
