"""The next job of a run: how long it needs, its spec, its script, and its submission after this one.

The next job is sized from what is left, not copied: the simulation steps still to run at the speed this
job measured, spread over the simulation devices, plus this job's own model start-up, the report's
reserve and the stop margin, with a fifth more for the unforeseen; at least ten minutes (less is mostly
queue overhead) and never more than the run's first job asked for. A run that needs more still gets
another continuation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sciagent.compute.sites import SiteConfig
from sciagent.science.spec import MDSpec
from sciagent.workflows.jobs.allocation import Segment, segments
from sciagent.workflows.jobs.script import render_job_script
from sciagent.workflows.jobs.spec import JobSpec
from sciagent.workflows.jobs.submission import submit_script

REPORT_RESERVE_S = 120.0  # the interpretation and the rendering, at the end of the last job
SLACK = 1.2
MIN_WALLTIME_S = 600.0  # below ten minutes a queue's start-up costs more than the job computes


@dataclass(frozen=True)
class Continuation:
    """A submitted continuation: its job id, its spec and script files, and the walltime it asked for."""

    job_id: str
    index: int
    spec_path: Path
    script_path: Path
    walltime_s: float


def remaining_simulation_s(run_dir: Path, job_id: str, simulation_devices: int) -> float | None:
    """Seconds of simulation left at this job's measured speed, or None when nothing was measured.

    Counts the unfinished simulations that have started (their spec and segments are on disk); the plan's
    conditions not yet started are covered by the budget instead.
    """
    by_workdir: dict[Path, list[Segment]] = {}
    for segment in segments(run_dir):
        by_workdir.setdefault(segment.workdir, []).append(segment)
    mine = [s for rows in by_workdir.values() for s in rows if s.job_id == job_id and s.to_step > s.from_step]
    if not mine:
        return None
    steps_per_s = sum(s.to_step - s.from_step for s in mine) / max(1e-9, sum(s.wall_s for s in mine))
    left = 0
    for workdir, rows in by_workdir.items():
        if _finished(workdir):
            continue
        spec_file = workdir / "spec.json"
        if spec_file.exists():
            total = MDSpec.model_validate_json(spec_file.read_text()).total_steps
            left += max(0, total - max(s.to_step for s in rows))
    return left / steps_per_s / max(1, simulation_devices)


def continuation_walltime(
    spec: JobSpec, *, remaining_sim_s: float | None, startup_s: float, margin_s: float, budget_left_s: float
) -> float:
    """The walltime to ask for the next job (see the module's docstring)."""
    work_s = budget_left_s
    if remaining_sim_s is not None:
        work_s = min(work_s, remaining_sim_s + REPORT_RESERVE_S)
    needed = (startup_s + work_s + margin_s) * SLACK
    return min(spec.walltime_s, max(MIN_WALLTIME_S, needed))


def submit_continuation(
    spec: JobSpec, site: SiteConfig, *, after_job: str, walltime_s: float, margin_s: float
) -> Continuation:
    """Write the next job's spec and script under the run's ``jobs/`` and submit it ``afterany`` this job."""
    index = spec.continuation + 1
    following = spec.model_copy(update={"continuation": index, "walltime_s": walltime_s})
    spec_path = following.save(spec.jobs_dir / f"spec-{index}.json")
    script_path = spec.jobs_dir / f"job-{index}.sh"
    script_path.write_text(render_job_script(following, spec_path, spec.site, site, stop_margin_s=margin_s))
    job_id = submit_script(spec.site, site, script_path, after=after_job)
    return Continuation(job_id, index, spec_path, script_path, walltime_s)


def _finished(workdir: Path) -> bool:
    result = workdir / "result.json"
    if not result.exists():
        return False
    try:
        return json.loads(result.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False
