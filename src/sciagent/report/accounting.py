"""The report's accounting tables: where a run's time went, as display strings for both formats.

Two tables share one shape (a title, an introduction, a header, rows, a closing line) and one template
block: the allocation table (``allocation.py``: batch jobs' device-seconds) and the time breakdown here
(a study's worker-seconds by part, as fractions of ``workers x budget``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sciagent.report.models import TIME_PARTS, TimeBreakdown


@dataclass(frozen=True)
class AccountingTable:
    """One accounting table: what the templates print, in order."""

    title: str
    intro: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    line: str  # the one number a reader asks first, as a sentence


TIME_HEADER = ("part", "worker-seconds", "seconds per worker", "share of workers x budget")
_LABELS = {
    "plan": "plan (the model proposes the study)",
    "probe": "probe and fit",
    "setup": "setup (prepare or resume, minimise, final files)",
    "equilibration": "equilibration",
    "production": "production",
    "analysis": "analysis (on the workers)",
    "report": "report (interpretation, until rendering began)",
    "idle": "idle workers",
    "unused": "unused budget (rendering this report included)",
}


def time_table(breakdown: TimeBreakdown | None) -> AccountingTable | None:
    """The time breakdown's table, or None for a record made before breakdowns were kept."""
    if breakdown is None or breakdown.capacity <= 0:
        return None
    b = breakdown
    rows = [_time_row(_label(b, name), getattr(b, name), b) for name in TIME_PARTS]
    if b.overrun > 0:
        rows.append(_time_row("over budget (recorded beyond workers x budget)", b.overrun, b))
    rows.append(_time_row("all", b.capacity + b.overrun, b))
    intro = (
        f"Worker-seconds of the budget ({b.workers} worker{'s' if b.workers != 1 else ''} x "
        f"{b.budget_s:.0f} s = {b.capacity:.0f}), by what the workers did; measured, not estimated."
    )
    line = (
        f"Budget use: {b.budget_use:.1%} (simulation wall time, i.e. setup, equilibration and production "
        f"of {b.simulation_calls} simulation call{'s' if b.simulation_calls != 1 else ''}, across the "
        "workers / workers x budget)."
    )
    if b.overrun > 0:
        line += f" The study went over its budget by {b.overrun:.0f} worker-seconds."
    return AccountingTable("Where the time went", intro, TIME_HEADER, rows, line)


def _label(breakdown: TimeBreakdown, name: str) -> str:
    if name == "production" and breakdown.unsplit_calls:
        calls = breakdown.unsplit_calls
        return (
            f"production ({calls} call{'s' if calls != 1 else ''} recorded without a split: "
            "their setup and equilibration counted here)"
        )
    return _LABELS[name]


def _time_row(label: str, worker_s: float, breakdown: TimeBreakdown) -> tuple[str, ...]:
    share = worker_s / breakdown.capacity
    return (label, f"{worker_s:.1f}", f"{worker_s / breakdown.workers:.1f}", f"{share:.1%}")
