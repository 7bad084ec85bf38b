"""The values a study's goal states, held against the model's plan: the user's own numbers win.

A model asked for "300 K and 400 K" may plan 300 K and 450 K. The goal is read deterministically
(``agent/stated.py``); a plan value that contradicts it is replaced, and the change recorded with its
reason like any guardrail change. Temperatures are held exactly: the plan runs the goal's temperatures
and no others (a goal naming none leaves the model's choice). The budget may still drop runs later;
a stated temperature it drops is named in the report with the reason (:func:`dropped_by_the_fit`).

A study varies temperature and nothing else, so a goal that states more than one length, pH or
pressure, a temperature no simulation can run, or a vacuum, is refused before the model is asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from sciagent.agent.stated import stated_values
from sciagent.errors import UserError
from sciagent.report.models import GuardrailChange
from sciagent.science.spec import MDSpec
from sciagent.workflows.study.guardrails import FittedPlan
from sciagent.workflows.study.plans import HeldPlan, StudyPlan


@dataclass(frozen=True)
class GoalValues:
    """What the goal states that a study holds; empty/None where it states nothing."""

    temperatures_k: tuple[float, ...] = ()
    production_ps: float | None = None
    ph: float | None = None
    pressure_bar: float | None = None
    solvent: str | None = None  # "implicit" | "explicit"
    replicas: int | None = None


def goal_values(goal: str) -> GoalValues:
    """Read ``goal`` for the values a study holds.

    Raises:
        UserError: the goal states what one study cannot run (several lengths, pH values or pressures,
            a temperature outside what a simulation takes, or a vacuum).
    """
    stated = stated_values(goal)
    for name, values, unit in (
        ("lengths", stated.lengths_ps, " ps"),
        ("pH values", stated.ph, ""),
        ("pressures", stated.pressures_bar, " bar"),
    ):
        if len(values) > 1:
            listed = ", ".join(f"{v:g}{unit}" for v in values)
            raise UserError(
                f"the goal states {len(values)} {name} ({listed}); a stability study compares temperatures "
                "at one of each: name one, and run a study per value"
            )
    if stated.solvent == "vacuum":
        raise UserError(
            "the goal asks for a vacuum; a stability study runs in implicit or explicit solvent: "
            "drop the vacuum from the goal, or simulate in vacuum with `sciagent ask`"
        )
    values = GoalValues(
        temperatures_k=stated.temperatures_k,
        production_ps=stated.lengths_ps[0] if stated.lengths_ps else None,
        ph=stated.ph[0] if stated.ph else None,
        pressure_bar=stated.pressures_bar[0] if stated.pressures_bar else None,
        solvent=stated.solvent,  # a vacuum was refused above
        replicas=stated.replicas,
    )
    _check_runnable(values)
    return values


def hold_goal(plan: StudyPlan, goal: GoalValues) -> tuple[StudyPlan, list[GuardrailChange]]:
    """``plan`` with every value the goal states in place of the model's, and a change for each replaced."""
    changes: list[GuardrailChange] = []
    if goal.temperatures_k:
        held = HeldPlan(
            **plan.model_dump(exclude={"stated_temperatures_k"}),
            stated_temperatures_k=list(goal.temperatures_k),
        )
        if held.temperatures_k != plan.temperatures_k:
            changes.append(_stated("temperatures_k", plan.temperatures_k, held.temperatures_k, _kelvin(goal)))
        plan = held
    update: dict[str, object] = {}
    for field, value, words in (
        ("production_ps", goal.production_ps, f"{goal.production_ps:g} ps" if goal.production_ps else ""),
        ("solvent", goal.solvent, f"{goal.solvent} solvent"),
        ("replicas", goal.replicas, f"{goal.replicas} replica(s)"),
    ):
        if value is not None and getattr(plan, field) != value:
            changes.append(_stated(field, getattr(plan, field), value, words))
            update[field] = value
    return plan.model_copy(update=update), changes


def with_held_conditions(fitted: FittedPlan, goal: GoalValues) -> FittedPlan:
    """The fitted plan with the goal's pH and pressure, which every run of the study takes."""
    return fitted.model_copy(update={"ph": goal.ph, "pressure_bar": goal.pressure_bar})


def dropped_by_the_fit(
    goal: GoalValues, fitted: FittedPlan, changes: list[GuardrailChange]
) -> list[GuardrailChange]:
    """A change naming each stated temperature the budget fit dropped, with the fit's own reason."""
    dropped = [t for t in goal.temperatures_k if float(t) not in fitted.temperatures_k]
    if not dropped:
        return []
    reasons = [c.reason for c in changes if c.field == "conditions"]
    reason = (
        f"the goal states {_kelvin(goal)}, but {', '.join(f'{t:g} K' for t in dropped)} could not be run: "
        + ("; ".join(reasons) or "the budget could not fit them")
        + "; raise --budget to run every stated temperature"
    )
    return [GuardrailChange(field="stated temperatures", proposed=sorted(goal.temperatures_k),
                            applied=fitted.temperatures_k, reason=reason)]  # fmt: skip


def _stated(field: str, proposed: object, applied: object, words: str) -> GuardrailChange:
    reason = f"the goal states {words}: the user's values replace the model's"
    return GuardrailChange(field=field, proposed=proposed, applied=applied, reason=reason)


def _kelvin(goal: GoalValues) -> str:
    names = [f"{t:g} K" for t in goal.temperatures_k]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _check_runnable(values: GoalValues) -> None:
    """Refuse a stated value no simulation can take: the bounds are the run spec's own."""
    for temperature in values.temperatures_k or (None,):
        fields = {"temperature_k": temperature, "ph": values.ph, "pressure_bar": values.pressure_bar}
        try:
            MDSpec(structure="goal", **{k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            error = exc.errors()[0]
            raise UserError(
                f"the goal states {error['loc'][0]} {error['input']:g}, which no simulation can take "
                f"({error['msg'].lower()}): correct it in the goal"
            ) from None
