"""The quantities a study report talks about, and how to recognise each in prose and in field names.

The number check attributes every number a model writes to the quantity its sentence is about, so
each quantity (``Metric``) carries three patterns: the words that name it in text (``RMSD``,
``helix``, ``kJ``), the unit that follows its numbers (``Å``, ``K``, ``ps``), and the parts of a field
name that hold it (``final_window_rmsd_mean_angstrom``, ``potential_energy_kj_mol.drift_per_ns``).
A unit stands for its quantities only in a sentence that names none of them by word: "RMSD 1.2 Å"
is about RMSD, not also RMSF, while "T300-r1 moved 1.2 Å" may be either. A value or a sentence may
concern several quantities at once: an RMSD slope is both "RMSD" and "drift", and a sentence that
says "RMSD 1.2 Å and energy drift 40 kJ/mol/ns" names three. Fields are classified by name rather
than listed one by one so that a field the analysis gains later is attributed without a change here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANGSTROM = r"(?:Å|angstroms?\b)"


@dataclass(frozen=True)
class Metric:
    """A quantity: its name in flags ("12.3 matches no RMSD value"), words, unit and field names."""

    name: str
    words: re.Pattern[str]
    unit: re.Pattern[str] | None  # matched right after a number ("300 K", "1.2Å")
    field: re.Pattern[str]


def _metric(name: str, words: str, unit: str | None, field: str) -> Metric:
    after_number = re.compile(rf"(?<=\d)\s?{unit}", re.IGNORECASE) if unit else None
    return Metric(name, re.compile(words, re.IGNORECASE), after_number, re.compile(field))


METRICS: tuple[Metric, ...] = (
    _metric("RMSD", r"\brmsds?\b|root[- ]mean[- ]square deviation", _ANGSTROM, r"rmsd"),
    _metric("RMSF", r"\brmsfs?\b|fluctuat", _ANGSTROM, r"rmsf"),
    _metric(
        "radius of gyration", r"radi(?:us|i) of gyration|\brg\b|compact", r"nm\b", r"(?:^|[._])rg_|gyration"
    ),
    _metric(
        "secondary structure",
        r"secondary[- ]structure|\bheli(?:x|ces|cal|city)\b|\bstrands?\b|\bsheets?\b|\bcoil\b|retention"
        r"|retain|\bdssp\b|\bss\b",
        None,
        r"secondary_structure|(?:^|[._])ss_",
    ),
    _metric("temperature", r"temperature|thermostat", r"K\b", r"temperature"),
    _metric("energy", r"energ(?:y|ies)|e_pot|\bpotential\b", r"kj\b", r"energy|_kj_"),
    _metric("drift", r"drift|slope|\btrend|per ns\b|/\s?ns\b", None, r"drift|slope"),
    _metric(
        "simulated time",
        r"simulated|simulation time|duration|picoseconds?|nanoseconds?",
        r"(?:ps|ns)\b(?!\s?/)",
        r"simulated|production_ps",
    ),
    _metric(
        "speed",
        r"ns/day|per day|throughput|speed|performance|wall[- ]?(?:clock )?time|seconds",
        None,
        r"ns_per_day|wall_time",
    ),
    _metric(
        "steps",
        r"\bsteps?\b|\bframes?\b|iterations?",
        None,
        r"(?<!time)steps?(?:$|_)|frames|interval|iterations",
    ),
    _metric("timestep", r"time[- ]?steps?|integrat", r"fs\b", r"timestep"),
    _metric(
        "attempts and seeds", r"attempts?|\bseeds?\b|retr(?:y|ied|ies)|\bround\b", None, r"attempt|seed|round"
    ),
)


def metrics_in_text(text: str) -> frozenset[str]:
    """The names of the quantities ``text`` mentions: by word, and by unit where no word names one.

    A unit shared by several quantities (``Å``: RMSD and RMSF) stands for all of them, unless the
    text names one of them by word.
    """
    named = {metric.name for metric in METRICS if metric.words.search(text)}
    by_unit = set()
    for metric in METRICS:
        if metric.unit is None or not metric.unit.search(text):
            continue
        unit = metric.unit.pattern
        sharing = {other.name for other in METRICS if other.unit and other.unit.pattern == unit}
        if not sharing & named:
            by_unit.add(metric.name)
    return frozenset(named | by_unit)


def metrics_of_field(path: str) -> frozenset[str]:
    """The names of the quantities a field holds, from its dotted path (``analysis.rg_mean_nm``)."""
    return frozenset(metric.name for metric in METRICS if metric.field.search(path))
