"""Which conditions the live estimate drops: one step in the fit's own order, never a finished run.

The fit drops conditions before anything runs (``guardrails.fit_plan``); this is the same rule applied
while the runs run, when their measured speed says a verdict's minimum will not be met by the
deadline: replicas first, then the mildest elevated temperature, down to ``Limits.min_conditions``.
A dropped condition leaves the study as a fit's drop does (a guardrail change says why, with the
numbers): it is not a failure, so a study whose kept conditions all complete still succeeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sciagent.report.models import GuardrailChange
from sciagent.workflows.study.guardrails import FittedPlan, Limits, drop_one
from sciagent.workflows.study.live_speed import LiveSpeed
from sciagent.workflows.study.pacing import SHORT_ESTIMATES_TO_DROP, predicted_production_ps
from sciagent.workflows.study.state import ConditionState, StudyState


class SpeedWatch:
    """The running conditions' live speed, and how many estimates in a row said each falls short."""

    def __init__(self) -> None:
        self._live = LiveSpeed()
        self._short: dict[str, int] = {}

    def rate(self, name: str) -> float | None:
        return self._live.rate(name)

    def forget(self, name: str) -> None:
        """A new submission: its samples and its count start again."""
        self._live.forget(name)
        self._short.pop(name, None)

    def clear(self) -> None:
        """After a drop the others' speed changes: the counts start again."""
        self._short.clear()

    def short_of_a_verdict(
        self, running: list[ConditionState], work_root: Path, limits: Limits
    ) -> str | None:
        """Read each running condition's state CSV tail; say why, with the numbers, when one has been
        predicted short of ``limits.min_production_ps`` at its deadline ``SHORT_ESTIMATES_TO_DROP``
        times in a row (a run whose maximum is shorter than that is never the reason: a drop cannot
        help it)."""
        now, minimum = time.time(), limits.min_production_ps
        for condition in running:
            spec = condition.spec
            step = self._live.observe(condition.name, condition.workdir(work_root) / "state.csv", now)
            rate = self._live.rate(condition.name)
            if step is None or rate is None or spec.production_deadline_unix is None:
                continue
            left = spec.production_deadline_unix - now
            predicted = predicted_production_ps(
                step, rate, left, spec.equilibration_steps, spec.production_steps, spec.timestep_fs
            )
            reachable = spec.production_steps * spec.timestep_fs / 1000.0 >= minimum
            count = self._short.get(condition.name, 0) + 1 if reachable and predicted < minimum else 0
            self._short[condition.name] = count
            if count >= SHORT_ESTIMATES_TO_DROP:
                return (
                    f"{condition.name} runs at {rate:.0f} steps/s and will hold about {predicted:.3g} ps at"
                    f" its deadline, {left:.0f} s from now: short of the {minimum:g} ps a verdict needs"
                )
        return None


@dataclass(frozen=True)
class Drop:
    """The conditions to drop, the plan without them, and the change that records it."""

    conditions: list[ConditionState]
    fitted: FittedPlan
    change: GuardrailChange


def next_drop(state: StudyState, limits: Limits, why: str) -> Drop | None:
    """The next step of the fit's order, or None: at ``min_conditions``, or it would drop a run that
    already came back."""
    fitted = state.fitted
    assert fitted is not None
    if len(state.conditions) <= limits.min_conditions:
        return None
    replicas, temperatures = drop_one(fitted.replicas, list(fitted.temperatures_k))
    kept = {(float(t), r) for t in temperatures for r in range(1, replicas + 1)}
    dropped = [c for c in state.conditions if (c.temperature_k, c.replica) not in kept]
    if not dropped or any(c.status not in ("pending", "running") for c in dropped):
        return None
    names = ", ".join(c.name for c in dropped)
    reason = (
        f"{why}; the live estimate drops {names} (the fit's order), so the others get the workers and "
        "the time (with one run per core and none waiting, that helps only on a shared machine)"
    )
    change = GuardrailChange(
        field="conditions",
        proposed={"temperatures_k": list(fitted.temperatures_k), "replicas": fitted.replicas},
        applied={"temperatures_k": temperatures, "replicas": replicas},
        reason=reason,
    )
    update = {"temperatures_k": temperatures, "replicas": replicas}
    return Drop(dropped, fitted.model_copy(update=update), change)
