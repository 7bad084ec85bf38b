"""The report's allocation table: where a run's device-seconds went, job by job.

A run carried by batch jobs (``sciagent submit``) is charged for every device of every job whatever it
did, so the table shows what the devices did, and the one number a facility user asks first: the
fraction of the allocation that produced simulation.
"""

from __future__ import annotations

from sciagent.report.accounting import AccountingTable
from sciagent.report.models import JobAllocation

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("model_starting", "model starting"),
    ("model_serving", "model serving"),
    ("simulating", "simulating"),
    ("idle", "idle"),
    ("continuation", "continuation"),
)
HEADER = ("job", "job id", "devices", "elapsed (s)", *(label + " (device-s)" for _, label in CATEGORIES))
INTRO = "Device-seconds of every batch job that carried this run, by what the devices did."


def allocation_table(jobs: list[JobAllocation]) -> AccountingTable | None:
    """One row per job and a total row, or None for a run that no batch job carried (or no time yet)."""
    total = sum(job.total for job in jobs)
    if not jobs or total <= 0:
        return None
    rows = [_row(job) for job in jobs]
    sums = {name: sum(getattr(job, name) for job in jobs) for name, _ in CATEGORIES}
    elapsed = sum(job.elapsed_s for job in jobs)
    rows.append(("all", "", "", f"{elapsed:.0f}", *(f"{sums[name]:.0f}" for name, _ in CATEGORIES)))
    line = f"{sums['simulating'] / total:.0%} of the allocation's device-seconds produced simulation."
    return AccountingTable("Allocation", INTRO, HEADER, rows, line)


def _row(job: JobAllocation) -> tuple[str, ...]:
    cells = (f"{getattr(job, name):.0f}" for name, _ in CATEGORIES)
    return (str(job.index + 1), job.job_id, str(job.devices), f"{job.elapsed_s:.0f}", *cells)
