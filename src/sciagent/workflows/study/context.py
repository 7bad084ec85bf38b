"""What every phase of a stability study works on: the state, the collaborators, and the budget clock.

The CLI (through ``runner``) builds a ``StudyContext``; ``Study`` binds it to one study's saved state.
The budget counts working time only: ``spent_s`` is saved with the state, so a run that was killed
and resumed keeps the budget it had left instead of starting over or losing the time it was down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.compute.base import Executor
from sciagent.workflows.study.advisor import ModelAdvisor
from sciagent.workflows.study.guardrails import DEFAULT_LIMITS, Limits
from sciagent.workflows.study.policy import DEFAULT_RETRY_LIMITS, RetryLimits
from sciagent.workflows.study.state import StudyState
from sciagent.workflows.study.stopping import stop_path

Notify = Callable[[str, str], None]  # (phase, message) for the person watching


@dataclass
class StudyContext:
    """The collaborators a study uses; the CLI builds them, tests can build them too."""

    journal: Journal
    advisor: ModelAdvisor
    executor: Executor
    run_dir: Path
    notify: Notify = lambda phase, message: None
    approve: Callable[[str], bool] | None = None
    max_simulation_time_s: float | None = None
    limits: RetryLimits = DEFAULT_RETRY_LIMITS
    guardrails: Limits = DEFAULT_LIMITS
    remote_root: Path | None = None  # where simulations write on a remote site; None: the run directory
    platform: str = "auto"  # the OpenMM platform the site's workers use
    site: str = "local"  # the site's name, for the commands a report suggests
    remove_unknown_residues: bool = False  # the person allowed removing unknown in-chain residues

    @property
    def work_root(self) -> Path:
        """The root of the simulations' work directories, as the executing machine sees it."""
        return self.remote_root or self.run_dir

    @property
    def stop_file(self) -> str | None:
        """The stop request's file as the simulations see it; None on a remote site, which cannot."""
        return None if self.remote_root else str(stop_path(self.run_dir))


class Study:
    """One study's state with its context: saving, the budget clock, and notices to the person."""

    def __init__(self, state: StudyState, context: StudyContext) -> None:
        self.state = state
        self.ctx = context
        self._mark = time.monotonic()

    @property
    def state_path(self) -> Path:
        return self.ctx.run_dir / "state.json"

    def save(self) -> None:
        """Persist the state (atomically, fsynced), with the working time spent up to now."""
        self._tick()
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        self.state.save(self.state_path)

    def remaining(self) -> float:
        """Seconds of the budget left."""
        self._tick()
        return self.state.budget_s - self.state.spent_s

    def runs_allowance(self) -> float:
        """Seconds the simulations may still take: what is left, less the report's reserve."""
        return self.remaining() - self.state.report_reserve_s

    def notify(self, phase: str, message: str) -> None:
        self.ctx.notify(phase, message)

    def _tick(self) -> None:
        now = time.monotonic()
        self.state.spent_s += now - self._mark
        self._mark = now
