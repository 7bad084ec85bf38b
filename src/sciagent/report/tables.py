"""The numbers of the report's results table, made in one place.

``condition_rows`` turns a study's records into ``ConditionRow``s; the markdown, the HTML and
``results.json`` all read these rows (and the display strings made from them here), so they cannot
disagree. Values are copied from ``MDResult`` and ``Analysis`` as they are: nothing is recomputed or
rounded in the data. The one derived value is the temperature deviation (mean minus target), which
is a subtraction of two copied values, done here and nowhere else.

Rounding happens only in ``format_number``, for display: ``DISPLAY_SIGNIFICANT_DIGITS`` significant
digits, except that values of 10⁴ or more are shown to the integer (so a drift of 408909 kJ/mol/ns
does not become ``4.089e+05``). A value that does not exist (a failed run has no RMSD) is ``None``
and is displayed as ``MISSING`` ("—"), never as 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from sciagent.report.models import ConditionRecord, StudyRecord

DISPLAY_SIGNIFICANT_DIGITS = 4
MISSING = "—"
NOT_APPLICABLE = "n/a"

HEADERS: tuple[str, ...] = (
    "Condition",
    "T (K)",
    "Timestep (fs)",
    "Steps (done/planned)",
    "Simulated (ns)",
    "ns/day",
    "Platform",
    "Status",
    "Final-window backbone RMSD (Å)",
    "Mean Rg (nm)",
    "Max Cα RMSF (Å)",
    "SS retention",
    "E_pot drift (kJ/mol/ns)",
    "Mean T / target (K) (Δ)",
    "Verdict",
)

# Columns whose cells are numbers (right-aligned in HTML); the rest are text.
TEXT_HEADERS = frozenset({"Condition", "Platform", "Status", "Verdict"})
# The table is shown in two parts, each starting with the condition, so it fits a page's width.
TABLE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Runs", HEADERS[:8]),
    ("Analysis of the production phase", (HEADERS[0], *HEADERS[8:])),
)


class ConditionRow(BaseModel):
    """One row of the results table: a condition's numbers exactly as the run and analysis gave them.

    ``None`` means "does not exist" (the run failed or was not run, or the analysis failed), so a
    reader can never mistake a missing value for a measured zero.
    """

    model_config = ConfigDict(frozen=True)

    condition: str
    replica: int
    temperature_k: float
    timestep_fs: float
    steps_completed: int | None
    steps_planned: int
    simulated_ns: float | None
    ns_per_day: float | None
    platform: str | None
    precision: str | None
    status: Literal["completed", "failed", "not run"]
    failure_class: str | None
    attempts: int
    final_window_rmsd_mean_angstrom: float | None = None
    rg_mean_nm: float | None = None
    max_rmsf_angstrom: float | None = None
    ss_retention: float | None = None
    potential_energy_drift_kj_mol_per_ns: float | None = None
    mean_temperature_k: float | None = None
    target_temperature_k: float | None = None
    temperature_deviation_k: float | None = None  # mean minus target
    verdict: Literal["stable", "unstable", "inconclusive"] | None = None
    reasons: list[str] = []
    note: str | None  # why there is no verdict: the failure or the analysis error, for people


def condition_rows(record: StudyRecord) -> list[ConditionRow]:
    """The results table of ``record``, one row per condition, in the record's order."""
    return [_row(condition) for condition in record.conditions]


def _row(condition: ConditionRecord) -> ConditionRow:
    """Copy one condition's values; fields without a source stay ``None``."""
    spec = condition.spec
    outcome = condition.outcome
    result = outcome.result if outcome else None
    analysis = outcome.analysis if outcome else None
    values: dict = {}  # the analysis's numbers; without an analysis they keep their None defaults
    if analysis is not None:
        values = {
            "final_window_rmsd_mean_angstrom": analysis.final_window_rmsd_mean_angstrom,
            "rg_mean_nm": analysis.rg_mean_nm,
            "max_rmsf_angstrom": analysis.max_rmsf_angstrom,
            "ss_retention": analysis.secondary_structure.retention,
            "potential_energy_drift_kj_mol_per_ns": analysis.potential_energy_kj_mol.drift_per_ns,
            "mean_temperature_k": analysis.temperature_k.mean,
            "target_temperature_k": analysis.target_temperature_k,
            "temperature_deviation_k": analysis.temperature_k.mean - analysis.target_temperature_k,
            "verdict": analysis.assessment.verdict,
            "reasons": list(analysis.assessment.reasons),
        }
    return ConditionRow(
        condition=condition.name,
        replica=condition.replica,
        temperature_k=condition.temperature_k,
        timestep_fs=spec.timestep_fs,
        steps_completed=result.steps_completed if result else None,
        steps_planned=spec.total_steps,
        simulated_ns=result.simulated_ns if result else None,
        ns_per_day=result.ns_per_day if result else None,
        platform=result.platform if result else None,
        precision=result.precision if result else None,
        status=condition.status,
        failure_class=result.failure_class if result else None,
        attempts=condition.attempts,
        note=_note(condition),
        **values,
    )


def _note(condition: ConditionRecord) -> str | None:
    """Why a condition has no verdict, in the words of whoever found out."""
    outcome = condition.outcome
    if outcome is not None and outcome.analysis_error:
        return f"analysis failed: {outcome.analysis_error}"
    if outcome is not None and not outcome.result.ok:
        return outcome.result.message
    return condition.failure if condition.status != "completed" else None


def format_number(value: float | None, digits: int = DISPLAY_SIGNIFICANT_DIGITS) -> str:
    """Display a value with ``digits`` significant digits (integers and values ≥ 10**digits whole).

    This is the only rounding in the report; the number check in ``numbers.py`` accepts a number
    written to any precision, so what is displayed here is always accepted.
    """
    if value is None:
        return MISSING
    if isinstance(value, int):
        return str(value)
    if value != 0 and abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def format_signed(value: float | None) -> str:
    """Like ``format_number``, with an explicit + for positive values (deviations)."""
    text = format_number(value)
    return f"+{text}" if value is not None and value > 0 else text


def status_text(row: ConditionRow) -> str:
    """``completed``, ``failed (instability)``, ``not run``; a failed analysis is said too."""
    if row.status == "failed" and row.failure_class:
        return f"failed ({row.failure_class})"
    if row.status == "completed" and row.verdict is None and row.note:
        return "completed (analysis failed)"
    return row.status


def display_cells(row: ConditionRow) -> dict[str, str]:
    """The display strings of one row, keyed by header in ``HEADERS`` order, for markdown and HTML."""
    steps_done = MISSING if row.steps_completed is None else str(row.steps_completed)
    platform = MISSING if row.platform is None else row.platform
    if row.platform and row.precision:
        platform = f"{row.platform} ({row.precision})"
    retention = format_number(row.ss_retention)
    if row.ss_retention is None and row.verdict is not None:
        retention = NOT_APPLICABLE  # analysed, but nothing was structured in the first frame
    temperature = MISSING
    if row.mean_temperature_k is not None:
        temperature = (
            f"{format_number(row.mean_temperature_k)} / {format_number(row.target_temperature_k)}"
            f" (Δ {format_signed(row.temperature_deviation_k)})"
        )
    cells = [
        row.condition,
        format_number(row.temperature_k),
        format_number(row.timestep_fs),
        f"{steps_done}/{row.steps_planned}",
        format_number(row.simulated_ns),
        format_number(row.ns_per_day),
        platform,
        status_text(row),
        format_number(row.final_window_rmsd_mean_angstrom),
        format_number(row.rg_mean_nm),
        format_number(row.max_rmsf_angstrom),
        retention,
        format_number(row.potential_energy_drift_kj_mol_per_ns),
        temperature,
        row.verdict or MISSING,
    ]
    return dict(zip(HEADERS, cells, strict=True))
