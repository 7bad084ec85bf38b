"""The durable state of one study, saved after every change so ``sciagent resume`` can continue it.

The journal is the history (what happened, when); this file is the present (what is planned, what each
condition is doing). Writes are atomic, so a crash leaves the last consistent state.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from sciagent.agent.guardrails import FittedPlan
from sciagent.report.models import Adaptation, GuardrailChange, Source
from sciagent.science.outputs import write_text_atomic
from sciagent.science.simulate import SimulationOutcome
from sciagent.science.spec import MDSpec
from sciagent.workflows.study_schemas import StudyPlan

ConditionStatus = Literal["pending", "running", "completed", "failed", "not run"]


class ConditionState(BaseModel):
    """One temperature/replica condition: its current spec and how many second chances it has used."""

    name: str
    temperature_k: float
    replica: int
    spec: MDSpec
    lineage: int = 1  # bumped when an adaptation changes the physics: a fresh work directory
    attempts: int = 0  # submissions so far, all lineages
    transient_retries: int = 0
    adaptation_rounds: int = 0
    extensions: int = 0
    status: ConditionStatus = "pending"
    failure: str | None = None

    def workdir(self, run_dir: Path) -> Path:
        """Where the current lineage runs; extensions and transient retries continue in it."""
        return run_dir / "conditions" / self.name / f"run{self.lineage}"

    @property
    def task_key(self) -> str:
        return f"{self.name}/run{self.lineage}/attempt{self.attempts}"

    def outcome_path(self, run_dir: Path) -> Path:
        """The latest outcome, kept locally: on a remote site the work directory is not on this disk."""
        return run_dir / "conditions" / self.name / "outcome.json"

    def save_outcome(self, run_dir: Path, outcome: SimulationOutcome) -> None:
        self.outcome_path(run_dir).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.outcome_path(run_dir), outcome.model_dump_json(indent=2))

    def stored_outcome(self, run_dir: Path) -> SimulationOutcome | None:
        path = self.outcome_path(run_dir)
        return SimulationOutcome.model_validate_json(path.read_text()) if path.exists() else None


class StudyState(BaseModel):
    """Everything needed to continue a study where it stopped."""

    run_id: str
    goal: str
    structure: str
    llm_profile: str
    model_id: str
    budget_s: float
    started_at: str
    plan: StudyPlan | None = None
    plan_source: Source | None = None
    guardrail_changes: list[GuardrailChange] = []
    steps_per_s: float | None = None
    run_overhead_s: float = 0.0  # measured by the probe: a run's time before its first step
    fitted: FittedPlan | None = None
    conditions: list[ConditionState] = []
    adaptations: list[Adaptation] = []
    phase_wall_times_s: dict[str, float] = {}
    task_group_id: str | None = None  # a remote site's group of tasks, to re-attach on resume

    def save(self, path: Path) -> None:
        write_text_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> StudyState:
        return cls.model_validate_json(path.read_text())

    def add_phase_time(self, phase: str, seconds: float) -> None:
        self.phase_wall_times_s[phase] = self.phase_wall_times_s.get(phase, 0.0) + seconds


def new_state(
    run_id: str, goal: str, structure: str, llm_profile: str, model_id: str, budget_s: float
) -> StudyState:
    return StudyState(
        run_id=run_id,
        goal=goal,
        structure=structure,
        llm_profile=llm_profile,
        model_id=model_id,
        budget_s=budget_s,
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
