"""What a model reads of a tool call, and which numbers in an answer no tool result holds.

Kept apart from the loop: the same wording serves a live call and one replayed from the journal on
resume, and number attribution is shared with the session report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ResultField:
    """One value of a tool result that an answer may quote: the planner's answer is composed of these.

    Attributes:
        key: ``tool.path`` (``structure_info.total_atoms``, ``compare_runs.rows.0.values.rmsf``): what a
            model picks.
        label: how the sentence names it (``total_atoms``, ``sim-1 rmsf``, ``number of chains``): list
            items are named by their own id, never by an index (a written ``0`` would be a number no
            result holds).
        value: the value as written (numbers rounded as ``written_number`` does).
        unit: its unit where the result says it (a ``unit`` beside it, a ``units`` table, a ``_k`` name).
        words: what it is about, for ranking against a question: its name and its parent's in the
            result (``secondary_structure helix``), and what the result says it is about (its ``name``,
            ``SASA``, or ``metric``).
    """

    key: str
    label: str
    value: str
    unit: str
    words: str


_ABOUT = ("unit", "units", "name", "metric")  # what a result says about its values, not values
_LIST_MOST = 20  # a longer list of values is a series: its summary fields (mean, last) stand for it
_ITEM_NAMES = ("label", "task_id", "chain_id", "name")  # what names a list item in a sentence
_SUFFIX_UNITS = {"_k": "K", "_ps": "ps", "_ns": "ns", "_fs": "fs", "_bar": "bar", "_s": "s"}


def result_fields(tool: str, result: dict[str, Any]) -> list[ResultField]:
    """Every quotable value of one result: numbers, short strings, short lists, the size of lists of
    records (``number of chains``); long series (lists longer than ``_LIST_MOST``), absolute paths and
    what describes the values (their ``name``, ``unit``, ``metric``) are left out."""
    fields: list[ResultField] = []

    def walk(
        value: Any, path: list[str], label: list[str], unit: str, units: dict[str, Any], about: str
    ) -> None:
        name = path[-1] if path else ""
        if isinstance(value, dict):
            unit = value["unit"] if isinstance(value.get("unit"), str) else unit
            units = value["units"] if isinstance(value.get("units"), dict) else units
            about += "".join(f" {value[k]}" for k in ("name", "metric") if isinstance(value.get(k), str))
            for key, item in value.items():
                if key not in _ABOUT:
                    walk(item, [*path, key], [*label, key], unit, units, about)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            add(path, ["number of", *label], str(len(value)), "", about)
            one = name[:-1] if name.endswith("s") else name  # "chains" -> "chain A"
            for index, item in enumerate(value[:8]):
                named = next((k for k in _ITEM_NAMES if isinstance(item.get(k), str | int)), None)
                shown = {k: v for k, v in item.items() if k != named}
                walk(shown, [*path, str(index)], [one, str(item[named]) if named else ""], unit, units, about)
        elif isinstance(value, list) and len(value) <= _LIST_MOST:
            shown = ", ".join(str(item) for item in value) if value else "none"
            add(path, label, shown, "", about)
        elif isinstance(value, bool):
            add(path, label, "yes" if value else "no", "", about)
        elif isinstance(value, int | float):
            suffix = next((u for s, u in _SUFFIX_UNITS.items() if name.endswith(s)), "")
            add(path, label, written_number(value), str(units.get(name, unit or suffix)), about)
        elif isinstance(value, str) and len(value) <= 200 and not value.startswith("/"):
            add(path, label, value, "", about)  # an absolute path is where a file lies, not an answer

    def add(path: list[str], label: list[str], value: str, unit: str, about: str) -> None:
        key = ".".join([tool, *path])
        names = [part for part in path if not part.isdigit()][-2:]
        words = f"{' '.join(names)} {about}".replace("_", " ")
        fields.append(ResultField(key, " ".join(filter(None, label)).replace("_", " "), value, unit, words))

    walk(result, [], [], "", {}, "")
    return fields


def written_number(value: float) -> str:
    """A result's number as an answer writes it: integers whole, others to 4 significant digits (0.2368,
    3.142, 1235.4), which the eval's rounding rule and ``unattributed_numbers`` both accept."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
