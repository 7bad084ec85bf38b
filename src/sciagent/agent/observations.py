"""What a model reads of a tool call, and which numbers in an answer no tool result holds.

Kept apart from the loop: the same wording serves a live call and one replayed from the journal on
resume, and number attribution is shared with the session report.
"""

from __future__ import annotations

import json
from typing import Any

from sciagent.report.numbers import find_numbers, matches

OBSERVATION_CHARS = 6000  # what the model sees of one result; the record keeps it whole
REPEAT_NOTE = "(the same call as step {step}: its result again, not run twice) "


def observation(result: dict[str, Any] | None, error: str | None) -> str:
    """A result as JSON (or the error), cut to ``OBSERVATION_CHARS``: what a native tool message holds."""
    text = error if result is None else json.dumps(result)
    if text and len(text) > OBSERVATION_CHARS:
        return text[:OBSERVATION_CHARS] + f" ... [{len(text) - OBSERVATION_CHARS} more characters cut]"
    return text or ""


def readable(result: dict[str, Any], most: int = 40) -> str:
    """A result as ``name: value`` lines, long lists shortened: what a model without native tool calls
    reads (a small model finds ``total_atoms: 582`` in lines, not in a page of JSON)."""
    lines: list[str] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}.{key}" if name else str(key))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value[:5]):
                walk(item, f"{name}[{index}]")
        elif isinstance(value, list) and len(value) > 8:
            lines.append(f"{name}: {len(value)} values, first {value[0]}, last {value[-1]}")
        else:
            lines.append(f"{name}: {value}")

    walk(result, "")
    return "\n".join(lines[:most])


def unattributed_numbers(answer: str, results: list[dict[str, Any]], question: str = "") -> list[str]:
    """The numbers written in ``answer`` that no tool result of the session (nor the question) holds."""
    allowed: list[float] = []
    for result in results:
        allowed.extend(_numbers_in(result))
    allowed.extend(number.value for number in find_numbers(question))
    return [number.text for number in find_numbers(answer) if not matches(number, allowed)]


def _numbers_in(value: Any) -> list[float]:
    """Every number in a result: numeric fields, and numbers written inside its strings."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [float(value), abs(float(value))]
    if isinstance(value, str):
        return [number.value for number in find_numbers(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers_in(item)]
    return []
