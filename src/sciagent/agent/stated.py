"""The values a user's own words state (temperatures, lengths, pH, pressure, solvent, replicas, names).

A small model copies range bounds and invents conditions; a capable one still picks 450 K when the user
asked for 400 K. What the question states is therefore read from it deterministically and held: the
planner shows these values to the model as fixed, and a study replaces a model value that contradicts
them. Regular expressions and small word tables only, so the same text always gives the same values.
Values keep the order the text gives them, each once; nothing here raises, whatever the text.

How numbers get their meaning:

- a unit right after a number decides (``300 K``, ``300K``, ``27 °C`` = 300.15 K, ``1 ns`` = 1000 ps,
  ``1 atm`` = 1.01325 bar); ``pH`` right before a number decides (``pH 7``, ``pH = 7``);
- a number without a unit, joined to others by a list word (``,``, ``and``, ``or``, ``to``, ``-``),
  takes the unit of its list: ``pH 5 and 8`` (the prefix, first, when the value fits it) and
  ``at 300 and 400 K`` (the unit that ends the list). A range (``300-400 K``) gives its two ends;
- a capital ``K`` is kelvin unless a count follows it (``5K steps`` is five thousand steps, not a
  temperature), and a lower-case ``k`` never is; a number glued to other letters is part of a name
  (``1UBQ``, ``SmolLM2``), not a quantity;
- femtoseconds below 100 fs are the integration timestep, not a length, and so is any time after
  ``every`` or before ``timestep`` (``every 10 ps``, ``a 2 fs time step``);
- values outside what the quantity can be (pH above 14, temperatures at or below 0 K) are not values;
  temperatures within 0.5 K of one already read are the same one (``300 K (27 °C)``).

Solvent: ``implicit``/``explicit``/``vacuum`` from solvent words (``implicit solvent``, ``generalized
Born``, ``TIP3P``, ``in vacuum``, ``gas phase``). ``in water`` (or ``aqueous``, ``solvated``) means
explicit water unless an implicit word is there too (``in implicit water``). A text naming two kinds
(``compare implicit and explicit solvent``) states none, since one value cannot hold both.

Structures are the names :func:`sciagent.science.structures.resolve_structure` knows without a file:
bundled names and their aliases (``villin headpiece`` is ``villin``), common protein names
(``T4 lysozyme`` is ``t4-lysozyme``) and four-character PDB ids, which start with a digit (``1UBQ``;
``300K``, ``10ns`` and ``21st`` are not ids). File names are listed under ``files``, not ``structures``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from sciagent.science.structures import BUNDLED_ALIASES, BUNDLED_STRUCTURES, PROTEIN_PDB_IDS


@dataclass(frozen=True)
class StatedValues:
    """What a text states, in canonical units (K, ps, bar); empty where it states nothing."""

    temperatures_k: tuple[float, ...] = ()
    lengths_ps: tuple[float, ...] = ()
    ph: tuple[float, ...] = ()
    pressures_bar: tuple[float, ...] = ()
    solvent: str | None = None  # "implicit" | "explicit" | "vacuum"
    replicas: int | None = None
    structures: tuple[str, ...] = ()  # bundled names, PDB ids (upper case), known protein names
    files: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()


def stated_values(text: str) -> StatedValues:
    """Read what ``text`` states; see the module docstring for the rules."""
    text = text if isinstance(text, str) else ""
    quantities = _quantities(text)
    return StatedValues(
        temperatures_k=_unique([v for k, v in quantities if k == "temperature"], absolute=0.5),
        lengths_ps=_unique([v for k, v in quantities if k == "length"]),
        ph=_unique([v for k, v in quantities if k == "ph"]),
        pressures_bar=_unique([v for k, v in quantities if k == "pressure"]),
        solvent=_solvent(text),
        replicas=_replicas(text),
        structures=_structures(text),
        files=tuple(dict.fromkeys(m.group(1) for m in _FILE.finditer(text))),
        task_ids=tuple(dict.fromkeys(m.group(0).lower() for m in _TASK_ID.finditer(text))),
    )


# --- numbers and their units --------------------------------------------------------------------------

_NUMBER = re.compile(  # \u2212 is the minus sign
    r"(?<![\w.,])(?<![A-Za-z_][-\u2212])([-\u2212](?=\d))?(\d{1,3}(?:,\d{3})+(?![\d,])|\d+(?:\.\d+)?)"
)


@dataclass(frozen=True)
class _Unit:
    kind: str
    pattern: re.Pattern[str]
    convert: Callable[[float], float]


def _scale(factor: float) -> Callable[[float], float]:
    return lambda value: value * factor


_COUNT_NOUN = re.compile(
    r"\s*(?:steps?|atoms?|frames?|residues?|iterations?|samples?|molecules?|waters?|particles?|tokens?"
    r"|conformations?|structures?|snapshots?|configurations?)\b",
    re.IGNORECASE,
)
_UNITS = (
    _Unit(
        "temperature",
        re.compile(
            r"\s?[°º˚]\s?C(?![\w])|\s*(?:degrees?|deg\.?)\s*(?:C\b|(?i:celsius|centigrade)\b)"
            r"|\s*(?i:celsius)\b"
        ),
        lambda c: round(c + 273.15, 6),
    ),
    _Unit("temperature", re.compile(r"\s*[°º˚]?\s*K(?![\w+-])|\s*(?i:kelvins?)\b"), _scale(1.0)),
    _Unit("length", re.compile(r"\s*(?:ps\b|(?i:picoseconds?)\b)"), _scale(1.0)),
    _Unit("length", re.compile(r"\s*(?:ns\b|(?i:nanoseconds?)\b)"), _scale(1000.0)),
    _Unit("length", re.compile(r"\s*(?:[µμ]s\b|(?i:microseconds?)\b)"), _scale(1_000_000.0)),
    _Unit("length", re.compile(r"\s*(?:fs\b|(?i:femtoseconds?)\b)"), _scale(0.001)),
    _Unit("pressure", re.compile(r"\s*(?i:bars?)\b"), _scale(1.0)),
    _Unit("pressure", re.compile(r"\s*(?:atm\b|(?i:atmospheres?)\b)"), _scale(1.01325)),
    _Unit("pressure", re.compile(r"\s*MPa\b"), _scale(10.0)),
    _Unit("pressure", re.compile(r"\s*kPa\b"), _scale(0.01)),
    _Unit("pressure", re.compile(r"\s*GPa\b"), _scale(10_000.0)),
)
_PH_BEFORE = re.compile(r"(?<![A-Za-z])[pP][hH]\s*(?:(?:of|=|:|value\s+of)\s*)?$")
_TEMPERATURE_BEFORE = re.compile(r"(?:\b(?i:temperatures?)\s*(?:(?:of|=|:|at|is)\s*)?|\bT\s*=\s*)$")
_TIMESTEP_BEFORE = re.compile(
    r"(?i:\b(?:every|each)\s+|\b(?:time[\s-]?steps?|step\s*size|dt|intervals?)\s*(?:(?:of|=|:|is)\s*)?)$"
)
_TIMESTEP_AFTER = re.compile(r"\s*(?i:time[\s-]?steps?\b|steps?\b|intervals?\b|integration\b)")
_CONNECTOR = re.compile(
    r"\s*(?:,\s*(?:(?:and|or)\s+)?|(?:and|or|to|through|versus|vs\.?)\s+|[-\u2013\u2014/&]\s*)(?:(?:and\s+)?at\s+)?",
    re.IGNORECASE,
)
_MIN_FS_LENGTH = 100.0  # below this, femtoseconds are an integration timestep


@dataclass
class _Number:
    value: float
    start: int
    end: int  # after the unit, when it has one
    kind: str | None = None
    convert: Callable[[float], float] | None = None
    from_prefix: bool = False


def _quantities(text: str) -> list[tuple[str, float]]:
    """(kind, value in canonical units) for every number whose meaning the text gives, in text order."""
    numbers = [n for n in (_number(text, m) for m in _NUMBER.finditer(text)) if n is not None]
    starts, ends = _list_units(text, numbers)
    found: list[tuple[str, float]] = []
    for i, number in enumerate(numbers):
        # A bare number takes its list's unit: the prefix that starts the list, else the unit ending it.
        candidates = [number] if number.kind is not None else [u for u in (starts[i], ends[i]) if u]
        for unit in candidates:
            assert unit.kind is not None and unit.convert is not None
            value = unit.convert(number.value)
            if _plausible(unit.kind, value, number.value):
                found.append((unit.kind, value))
                break
    return found


def _list_units(text: str, numbers: list[_Number]) -> tuple[list[_Number | None], list[_Number | None]]:
    """For each number, the prefixed number that starts its list and the suffixed one that ends it.

    Two linear passes, so a text of many numbers costs no more than its length.
    """
    joined = [_joined(text, left, right) for left, right in itertools.pairwise(numbers)]
    starts: list[_Number | None] = [None] * len(numbers)
    for i in range(1, len(numbers)):
        left = numbers[i - 1]
        if joined[i - 1]:
            starts[i] = left if left.from_prefix else starts[i - 1] if left.kind is None else None
    ends: list[_Number | None] = [None] * len(numbers)
    for i in range(len(numbers) - 2, -1, -1):
        right = numbers[i + 1]
        if joined[i]:
            ends[i] = ends[i + 1] if right.kind is None else None if right.from_prefix else right
    return starts, ends


def _number(text: str, match: re.Match[str]) -> _Number | None:
    """The number at ``match`` with its own unit, if it has one; None when it belongs to a name."""
    sign = -1.0 if match.group(1) else 1.0
    value = sign * float(match.group(2).replace(",", ""))
    start, end = match.start(), match.end()
    for unit in _UNITS:
        found = unit.pattern.match(text, end)
        if found is None:
            continue
        if unit.kind == "temperature" and _COUNT_NOUN.match(text, found.end()):
            return _Number(value, start, found.end())  # "5K steps": a count, not a temperature
        if unit.kind == "length" and _is_timestep(text, start, found.end(), unit.convert(value)):
            return _Number(value, start, found.end())
        return _Number(value, start, found.end(), unit.kind, unit.convert)
    if end < len(text) and (text[end].isalnum() or text[end] == "_"):
        return None  # "1UBQ", "3D": part of a name
    before = text[max(0, start - 40) : start]
    if _PH_BEFORE.search(before):
        return _Number(value, start, end, "ph", _scale(1.0), from_prefix=True)
    if _TEMPERATURE_BEFORE.search(before):
        return _Number(value, start, end, "temperature", _scale(1.0), from_prefix=True)
    return _Number(value, start, end)


def _is_timestep(text: str, start: int, end: int, picoseconds: float) -> bool:
    if picoseconds < _MIN_FS_LENGTH / 1000.0:
        return True
    return bool(_TIMESTEP_BEFORE.search(text[max(0, start - 40) : start]) or _TIMESTEP_AFTER.match(text, end))


def _joined(text: str, left: _Number, right: _Number) -> bool:
    """Whether only a list word stands between two numbers (the left one must have no unit of its own)."""
    if left.kind is not None and not left.from_prefix:
        return False
    return _CONNECTOR.fullmatch(text, left.end, right.start) is not None


def _plausible(kind: str, value: float, written: float) -> bool:
    if kind == "ph":
        return 0.0 <= value <= 14.0
    if kind == "temperature":
        return 0.0 < value <= 5000.0
    return value > 0.0 and written > 0.0


def _unique(values: list[float], absolute: float = 0.0) -> tuple[float, ...]:
    """First occurrences in order; a value within ``absolute`` (or 1e-6) of an earlier one is it."""
    kept: list[float] = []
    for value in values:
        if not any(abs(value - seen) <= max(absolute, 1e-6 * abs(seen)) for seen in kept):
            kept.append(value)
    return tuple(kept)


# --- words --------------------------------------------------------------------------------------------

_SOLVENT_WORDS = {
    "implicit": re.compile(
        r"\bimplicit(?:ly)?(?:[\s-]+\w+){0,2}?[\s-]+(?:solvent|water|solvation|solvated)\b"
        r"|\b(?:solvent|solvation)\s*(?:model)?\s*(?:[:=]|is)?\s*implicit\b"
        r"|\bgenerali[sz]ed[\s-]born\b|\bGBSA\b|\bOBC2?\b",
        re.IGNORECASE,
    ),
    "explicit": re.compile(
        r"\bexplicit(?:ly)?(?:[\s-]+\w+){0,2}?[\s-]+(?:solvent|water|solvation|solvated)\b"
        r"|\b(?:solvent|solvation)\s*(?:model)?\s*(?:[:=]|is)?\s*explicit\b"
        r"|\bTIP[345]P\b|\bSPC/?E\b|\bwater\s+box\b|\bbox\s+of\s+water\b",
        re.IGNORECASE,
    ),
    "vacuum": re.compile(
        r"\bin\s+vacu(?:o|um)\b|\bvacuum\b|\bgas[\s-]phase\b|\bno\s+solvent\b"
        r"|\bwithout\s+(?:any\s+)?(?:solvent|water)\b|\bunsolvated\b|\bnon-?solvated\b",
        re.IGNORECASE,
    ),
}
_WATER = re.compile(r"\bin\s+(?:\w+\s+)?water\b|\baqueous\b|(?<!non-)(?<!non)\bsolvated\b", re.IGNORECASE)


def _solvent(text: str) -> str | None:
    kinds = {kind for kind, pattern in _SOLVENT_WORDS.items() if pattern.search(text)}
    if _WATER.search(text) and "implicit" not in kinds:
        kinds.add("explicit")
    return kinds.pop() if len(kinds) == 1 else None


_NUMBER_WORDS = {
    "a single": 1, "single": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
_COUNT = r"(\d+|" + "|".join(_NUMBER_WORDS) + r")"
_REPLICAS = (
    re.compile(
        rf"\b{_COUNT}\s+(?:(?:independent|separate|parallel)\s+)?(?:replicas?|replicates?|repeats?|repetitions?|seeds?)\b",
        re.IGNORECASE,
    ),
    re.compile(
        rf"\b{_COUNT}\s+(?:independent|separate)\s+(?:runs?|simulations?|trajectories)\b", re.IGNORECASE
    ),
    re.compile(r"\breplica(?:s|tes)?\s*(?:[:=]|of)\s*(\d+)\b", re.IGNORECASE),
    re.compile(r"\bin\s+(duplicate|triplicate|quadruplicate)\b", re.IGNORECASE),
)
_PLICATE = {"duplicate": 2, "triplicate": 3, "quadruplicate": 4}


def _replicas(text: str) -> int | None:
    """The first replica count the text states (``3 replicas``, ``three replicates``, ``in triplicate``)."""
    matches = [m for pattern in _REPLICAS for m in pattern.finditer(text)]
    for match in sorted(matches, key=lambda m: m.start()):
        word = re.sub(r"\s+", " ", match.group(1).lower())
        count = int(word) if word.isdigit() else _NUMBER_WORDS.get(word) or _PLICATE.get(word)
        if count:
            return count
    return None


def _name_pattern(name: str) -> str:
    return r"[-_\s]*".join(re.escape(part) for part in re.split(r"[-_\s]+", name))


_CANONICAL_NAMES = {
    **{name: name for name in PROTEIN_PDB_IDS},
    **{name: name for name in BUNDLED_STRUCTURES},
    **BUNDLED_ALIASES,
}
_NAMES_BY_KEY = {
    re.sub(r"[-_\s]+", "", name).lower(): canonical for name, canonical in _CANONICAL_NAMES.items()
}
_STRUCTURE = re.compile(
    r"(?<![\w.-])(?:(?P<name>"
    + "|".join(_name_pattern(name) for name in sorted(_CANONICAL_NAMES, key=len, reverse=True))
    + r")|(?P<pdb>[0-9][A-Za-z0-9]{3}))(?![\w-])(?!\.\w)",
    re.IGNORECASE,
)
# "300K", "10ns", "21st": digits then one of these are a quantity or an ordinal, never a PDB id.
_NOT_ID_SUFFIXES = frozenset(
    ("k", "c", "f", "ps", "ns", "fs", "us", "ms", "bar", "atm", "nm", "mm", "um", "pm", "kda", "da",
     "st", "nd", "rd", "th", "x", "gb", "mb", "kb", "hz", "mhz", "ghz", "cm", "kj", "kcal", "min")
)  # fmt: skip


def _structures(text: str) -> tuple[str, ...]:
    found: list[str] = []
    for match in _STRUCTURE.finditer(text):
        if match.group("name"):
            found.append(_NAMES_BY_KEY[re.sub(r"[-_\s]+", "", match.group("name")).lower()])
            continue
        token = match.group("pdb")
        letters = token.lstrip("0123456789")
        if letters and not (letters.isalpha() and letters.lower() in _NOT_ID_SUFFIXES):
            found.append(token.upper())
    return tuple(dict.fromkeys(found))


_FILE_SUFFIXES = (
    "pdb|cif|mmcif|pdbx|ent|gro|psf|top|prmtop|inpcrd|xyz|sdf|mol2|mol|smi|dcd|xtc|trr|nc|h5|npy|npz"
    "|txt|csv|tsv|json|yaml|yml|toml|md|html|png|svg|pdf|log|dat|out|py|sh"
)
_FILE = re.compile(
    rf"(?<![\w/.~-])((?:~|\.{{1,2}})?/?(?:[\w.-]+/)*[\w-][\w.-]*\.(?:{_FILE_SUFFIXES}))(?![\w-])(?!\.\w)"
)
_TASK_ID = re.compile(r"(?<![\w-])sim-\d+(?![\w-])", re.IGNORECASE)
