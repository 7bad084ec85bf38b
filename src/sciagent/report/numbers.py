"""Find the numbers in written text, and the rule for when a written number matches a value.

A language model summarising results can state a number that no run produced, or quote one run's
number as another's. The report cannot stop it, but it can find every number it wrote and check each
against the values of what its sentence is about (``attribution.py``). This module is the part of that
check that knows nothing about studies: how numbers are written, and when one matches a value.

The matching rule (``RULE``, also written into ``results.json``): a number written with *d* decimal
places matches an allowed value *v* when |written - v| ≤ ½·10⁻ᵈ, i.e. when *v* rounds to what was
written (either way at an exact tie, so half-up and half-even writers both pass). Scientific notation
counts its places in the mantissa minus the exponent (``4.0e-4`` has 5 decimals, ``5.8e2`` has -1).
``12%`` is compared as 0.12 (two more decimals) and also as 12. Signs are kept here; the study's
values (``values.py``) include the magnitude of each negative one ("105 K below" is how people write -105).
Thousands separators (``1,385``) are read as one number; ``1.2-1.5`` (hyphen or en dash) as a range
of two; a minus sign may be ASCII or U+2212, a multiplication sign ``x`` or U+00D7.
Not checked: digits inside identifiers (``T300-r1``, ``H2O``), version strings (``8.6.1``) and
markdown list markers at the start of a line. Everything else, small integers included, is checked:
counts the data has (conditions, replicas, temperatures) are among the study's values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

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
    """A written number that matches no value it could stand for, why, and the nearest such value."""

    text: str
    value: float
    start: int
    end: int
    nearest: float | None
    reason: str  # for the reader: "12.3 matches no RMSD value of T300-r1; nearest 1.23"


def find_numbers(text: str) -> list[WrittenNumber]:
    """Every checkable number in ``text``, in order (see the module docstring for what is skipped)."""
    # Where the digits of a list item's "3. " or "3) " end: just before its "." or ")".
    markers = {m.end() - 2 for m in _LIST_MARKER.finditer(text)}
    parsed = (
        _parse(match)
        for match in _NUMBER.finditer(text)
        if not match["version"] and match.end() not in markers
    )
    return [number for number in parsed if number is not None]


def _parse(match: re.Match[str]) -> WrittenNumber | None:
    """The number ``match`` found; None for one beyond a float's range (``4e999`` in a hex id)."""
    frac = match["frac"] or ""
    exponent_text = match["exp"] or match["caret"] or (match["sup"] or "").translate(_SUPERSCRIPT)
    exponent = int(exponent_text.replace(MINUS_SIGN, "-")) if exponent_text else 0
    mantissa = float(f"{match['int'].replace(',', '')}.{frac or '0'}")
    value = -mantissa if match["sign"] in ("-", MINUS_SIGN) else mantissa
    try:
        scaled = value * 10.0**exponent
    except OverflowError:
        return None
    return WrittenNumber(
        text=match.group(0).strip(),
        value=scaled,
        decimals=len(frac) - exponent,
        percent=bool(match["percent"]),
        start=match.start(),
        end=match.end(),
    )


def matches(number: WrittenNumber, allowed: Iterable[float]) -> bool:
    """Whether ``number`` is some allowed value written to its precision (the module's rule)."""
    candidates = list(readings(number))
    return any(_close(value, decimals, a) for a in allowed for value, decimals in candidates)


def readings(number: WrittenNumber) -> Iterator[tuple[float, int]]:
    """The values a written number may stand for: n% is n/100 (two more decimals), or n itself."""
    if number.percent:
        yield number.value / 100.0, number.decimals + 2
    yield number.value, number.decimals


def _close(value: float, decimals: int, allowed: float) -> bool:
    tolerance = 0.5 * 10.0**-decimals
    slack = 1e-9 * max(abs(value), abs(allowed))  # binary floats: 0.1 + 0.2 still "equals" 0.3
    return abs(value - allowed) <= tolerance + slack


def segments(text: str, flagged: Iterable[FlaggedNumber]) -> list[tuple[str, FlaggedNumber | None]]:
    """Split ``text`` into (piece, its flag or None) so a template can mark flagged numbers, escape all."""
    pieces: list[tuple[str, FlaggedNumber | None]] = []
    position = 0
    for number in sorted(flagged, key=lambda f: f.start):
        pieces.append((text[position : number.start], None))
        pieces.append((text[number.start : number.end], number))
        position = number.end
    pieces.append((text[position:], None))
    return [(piece, flag) for piece, flag in pieces if piece]
