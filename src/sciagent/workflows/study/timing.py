"""Where a study's time went: its worker-seconds by what the workers did, for the report and results.json.

The budget is the user's only promise, so the report accounts for all of it: ``workers x budget``
worker-seconds split into the phases every worker waits on (plan, probe, report: their wall times from
``state.phase_wall_times_s``, times the workers), what the workers computed (each simulation call's
setup, equilibration and production from its ``segments.jsonl`` line; each trajectory analysis from
its outcome), and the two remainders: idle workers while the study ran, and the budget not spent.
Nothing is estimated; a remainder that would be negative is 0 and the excess is the ``overrun``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from sciagent.report.models import SIMULATION_PARTS, TimeBreakdown
from sciagent.science.segments import SEGMENTS_FILE, read_segments
from sciagent.science.simulate import SimulationOutcome
from sciagent.workflows.study.context import Study
from sciagent.workflows.study.state import StudyState

# One simulation call: its whole wall time, and its split by phase (empty when not recorded).
Call = tuple[float, dict[str, float]]


def study_time_breakdown(study: Study, report_began: float) -> TimeBreakdown:
    """The breakdown now, during the report phase that began at ``report_began`` (``time.monotonic()``).

    Called just before the report is rendered, so the report's part counts the interpretation and not
    the rendering that follows (that time is in ``unused``); a resumed report adds its earlier time.
    """
    study.remaining()  # brings state.spent_s up to now
    state = study.state
    report_s = state.phase_wall_times_s.get("report", 0.0) + time.monotonic() - report_began
    ctx = study.ctx
    return time_breakdown(
        state, ctx.run_dir, ctx.executor.capacity, report_s, remote=ctx.remote_root is not None
    )


def time_breakdown(
    state: StudyState, run_dir: Path, workers: int, report_s: float, *, remote: bool = False
) -> TimeBreakdown:
    """Split ``workers x state.budget_s`` by what the workers did, from what the study recorded.

    Args:
        state: the study's state; ``spent_s`` is its working time so far.
        run_dir: the run's directory: ``conditions/*/run*/segments.jsonl`` and ``conditions/*/outcomes``.
        workers: the executor's capacity, the simulations that can run at once.
        report_s: the report phase's wall time so far.
        remote: the simulations ran on a remote site, whose ledgers are not on this disk: their calls
            are read from the outcomes the site sent back.
    """
    walls = state.phase_wall_times_s
    parts = {
        "plan": workers * walls.get("plan", 0.0),
        "probe": workers * walls.get("fit", 0.0),  # the fit phase: the probe and the fit
        **dict.fromkeys(SIMULATION_PARTS, 0.0),
        "analysis": 0.0,
        "report": workers * report_s,
    }
    calls = list(_remote_calls(run_dir) if remote else _ledger_calls(run_dir))
    for wall_s, timings in calls:
        for name, seconds in _split(wall_s, timings).items():
            parts[name] += seconds
    parts["analysis"] = sum(outcome.analysis_s or 0.0 for outcome in _outcomes(run_dir))
    busy = sum(parts.values())
    idle = max(0.0, workers * state.spent_s - busy)
    capacity = workers * state.budget_s
    return TimeBreakdown(
        workers=workers,
        budget_s=state.budget_s,
        elapsed_s=state.spent_s,
        **parts,
        idle=idle,
        unused=max(0.0, capacity - busy - idle),
        overrun=max(0.0, busy + idle - capacity),
        simulation_calls=len(calls),
        unsplit_calls=sum(1 for _, timings in calls if not timings),
    )


def _split(wall_s: float, timings: dict[str, float]) -> dict[str, float]:
    """One call's wall time by phase, adding up to ``wall_s`` exactly.

    Setup takes what the phases leave (the call's start and its final checkpoint and result files as
    well); a call recorded without a split counts as production, which the report says.
    """
    if not timings:
        return {"production": wall_s}
    production = min(wall_s, timings.get("production", 0.0))
    equilibration = min(wall_s - production, timings.get("equilibration", 0.0))
    return {
        "setup": wall_s - production - equilibration,
        "equilibration": equilibration,
        "production": production,
    }


def _ledger_calls(run_dir: Path) -> Iterator[Call]:
    """Every simulation call of the conditions (not the probes), from their segment ledgers."""
    for path in sorted((run_dir / "conditions").glob(f"*/run*/{SEGMENTS_FILE}")):
        for line in read_segments(path.parent):
            yield float(line["wall_s"]), dict(line.get("timings_s") or {})


def _remote_calls(run_dir: Path) -> Iterator[Call]:
    for outcome in _outcomes(run_dir):
        yield outcome.result.wall_time_s, dict(outcome.result.timings_s)


def _outcomes(run_dir: Path) -> Iterator[SimulationOutcome]:
    """Every attempt's outcome that came back, all conditions."""
    for path in sorted((run_dir / "conditions").glob("*/outcomes/*.json")):
        yield SimulationOutcome.model_validate_json(path.read_text())
