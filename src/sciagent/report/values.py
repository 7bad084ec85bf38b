"""Every number a study produced, tagged with the condition and the quantity it belongs to.

The number check (``attribution.py``) asks of each number a model wrote: is it a value *of the
condition and quantity its sentence is about*? That needs the study's numbers tagged, which is what
``study_values`` does. Two kinds of value:

- **condition values**, tagged with their condition and the quantities their field name says
  (``metrics.metrics_of_field``): the results-table row, the run result, the spec, the analysis
  (its per-frame series left out: with hundreds of values any number would match one of them), the
  numbers in the verdict reasons and failure notes the report prints (tagged by their own words), the
  adaptations, and simulated time in ps as well as ns;
- **study values**, which any sentence may cite: counts (conditions, completed, failed, not run,
  verdicts of each kind, temperatures, replicas, adaptations, guardrail changes), the temperatures
  themselves, every plan value, the guardrail changes, the verdict thresholds, the budget (in seconds
  and minutes), the phase wall times, the time breakdown (worker-seconds, seconds per worker and
  shares of each part) and the verdict outlook.

A negative value also stands for its magnitude, because "105 K below the target" is how people write
-105. Model-written text (rationale, interpretation) is never a source, so it cannot vouch for itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sciagent.report.metrics import metrics_in_text, metrics_of_field
from sciagent.report.models import TIME_PARTS, ConditionRecord, StudyRecord, TimeBreakdown
from sciagent.report.numbers import find_numbers, readings
from sciagent.report.tables import ConditionRow, condition_rows

SECONDS_PER_MINUTE = 60.0
PS_PER_NS = 1000.0
_RESULT_NUMBERS = {
    "steps_completed",
    "production_steps_completed",
    "failed_at_step",
    "simulated_ns",
    "ns_per_day",
    "resumed_from_step",
    "wall_time_s",
}


@dataclass(frozen=True)
class Value:
    """One number of the study, and what it is a number of."""

    value: float
    field: str  # where it came from ("analysis.rg_mean_nm"); differences pair values of one field
    condition: str | None  # None: a study value, citable in any sentence
    metrics: frozenset[str]  # the quantities it holds; empty when its name says none


@dataclass(frozen=True)
class ConditionName:
    """How a sentence can name a condition: by name, or by its temperature."""

    name: str
    temperature_k: float


@dataclass(frozen=True)
class ValuePool:
    """A study's tagged values, its conditions in report order, and its reference temperature."""

    values: tuple[Value, ...]
    conditions: tuple[ConditionName, ...]
    reference_k: float | None  # the physiological reference; the other temperatures are "elevated"


def study_values(record: StudyRecord) -> ValuePool:
    """The tagged values of ``record`` (see the module docstring for what is included and why)."""
    rows = condition_rows(record)
    values: list[Value] = []
    for condition, row in zip(record.conditions, rows, strict=True):
        values += _condition_values(record, condition, row)
    values += _study_level(record, rows)
    values += [
        Value(-v.value, f"{v.field} (magnitude)", v.condition, v.metrics) for v in values if v.value < 0
    ]
    conditions = tuple(ConditionName(c.name, c.temperature_k) for c in record.conditions)
    return ValuePool(tuple(values), conditions, reference_temperature(record))


def reference_temperature(record: StudyRecord) -> float | None:
    """The plan's reference temperature when it names one that was simulated, else the lowest one."""
    temperatures = {c.temperature_k for c in record.conditions}
    planned = record.plan.get("reference_temperature_k")
    if isinstance(planned, int | float) and float(planned) in temperatures:
        return float(planned)
    return min(temperatures) if temperatures else None


def _condition_values(record: StudyRecord, condition: ConditionRecord, row: ConditionRow) -> list[Value]:
    """Everything the report shows or holds about one condition, tagged with it."""
    name = row.condition
    fields = _numeric(row.model_dump(exclude={"reasons", "note", "temperature_k", "target_temperature_k"}))
    if row.simulated_ns is not None:
        fields.append(("simulated_ps", row.simulated_ns * PS_PER_NS))
    fields += _numeric(condition.spec.model_dump(mode="json", exclude={"temperature_k"}), "spec.")
    if condition.outcome is not None:
        result = condition.outcome.result.model_dump(include=_RESULT_NUMBERS)
        fields += _numeric(result, "result.")
        analysis = condition.outcome.analysis
        if analysis is not None:
            series = {key for key, value in analysis if isinstance(value, list)}
            dumped = analysis.model_dump(exclude={*series, "thresholds", "target_temperature_k"})
            fields += _numeric(dumped, "analysis.")
    for adaptation in record.adaptations:
        if adaptation.condition == name:
            fields += _numeric(adaptation.model_dump(include={"round", "changes"}), "adaptation.")
    values = [Value(v, path, name, metrics_of_field(path)) for path, v in fields]
    for text in [*row.reasons, row.note or ""]:
        values += [Value(v, "reason", name, metrics_in_text(text)) for v in _written(text)]
    return values


def _study_level(record: StudyRecord, rows: list[ConditionRow]) -> list[Value]:
    """The numbers any sentence may cite: counts, temperatures, plan, guardrails, thresholds, budget."""
    fields = [("count", count) for count in _counts(record, rows)]
    fields += [("temperature_k", c.temperature_k) for c in record.conditions]
    fields += _numeric(record.plan, "plan.")
    fields += _numeric([c.model_dump(include={"proposed", "applied"}) for c in record.guardrail_changes])
    for condition in record.conditions:
        if condition.outcome is not None and condition.outcome.analysis is not None:
            fields += _numeric(condition.outcome.analysis.thresholds, "thresholds.")
    fields += _numeric(record.provenance.phase_wall_times_s, "phase_wall_times_s.")
    if record.time_breakdown is not None:
        fields += _time_values(record.time_breakdown)
    if record.budget_s is not None:
        fields += [("budget_s", record.budget_s), ("budget_min", record.budget_s / SECONDS_PER_MINUTE)]
    if record.outlook is not None:
        outlook = record.outlook
        fields += _numeric(outlook.model_dump(include={"needed_production_ps", "estimated_wall_s"}))
        fields.append(("estimated_wall_min", outlook.estimated_wall_s / SECONDS_PER_MINUTE))
    return [Value(v, path, None, frozenset()) for path, v in fields]


def _time_values(breakdown: TimeBreakdown) -> list[tuple[str, float]]:
    """The time breakdown's numbers as its table prints them: totals, per worker, shares, budget use."""
    fields = _numeric(breakdown.model_dump(mode="json"), "time_breakdown.")
    total = breakdown.capacity + breakdown.overrun
    fields += [("time_breakdown.capacity", breakdown.capacity), ("time_breakdown.all", total)]
    if breakdown.capacity:
        fields.append(("time_breakdown.all_share", total / breakdown.capacity))
    if breakdown.workers:
        parts = {name: getattr(breakdown, name) for name in (*TIME_PARTS, "overrun")}
        fields += [(f"time_breakdown.{name}_per_worker", v / breakdown.workers) for name, v in parts.items()]
        fields.append(("time_breakdown.all_per_worker", total / breakdown.workers))
    return fields


def _written(text: str) -> list[float]:
    """The values of the numbers written in a text the report prints (each reading of a percentage)."""
    return [value for number in find_numbers(text) for value, _ in readings(number)]


def _counts(record: StudyRecord, rows: list[ConditionRow]) -> list[float]:
    statuses = [row.status for row in rows]
    verdicts = [row.verdict for row in rows]
    return [
        float(len(rows)),
        *(float(statuses.count(s)) for s in ("completed", "failed", "not run")),
        *(float(verdicts.count(v)) for v in ("stable", "unstable", "inconclusive")),
        float(len({c.temperature_k for c in record.conditions})),
        float(len({c.replica for c in record.conditions})),
        float(len(record.adaptations)),
        float(len(record.guardrail_changes)),
    ]


def _numeric(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every finite int or float inside nested dicts and lists, with its dotted path.

    Booleans and strings are not numbers; list items keep their list's path.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [(path.rstrip("."), float(value))] if math.isfinite(value) else []
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in _numeric(v, f"{path}{key}.")]
    if isinstance(value, Iterable):
        return [item for v in value for item in _numeric(v, path)]
    return []
