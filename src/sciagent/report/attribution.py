"""Check each number of a text against the condition and quantity its sentence is about.

A number that appears somewhere in a study is not yet a true statement: "the 300 K run reached 4.2 Å"
is wrong if 4.2 Å was the 400 K run's RMSD. So the check works sentence by sentence:

1. The text is split into sentences (``sentence_spans``): at ``.``, ``!`` or ``?`` followed by space
   and anything but a lowercase letter, at blank lines, and before markdown list items.
2. Each sentence names conditions (``mentions``): by name (``T300-r1``); by temperature
   (``300 K``, ``300K``, ``300-K``, ``300 and 400 K``, ``at 300``, ``T300``: every replica at that
   temperature, unless the sentence names one of them, as in "at 400 K (T400-r1)"); as ``the
   reference`` / ``physiological`` / ``baseline`` (the reference temperature's conditions; "reference
   structure" and the like do not count) or ``elevated`` / ``higher temperature(s)`` / ``hotter``
   (all the others).
3. Each sentence names quantities by word or unit (``metrics.metrics_in_text``: RMSD, ``Å``, helix,
   ``kJ``, drift ...), read from the sentence without the words that named its conditions (so "at
   300 K" is not a statement about temperature, while "a mean of 301 K" is).
4. A number must match (``numbers.RULE``) a study value (counts, temperatures, plan, guardrails,
   thresholds, budget: allowed everywhere), or a value of one of the named conditions that holds one
   of the named quantities, or, when a sentence names two or more conditions, the difference between
   two of them in one field ("2.8 Å higher than at 300 K"). A sentence that names no condition may
   cite any condition's values of its quantities; one that names no quantity, any value of its
   conditions; one that names neither, any value of the study. A value whose field names no quantity
   (a replica number, a number in a failure message) counts for every quantity of its named condition.

Attribution is per sentence, not per clause: "1.2 Å at 300 K and 4.2 Å at 400 K" accepts either number
for either temperature. Everything is computed from the record, so ``sciagent report RUN`` recomputes
the same check from ``results.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

from pydantic import BaseModel

from sciagent.report.metrics import metrics_in_text
from sciagent.report.numbers import RULE, FlaggedNumber, find_numbers, matches
from sciagent.report.tables import format_number
from sciagent.report.values import Value, ValuePool

ATTRIBUTION = "the condition and metric each sentence names"

_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"')\]*_]*\s+(?=[^\sa-z])"  # end of a sentence, unless a lowercase word goes on
    r"|\n[ \t]*\n"  # a blank line
    r"|\n(?=[ \t]*(?:[-*•+]|\d+[.)])[ \t])"  # a list item
)
_TEMPERATURE_LIST = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?:\s*(?:,|and|or|to|\u2013|-)\s*\d+(?:\.\d+)?)*\s?-?K\b"
)
_AT_TEMPERATURE = re.compile(
    r"\bat (\d+(?:\.\d+)?)(?![\d.])(?!\s?(?:Å|nm|ps|ns|fs|%|kJ|steps?\b|frames?\b|s\b))", re.IGNORECASE
)
_T_NAME = re.compile(r"(?<![\w-])T(\d+(?:\.\d+)?)(?![\w.])")
_REFERENCE = re.compile(
    r"\breference\b(?!\s+(?:structure|frame|coordinates|conformation|geometry|state|pdb))"
    r"|physiological|\bbaseline\b",
    re.IGNORECASE,
)
_ELEVATED = re.compile(r"\belevated\b|\bhigh(?:er)?[- ]temperatures?\b|\bhotter\b", re.IGNORECASE)


class NumberCheck(BaseModel):
    """How many numbers a text holds, which of them are not attributable, and how that was decided."""

    checked: int
    attributed: int  # numbers that match a value of the conditions and quantities their sentence names
    flagged: list[FlaggedNumber]
    rule: str = RULE
    attribution: str = ATTRIBUTION

    def summary(self) -> str:
        """One sentence for the report: what was checked, against what, and how many were flagged."""
        noun = "number" if self.checked == 1 else "numbers"
        return f"{self.checked} {noun} checked against {self.attribution}; {len(self.flagged)} flagged."


@dataclass(frozen=True)
class _Scope:
    """What one sentence is about, and the values it may cite besides the study values."""

    conditions: tuple[str, ...]
    metrics: frozenset[str]
    values: tuple[float, ...]
    nearest_candidates: tuple[float, ...]  # the values holding the named quantities, to show the nearest

    def describe(self) -> str:
        """For a flag's reason: "RMSD value of T300-r1", "value of any condition"."""
        what = f"{' or '.join(sorted(self.metrics))} value" if self.metrics else "value"
        whose = " or ".join(self.conditions) if self.conditions else "any condition"
        return f"{what} of {whose}"


def check_text(text: str, pool: ValuePool) -> NumberCheck:
    """Check every number of ``text`` against what its sentence names (see the module docstring)."""
    study = [v.value for v in pool.values if v.condition is None]
    numbers = find_numbers(text)
    flagged, attributed = [], 0
    for start, end in sentence_spans(text):
        inside = [n for n in numbers if start <= n.start < end]
        if not inside:
            continue
        scope = _scope(text[start:end], pool)
        for number in inside:
            if matches(number, scope.values):
                attributed += 1
                continue
            if matches(number, study):
                continue
            candidates = scope.nearest_candidates
            if number.decimals > 0:  # 9.876 was not meant as a count: show the nearest measured value
                candidates = tuple(v for v in candidates if not v.is_integer()) or candidates
            nearest = min(candidates, key=lambda v: abs(v - number.value)) if candidates else None
            reason = (
                f"{number.text} matches no {scope.describe()}; nearest {format_number(nearest)}"
                if nearest is not None
                else f"{number.text}: there is no {scope.describe()} to match"
            )
            flagged.append(
                FlaggedNumber(
                    text=number.text,
                    value=number.value,
                    start=number.start,
                    end=number.end,
                    nearest=nearest,
                    reason=reason,
                )
            )
    return NumberCheck(checked=len(numbers), attributed=attributed, flagged=flagged)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, in order; whitespace-only pieces are left out."""
    spans, position = [], 0
    for boundary in _SENTENCE_END.finditer(text):
        spans.append((position, boundary.start()))
        position = boundary.end()
    spans.append((position, len(text)))
    return [(start, end) for start, end in spans if text[start:end].strip()]


def mentions(sentence: str, pool: ValuePool) -> tuple[tuple[str, ...], str]:
    """The conditions a sentence names (in report order), and the sentence without the words naming them.

    The remainder is what the sentence's quantities are read from: "at 300 K" names a condition, and
    is not a statement about temperature, while "a mean of 301 K" is.
    """
    named: set[str] = set()
    rest = sentence
    for condition in pool.conditions:
        pattern = re.compile(rf"(?<![\w-]){re.escape(condition.name)}(?![\w-])")
        if pattern.search(rest):
            named.add(condition.name)
            rest = pattern.sub(" ", rest)  # so T300-r1 does not also name every replica at 300 K
    simulated = {c.temperature_k for c in pool.conditions}
    # "At 400 K (T400-r1)": a temperature beside a condition's name is that condition's, not its replicas'.
    by_name = {c.temperature_k for c in pool.conditions if c.name in named}
    for pattern in (_AT_TEMPERATURE, _T_NAME, _TEMPERATURE_LIST):
        for mention in list(pattern.finditer(rest)):
            temperatures = {float(t) for t in re.findall(r"\d+(?:\.\d+)?", mention.group(0))} & simulated
            if temperatures:
                named |= {c.name for c in pool.conditions if c.temperature_k in temperatures - by_name}
                rest = rest.replace(mention.group(0), " ", 1)
    if pool.reference_k is not None:
        if _REFERENCE.search(rest):
            named |= {c.name for c in pool.conditions if c.temperature_k == pool.reference_k}
        if _ELEVATED.search(rest):
            named |= {c.name for c in pool.conditions if c.temperature_k != pool.reference_k}
    return tuple(c.name for c in pool.conditions if c.name in named), rest


def _scope(sentence: str, pool: ValuePool) -> _Scope:
    """The sentence's conditions and quantities, and the condition values (and differences) they allow."""
    conditions, rest = mentions(sentence, pool)
    metrics = metrics_in_text(rest)
    chosen = [v for v in pool.values if v.condition is not None and _in_scope(v, conditions, metrics)]
    values = [v.value for v in chosen] + (_differences(chosen) if len(conditions) > 1 else [])
    # The nearest value shown in a flag is one of the named quantity's own fields where there is one,
    # not a count from a reason's prose ("5 block means").
    held = [v for v in chosen if v.field != "reason" and (not metrics or v.metrics & metrics)]
    nearest = [v.value for v in held] + (_differences(held) if len(conditions) > 1 else [])
    return _Scope(conditions, metrics, tuple(values), tuple(nearest or values))


def _in_scope(value: Value, conditions: tuple[str, ...], metrics: frozenset[str]) -> bool:
    """Whether a condition value belongs to what a sentence names.

    A value whose field names no quantity (a replica number, a number in a failure message without a
    unit) cannot be mistaken for another quantity, so it is in scope when its condition is named.
    """
    if conditions and value.condition not in conditions:
        return False
    return not metrics or bool(value.metrics & metrics) or (not value.metrics and bool(conditions))


def _differences(values: Iterable[Value]) -> list[float]:
    """Both signs of the difference between two conditions' values of one field ("2.8 Å higher")."""
    by_field: dict[str, list[Value]] = {}
    for value in values:
        if value.field != "reason":  # numbers from prose have no field to pair them by
            by_field.setdefault(value.field, []).append(value)
    found = []
    for same_field in by_field.values():
        for a, b in combinations(same_field, 2):
            if a.condition != b.condition:
                found += [a.value - b.value, b.value - a.value]
    return found
