"""Simulate, then analyse: the unit of work a worker runs and sends back as a small summary."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from sciagent.atomic import write_atomic
from sciagent.science.analysis import Analysis, analyze_trajectory
from sciagent.science.md import MDResult, ProgressCallback, run_md
from sciagent.science.outputs import RunFiles
from sciagent.science.spec import MDSpec


class SimulationOutcome(BaseModel):
    """An ``MDResult`` and, when the run completed, the analysis of its trajectory.

    ``analysis_s`` is the analysis' wall time on the worker (None when none ran): the worker is busy
    for it after the simulation, so the study's time breakdown counts it.
    """

    result: MDResult
    analysis: Analysis | None = None
    analysis_error: str | None = None
    analysis_s: float | None = None


def simulate_and_analyze(
    spec: MDSpec, workdir: Path | str, progress: ProgressCallback | None = None
) -> SimulationOutcome:
    """Run ``spec`` in ``workdir``; analyse the trajectory if the run completed.

    A completed run whose analysis fails keeps its result; the analysis error is reported beside it.
    The analysis is also written to ``analysis.json`` in the work directory.
    """
    result = run_md(spec, workdir, progress)
    if not result.ok:
        return SimulationOutcome(result=result)
    files = RunFiles(Path(result.workdir))
    began = time.monotonic()
    try:
        analysis = analyze_trajectory(
            files.start_pdb,
            files.trajectory,
            files.state_csv,
            production_start_ps=spec.equilibration_steps * spec.timestep_fs / 1000.0,
            target_temperature_k=spec.temperature_k,
        )
    except (ValueError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        return SimulationOutcome(result=result, analysis_error=error, analysis_s=time.monotonic() - began)
    write_atomic(files.analysis, analysis.model_dump_json(indent=2))
    result.files["analysis"] = str(files.analysis)
    return SimulationOutcome(result=result, analysis=analysis, analysis_s=time.monotonic() - began)
