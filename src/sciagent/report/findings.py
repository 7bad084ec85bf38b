"""The study's findings in sentences, computed from the verdicts and the analysis, never by a model.

A report must say what happened even when the model's interpretation is unusable, so sciagent writes
its own: one sentence per condition (its verdict, with the final-window backbone RMSD, the
secondary-structure retention and the production length behind it, and the criteria it failed), and
one per elevated temperature comparing it with the reference (how much the RMSD and the retention
changed). Every number is a value of the results table, or the difference of two, written with
``format_number``, so these sentences pass the same attribution check as model text
(``attribution.check_text``); a test holds them to it.
"""

from __future__ import annotations

from sciagent.report.models import StudyRecord
from sciagent.report.tables import ConditionRow, condition_rows, format_number
from sciagent.report.values import PS_PER_NS, reference_temperature

FINDINGS_LABEL = "computed by sciagent from the analysis, not model-written"
_VERDICTS = {
    "stable": "the verdict was stable (the fold held)",
    "unstable": "the verdict was unstable (the fold was lost)",
    "inconclusive": "the verdict was inconclusive (these runs cannot decide it)",
}


def findings(record: StudyRecord) -> list[str]:
    """What each condition did, then how each elevated temperature differs from the reference."""
    rows = condition_rows(record)
    sentences = [sentence for row in rows for sentence in _condition(row)]
    reference_k = reference_temperature(record)
    references = [r for r in rows if r.temperature_k == reference_k and r.verdict is not None]
    for row in rows:
        if row.temperature_k == reference_k or row.verdict is None or not references:
            continue
        same_replica = [r for r in references if r.replica == row.replica]
        sentences.append(_comparison(row, (same_replica or references)[0]))
    return sentences


def _at(row: ConditionRow) -> str:
    return f"At {format_number(row.temperature_k)} K ({row.condition})"


def _condition(row: ConditionRow) -> list[str]:
    """One condition's verdict with its numbers, and the criteria it did not meet; or why it has none."""
    if row.verdict is None:
        if row.status == "completed":
            return [f"{_at(row)} the run completed but has no analysis: {row.note or 'not analysed'}."]
        failure = f" ({row.failure_class})" if row.failure_class else ""
        what = "the run failed" if row.status == "failed" else "the condition was not run"
        return [f"{_at(row)} {what}{failure}: {row.note or 'no reason recorded'}."]
    retention = (
        f"secondary-structure retention {format_number(row.ss_retention)}"
        if row.ss_retention is not None
        else "secondary-structure retention not applicable (nothing structured in the first frame)"
    )
    length = format_number(row.simulated_ns * PS_PER_NS) if row.simulated_ns is not None else "an unknown"
    rmsd = format_number(row.final_window_rmsd_mean_angstrom)
    sentences = [
        f"{_at(row)} {_VERDICTS[row.verdict]}: final-window backbone RMSD {rmsd} Å, {retention}, "
        f"over {length} ps of production."
    ]
    unmet = [reason for reason in row.reasons if not reason.endswith(": ok")]
    if unmet:
        sentences.append(f"{row.condition} did not meet these criteria: {'; '.join(unmet)}.")
    return sentences


def _comparison(row: ConditionRow, reference: ConditionRow) -> str:
    """How an elevated condition's RMSD and retention differ from the reference's."""
    parts = [
        _change(
            "the final-window backbone RMSD",
            row.final_window_rmsd_mean_angstrom,
            reference.final_window_rmsd_mean_angstrom,
            " Å",
        )
    ]
    if row.ss_retention is not None and reference.ss_retention is not None:
        retention = _change("the secondary-structure retention", row.ss_retention, reference.ss_retention, "")
        parts.append(retention)
    return (
        f"Compared with the reference at {format_number(reference.temperature_k)} K ({reference.condition}), "
        f"at {format_number(row.temperature_k)} K ({row.condition}) {' and '.join(parts)}."
    )


def _change(what: str, value: float | None, reference: float | None, unit: str) -> str:
    """A change in words and numbers: "the RMSD was 2.8 Å higher (4.2 vs 1.4 Å)", or "the same"."""
    if value is None or reference is None:
        return f"{what} cannot be compared (a value is missing)"
    both = f"({format_number(value)} vs {format_number(reference)}{unit})"
    if value == reference:
        return f"{what} was the same {both}"
    direction = "higher" if value > reference else "lower"
    return f"{what} was {format_number(abs(value - reference))}{unit} {direction} {both}"
