"""When the budget gave no verdict: how long the runs would have to be, and the command that gets one.

Estimated from what this run measured (the runs' own production speed and set-up time, else the
speed the plan was fitted with; the plan and fit phases' wall times; the report's reserve), so the
suggestion is for this machine and this site.
"""

from __future__ import annotations

import math
import shlex

from sciagent.report.models import VerdictOutlook
from sciagent.science.simulate import SimulationOutcome
from sciagent.workflows.study.guardrails import Limits, Throughput, wall_time_for
from sciagent.workflows.study.pacing import measured_steps_per_s
from sciagent.workflows.study.policy import DRIFT_LENGTH_FACTOR, EXTENDABLE_FAILURES
from sciagent.workflows.study.state import StudyState


def verdict_outlook(
    state: StudyState,
    outcomes: dict[str, SimulationOutcome],
    command: list[str],
    limits: Limits,
) -> VerdictOutlook | None:
    """The outlook when a completed run was left inconclusive for lack of length, else None.

    Args:
        state: the study, with its fitted plan and the probe that measured its speed.
        outcomes: the completed conditions' last outcomes, by condition name.
        command: the ``sciagent run`` command line that started the study, without ``--budget``.
        limits: the guardrails the plan was fitted with.
    """
    fitted = state.fitted
    throughput = measured_throughput(state, outcomes)
    if fitted is None or throughput is None:
        return None
    short, drifting = [], []
    for name, outcome in outcomes.items():
        if outcome.analysis is None or outcome.analysis.assessment.verdict != "inconclusive":
            continue
        failed = EXTENDABLE_FAILURES & set(outcome.analysis.assessment.failed)
        (short if "too short" in failed else drifting if failed else []).append(name)
    if not short and not drifting:
        return None
    produced_ps = max(o.result.simulated_ns * 1000.0 for o in outcomes.values())
    needed_ps = limits.min_production_ps
    if drifting:
        needed_ps = max(needed_ps, DRIFT_LENGTH_FACTOR * produced_ps)
    fixed_s = sum(state.phase_wall_times_s.get(phase, 0.0) for phase in ("plan", "fit"))
    total_s = wall_time_for(fitted, needed_ps, throughput, limits) + fixed_s + state.report_reserve_s
    minutes = math.ceil(total_s / 60.0)
    reasons = []
    if short:
        minimum = limits.min_production_ps
        reasons.append(
            f"{', '.join(short)} ran {produced_ps:g} ps, shorter than the {minimum:g} ps a verdict needs"
        )
    if drifting:
        reasons.append(f"{', '.join(drifting)} still drifted at the end of {produced_ps:g} ps")
    return VerdictOutlook(
        needed_production_ps=round(needed_ps, 3),
        estimated_wall_s=round(total_s, 1),
        command=shlex.join([*command, "--budget", f"{minutes}m"]),
        reason="; ".join(reasons),
    )


def measured_throughput(state: StudyState, outcomes: dict[str, SimulationOutcome]) -> Throughput | None:
    """The slowest production speed and longest set-up the runs measured on themselves; the speed the
    plan was fitted with only when no run measured one."""
    fitted_with = state.throughput
    speeds = [s for s in (measured_steps_per_s(o) for o in outcomes.values()) if s]
    if not speeds or state.fitted is None:
        return fitted_with
    setup = max(o.result.timings_s.get("setup", 0.0) for o in outcomes.values())
    workers = fitted_with.workers if fitted_with else len(state.fitted.conditions)
    return Throughput(min(speeds), workers, state.fitted.solvent, setup)
