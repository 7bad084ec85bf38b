"""Check the numbers in model-written text against the numbers the study actually produced.

A language model summarising results can state a number that no run produced. The report cannot
stop it writing one, but it can find every number it wrote and flag those that match nothing in
the data, so a reader sees at a glance which statements are backed by the table.

The matching rule (``RULE``, also written into ``results.json``): a number written with *d* decimal
places matches an allowed value *v* when |written - v| ≤ ½·10⁻ᵈ, i.e. when *v* rounds to what was
written (either way at an exact tie, so half-up and half-even writers both pass). Scientific notation
counts its places in the mantissa minus the exponent (``4.0e-4`` has 5 decimals, ``5.8e2`` has -1).
``12%`` is compared as 0.12 (two more decimals) and also as 12. Signs are kept here; ``allowed_numbers``
adds the magnitude of every value, because "105 K below the target" is how people write -105.
Thousands separators (``1,385``) are read as one number; ``1.2-1.5`` (hyphen or en dash) as a range
of two; a minus sign may be ASCII or U+2212, a multiplication sign ``x`` or U+00D7.
Not checked: digits inside identifiers (``T300-r1``, ``H2O``), version strings (``8.6.1``) and
markdown list markers at the start of a line. Everything else, small integers included, is checked:
counts the data has (conditions, replicas, temperatures) are in the allowed set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from sciagent.report.models import StudyRecord
from sciagent.report.tables import ConditionRow, condition_rows

RULE = (
    "a number written with d decimal places matches a value v from the data when |written - v| <= "
    "0.5*10^-d (scientific notation: mantissa decimals minus exponent; n% is also compared as n/100)"
)
MINUS_SIGN = "\u2212"
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_NUMBER = re.compile(
    r"""
    (?<![\w.^])                                  # not inside an identifier, after a point, or a footnote
    (?P<sign>[-+\u2212])?
    (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)        # 1,385 is one number
    (?:\.(?P<frac>\d+))?
    (?:[eE](?P<exp>[-+\u2212]?\d+)
      |\s?[x\u00d7·]\s?10(?:\^\{?(?P<caret>[-+\u2212]?\d+)\}?|(?P<sup>[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)))?
    (?P<version>(?:\.\d+)+)?                     # 8.6.1: a version, not a value
    (?P<percent>\s?%)?
    """,
    re.VERBOSE,
)
_LIST_MARKER = re.compile(r"^[ \t]*\d+[.)][ \t]", re.MULTILINE)


@dataclass(frozen=True)
class WrittenNumber:
    """A number as found in text: its characters, value and the precision it was written with."""

    text: str
    value: float
    decimals: int  # decimal places written; negative for 5.8e2-style numbers
    percent: bool
    start: int
    end: int


class FlaggedNumber(BaseModel):
    """A written number that matches no allowed value, with the nearest value for the reader."""

    text: str
    value: float
    start: int
    end: int
    nearest: float | None


class NumberCheck(BaseModel):
    """How many numbers a text holds, which of them are not in the data, and the rule applied."""

    checked: int
    flagged: list[FlaggedNumber]
    rule: str = RULE


def find_numbers(text: str) -> list[WrittenNumber]:
    """Every checkable number in ``text``, in order (see the module docstring for what is skipped)."""
    # Where the digits of a list item's "3. " or "3) " end: just before its "." or ")".
    markers = {m.end() - 2 for m in _LIST_MARKER.finditer(text)}
    return [
        _parse(match)
        for match in _NUMBER.finditer(text)
        if not match["version"] and match.end() not in markers
    ]


def _parse(match: re.Match[str]) -> WrittenNumber:
    frac = match["frac"] or ""
    exponent_text = match["exp"] or match["caret"] or (match["sup"] or "").translate(_SUPERSCRIPT)
    exponent = int(exponent_text.replace(MINUS_SIGN, "-")) if exponent_text else 0
    mantissa = float(f"{match['int'].replace(',', '')}.{frac or '0'}")
    value = -mantissa if match["sign"] in ("-", MINUS_SIGN) else mantissa
    return WrittenNumber(
        text=match.group(0).strip(),
        value=value * 10.0**exponent,
        decimals=len(frac) - exponent,
        percent=bool(match["percent"]),
        start=match.start(),
        end=match.end(),
    )


def matches(number: WrittenNumber, allowed: Iterable[float]) -> bool:
    """Whether ``number`` is some allowed value written to its precision (the module's rule)."""
    candidates = list(_readings(number))
    return any(_close(value, decimals, a) for a in allowed for value, decimals in candidates)


def _readings(number: WrittenNumber) -> Iterator[tuple[float, int]]:
    """The values a written number may stand for: n% is n/100 (two more decimals), or n itself."""
    if number.percent:
        yield number.value / 100.0, number.decimals + 2
    yield number.value, number.decimals


def _close(value: float, decimals: int, allowed: float) -> bool:
    tolerance = 0.5 * 10.0**-decimals
    slack = 1e-9 * max(abs(value), abs(allowed))  # binary floats: 0.1 + 0.2 still "equals" 0.3
    return abs(value - allowed) <= tolerance + slack


def number_check(text: str, allowed: Iterable[float]) -> NumberCheck:
    """Check every number in ``text`` against ``allowed``; the count and the ones not found."""
    pool = sorted({float(a) for a in allowed if math.isfinite(a)})
    numbers = find_numbers(text)
    flagged = [
        FlaggedNumber(
            text=n.text,
            value=n.value,
            start=n.start,
            end=n.end,
            nearest=min(pool, key=lambda a: abs(a - n.value)) if pool else None,
        )
        for n in numbers
        if not matches(n, pool)
    ]
    return NumberCheck(checked=len(numbers), flagged=flagged)


def check_numbers(text: str, allowed: Iterable[float]) -> list[FlaggedNumber]:
    """The numbers in ``text`` that match no value of ``allowed`` under the module's rule."""
    return number_check(text, allowed).flagged


def segments(text: str, flagged: Iterable[FlaggedNumber]) -> list[tuple[str, bool]]:
    """Split ``text`` into (piece, is_flagged) so a template can mark flagged numbers and escape all."""
    pieces: list[tuple[str, bool]] = []
    position = 0
    for number in sorted(flagged, key=lambda f: f.start):
        pieces.append((text[position : number.start], False))
        pieces.append((text[number.start : number.end], True))
        position = number.end
    pieces.append((text[position:], False))
    return [(piece, flag) for piece, flag in pieces if piece]


def allowed_numbers(record: StudyRecord) -> set[float]:
    """Every number the report shows from the data or the plan, which model text may quote.

    That is: every numeric field of the results table; the numbers in the verdict reasons and failure
    messages the report prints; the analysis values behind the reasons (RMSD slope, frames, standard
    deviations, secondary-structure fractions, thresholds); every numeric value of the plan, of each
    condition's spec, of the guardrail changes and the adaptations; seeds and phase wall times; counts
    (conditions, completed, failed, not run, temperatures, replicas, adaptations, guardrail changes,
    verdicts of each kind); simulated time in ps as well as ns; and the magnitude of each.
    Model-written text (rationale, interpretation) is never a source, so it cannot vouch for itself.
    """
    values: list[float] = []
    rows = condition_rows(record)
    for row in rows:
        values += _numeric(row.model_dump(exclude={"reasons", "note"}))
        values += [row.simulated_ns * 1000.0] if row.simulated_ns is not None else []
        for text in [*row.reasons, row.note or ""]:
            values += [v for n in find_numbers(text) for v, _ in _readings(n)]
    for condition in record.conditions:
        values += _numeric(condition.spec.model_dump(mode="json"))
        if condition.outcome is not None:
            values += _numeric(condition.outcome.result.model_dump(include=_RESULT_NUMBERS))
            if condition.outcome.analysis is not None:
                values += _numeric(condition.outcome.analysis.model_dump(exclude=_ANALYSIS_SERIES))
    values += _numeric(record.plan)
    values += _numeric([c.model_dump(include={"proposed", "applied"}) for c in record.guardrail_changes])
    values += _numeric([a.model_dump(include={"round", "changes"}) for a in record.adaptations])
    values += _numeric(record.provenance.model_dump(include={"seeds", "phase_wall_times_s"}))
    values += _counts(record, rows)
    return {abs(v) for v in values} | set(values)


_RESULT_NUMBERS = {
    "steps_completed",
    "production_steps_completed",
    "failed_at_step",
    "simulated_ns",
    "ns_per_day",
    "resumed_from_step",
    "wall_time_s",
}
_ANALYSIS_SERIES = {"time_ns", "backbone_rmsd_angstrom", "radius_of_gyration_nm", "ca_rmsf_angstrom"}


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


def _numeric(value: Any) -> list[float]:
    """Every finite int or float inside nested dicts and lists; booleans and strings are not numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)] if math.isfinite(value) else []
    if isinstance(value, dict):
        return [v for item in value.values() for v in _numeric(item)]
    if isinstance(value, list | tuple | set):
        return [v for item in value for v in _numeric(item)]
    return []
