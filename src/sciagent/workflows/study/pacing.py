"""Pacing the runs to the budget: each run's deadline, what the live speed predicts, and extensions.

A run's production ends at its deadline or its maximum, whichever comes first (``MDSpec.
production_deadline_unix``). The deadline is set at every submission, resumed ones included, from the
time really left then: the runs' allowance (the budget less the report's reserve), less the analysis
the worker does after the run (measured on this study's runs; stated until one has), shared fairly
among the waves still to run when there are more runs than workers. A resume re-derives it the same
way from the budget then left: the rule survives a restart, not an old timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sciagent.science.simulate import SimulationOutcome
from sciagent.workflows.study.policy import DRIFT_LENGTH_FACTOR

# The trajectory analysis on the worker, until a run of this study has measured it: villin's ~100
# frames take about 2 s to load, align and judge on one of these cores; twice that for a busy machine.
ANALYSIS_ESTIMATE_S = 5.0
# A condition is dropped only after this many estimates in a row say the verdict's minimum will not be
# met: one reading taken while a neighbour was starting up is not enough.
SHORT_ESTIMATES_TO_DROP = 2


def production_share_s(
    allowance_s: float, analysis_s: float, runs_left: int, workers: int, max_run_s: float | None
) -> float:
    """Seconds from now that one run submitted now may simulate.

    ``runs_left`` counts this run, those running and those still waiting; with more of them than
    ``workers`` they run in waves, and each wave gets an equal part of what is left, its analysis
    included. ``max_run_s`` (``--max-simulation-time``) caps it.
    """
    waves = math.ceil(max(1, runs_left) / max(1, workers))
    share = allowance_s / waves - analysis_s
    if max_run_s is not None:
        share = min(share, max_run_s)
    return max(0.0, share)


def predicted_production_ps(
    step: int, steps_per_s: float, seconds_left: float, equilibration_steps: int, max_steps: int,
    timestep_fs: float,
) -> float:  # fmt: skip
    """Production a run at ``step`` will hold at its deadline, ``seconds_left`` from now (an estimate)."""
    production = step + steps_per_s * max(0.0, seconds_left) - equilibration_steps
    return min(max(0.0, production), max_steps) * timestep_fs / 1000.0


def measured_steps_per_s(outcome: SimulationOutcome) -> float | None:
    """The production speed this run measured on itself (None when it ran no production)."""
    result = outcome.result
    if not result.ns_per_day:
        return None
    return result.ns_per_day / (result.spec.timestep_fs * 1e-6 * 86400)


def needed_ps(outcome: SimulationOutcome, min_production_ps: float) -> float:
    """More production this run needs for a verdict: to the minimum when too short, as much again
    (``DRIFT_LENGTH_FACTOR``) when still drifting; at least one frame."""
    result, failed = outcome.result, outcome.analysis.assessment.failed if outcome.analysis else []
    produced = result.simulated_ns * 1000.0
    frame_ps = result.spec.report_interval * result.spec.timestep_fs / 1000.0
    needed = min_production_ps - produced if "too short" in failed else 0.0
    if "still drifting" in failed:
        needed = max(needed, (DRIFT_LENGTH_FACTOR - 1.0) * produced)
    return max(needed, frame_ps)


@dataclass(frozen=True)
class ExtensionCase:
    """The numbers an extension is decided on, all measured on this run or this study."""

    left_s: float  # production time a run submitted now would get (its share, analysis left out)
    resume_s: float  # this run's own set-up time: what continuing it costs before its first step
    steps_per_s: float | None  # measured on this run's own production
    timestep_fs: float
    needed_ps: float

    @property
    def would_add_ps(self) -> float:
        if not self.steps_per_s:
            return 0.0
        return max(0.0, self.left_s - self.resume_s) * self.steps_per_s * self.timestep_fs / 1000.0

    @property
    def granted(self) -> bool:
        return self.would_add_ps >= self.needed_ps

    def describe(self) -> str:
        speed = f"{self.steps_per_s:.0f} steps/s" if self.steps_per_s else "no speed"
        return (
            f"{self.left_s:.0f} s left for it, at {speed} measured on this run ≈ {self.would_add_ps:.3g} ps "
            f"after {self.resume_s:.0f} s to resume; it needs {self.needed_ps:.3g} ps"
        )
