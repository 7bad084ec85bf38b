"""Make JSON schemas say to llama.cpp's grammar what they say to a validator.

llama.cpp turns a JSON schema into a GBNF grammar that constrains decoding, token by token. Its
converter (``llama_cpp.llama_grammar.json_schema_to_gbnf`` in llama-cpp-python 0.3.x) covers types,
enums, objects, arrays, string lengths and anchored patterns, but:

- it ignores ``minimum`` / ``maximum``: asked for an integer >= 250 a model answered 150. Small
  bounded integer ranges therefore become ``enum`` lists, which the grammar does enforce. Ranges wider
  than ``MAX_ENUM_INTEGERS`` keep their bounds and no grammar help: a JSON schema cannot give an
  integer a digit pattern, and a huge alternation slows every sampling step. Validation after decoding
  (pydantic) catches what the grammar let through, and the structured-output loop re-asks.
- an unanchored pattern or one with ``(?...)`` groups makes the converter raise, and llama-cpp-python
  then silently falls back to "any JSON" for the *whole* schema; a pattern with a backslash escape
  (``\\d``, ``\\.``) converts into a grammar the C parser rejects, which crashes the process. Such
  patterns are dropped here; validation after decoding still enforces them.
- a string ``maxLength`` becomes one nested optional rule per character, and llama.cpp's grammar
  parser refuses a few hundred of them ("exceeds sane defaults"). Lengths above
  ``MAX_GRAMMAR_STRING_LENGTH`` are dropped from the grammar; validation still enforces them.
- an empty schema ``{}`` (pydantic's ``Any``) becomes "any *object*", ``items: {}`` raises, and a
  schema with only a title raises: these become an explicit "any JSON value" union.

Everything else passes through unchanged. The rewrite is a pure function on plain dicts, so it is
tested without loading a model.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

logger = logging.getLogger(__name__)

MAX_ENUM_INTEGERS = 64
"""Integer ranges with at most this many values become enums; wider ones keep their bounds."""

MAX_GRAMMAR_STRING_LENGTH = 64
"""String length bounds above this are left to validation after decoding."""

ANY_VALUE: dict[str, Any] = {"type": ["string", "number", "boolean", "object", "array", "null"]}
"""What an unconstrained schema means, spelled so that the converter allows every JSON value."""

# Keywords whose values are one schema, a list of schemas, or a name -> schema mapping.
_SCHEMA_KEYS = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames")
_SCHEMA_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAP_KEYS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")

# Keywords that tell the converter what to generate when "type" is absent.
_SHAPE_KEYS = frozenset(
    {
        "type",
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "const",
        "enum",
        "properties",
        "additionalProperties",
        "items",
        "prefixItems",
        "pattern",
        "format",
    }
)
_INTEGER_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def grammar_friendly_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``schema`` so that llama.cpp's grammar enforces as much of it as it can.

    Small bounded integers become enums, patterns the converter cannot handle are dropped, and
    unconstrained sub-schemas become an explicit any-value union (see the module docstring for why).

    Args:
        schema: a JSON schema, e.g. ``SomeModel.model_json_schema()``. It is not modified.

    Returns:
        A new schema that accepts no value the original rejects, except where a dropped pattern or a
        wide integer range leaves the check to validation after decoding.
    """
    return _rewrite(copy.deepcopy(schema))


def _rewrite(node: Any) -> Any:
    """Rewrite one schema node (a dict or a boolean schema) and its sub-schemas, in place."""
    if node is True:
        return dict(ANY_VALUE)
    if not isinstance(node, dict):
        return node
    for key in _SCHEMA_KEYS:
        if key in node:
            node[key] = _rewrite(node[key])
    for key in _SCHEMA_LIST_KEYS:
        if isinstance(node.get(key), list):
            node[key] = [_rewrite(item) for item in node[key]]
    for key in _SCHEMA_MAP_KEYS:
        if isinstance(node.get(key), dict):
            node[key] = {name: _rewrite(sub) for name, sub in node[key].items()}
    _drop_unsafe_pattern(node)
    _drop_long_string_bounds(node)
    _integer_range_to_enum(node)
    if not _SHAPE_KEYS.intersection(node):
        node.update(copy.deepcopy(ANY_VALUE))
    return node


def _drop_unsafe_pattern(node: dict[str, Any]) -> None:
    """Remove a ``pattern`` the converter would reject or turn into an invalid grammar."""
    pattern = node.get("pattern")
    if not isinstance(pattern, str):
        return
    anchored = pattern.startswith("^") and pattern.endswith("$") and len(pattern) >= 2
    if anchored and "(?" not in pattern and "\\" not in pattern:
        return
    logger.debug("dropping pattern %r from the grammar; validation after decoding enforces it", pattern)
    del node["pattern"]


def _drop_long_string_bounds(node: dict[str, Any]) -> None:
    """Remove string length bounds too long for llama.cpp's grammar parser."""
    for key in ("maxLength", "minLength"):
        if _is_number(node.get(key)) and node[key] > MAX_GRAMMAR_STRING_LENGTH:
            logger.debug(
                "dropping %s=%s from the grammar; validation after decoding enforces it", key, node[key]
            )
            del node[key]


def _integer_range_to_enum(node: dict[str, Any]) -> None:
    """Turn a bounded integer with at most ``MAX_ENUM_INTEGERS`` values into an ``enum``."""
    if node.get("type") != "integer" or "enum" in node or "const" in node:
        return
    low, high = _integer_bounds(node)
    if low is None or high is None or not 0 < high - low + 1 <= MAX_ENUM_INTEGERS:
        return
    step = node.get("multipleOf")
    values = [v for v in range(low, high + 1) if not _is_number(step) or v % step == 0]
    if not values:
        return  # unsatisfiable as written: leave it for validation to report, not an empty grammar
    for key in _INTEGER_BOUND_KEYS:
        node.pop(key, None)
    node["enum"] = values


def _integer_bounds(node: dict[str, Any]) -> tuple[int | None, int | None]:
    """The smallest and largest integer the bounds allow (``None`` where unbounded).

    Handles both the numeric ``exclusiveMinimum`` of JSON schema 2020-12 (what pydantic writes) and
    the boolean one of draft 4.
    """
    lows: list[int] = []
    highs: list[int] = []
    minimum, maximum = node.get("minimum"), node.get("maximum")
    ex_min, ex_max = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if _is_number(minimum):
        lows.append(math.floor(minimum) + 1 if ex_min is True else math.ceil(minimum))
    if _is_number(ex_min):
        lows.append(math.floor(ex_min) + 1)
    if _is_number(maximum):
        highs.append(math.ceil(maximum) - 1 if ex_max is True else math.floor(maximum))
    if _is_number(ex_max):
        highs.append(math.ceil(ex_max) - 1)
    return (max(lows) if lows else None, min(highs) if highs else None)


def _is_number(value: Any) -> bool:
    """True for ints and finite floats, False for bools (which are ints in Python) and the rest."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
