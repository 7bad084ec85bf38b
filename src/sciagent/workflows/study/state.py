"""The durable state of one study, saved after every change so ``sciagent resume`` can continue it.

The journal is the history (what happened, when); this file is the present (what is planned, what each
condition is doing, how much of the budget is spent). Writes are atomic and fsynced, so a crash at any
moment leaves the last consistent state. Each attempt's outcome is kept in a file of its own, so a
decision and the report always pair a spec with the result that spec produced.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from sciagent.atomic import write_atomic
from sciagent.report.models import Adaptation, GuardrailChange, Source
from sciagent.science.simulate import SimulationOutcome
from sciagent.science.spec import MDSpec
from sciagent.workflows.study.guardrails import FittedPlan, Throughput
from sciagent.workflows.study.plans import StudyPlan

# Kept free at the end of the budget for the interpretation and the report, until the plan's model
# call has measured how fast the model answers (then the workflow sizes it from that).
DEFAULT_REPORT_RESERVE_S = 25.0
ConditionStatus = Literal["pending", "running", "completed", "failed", "not run"]
Phase = Literal["plan", "fit", "simulate", "report", "done"]


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
        """The current attempt's name, unique in the run: ``T300-r1/run1/attempt2``."""
        return f"{self.name}/run{self.lineage}/attempt{self.attempts}"

    def outcome_path(self, run_dir: Path, task_key: str | None = None) -> Path:
        """Where one attempt's outcome is kept (locally: a remote site's work directory is not here)."""
        attempt = (task_key or self.task_key).split("/", 1)[1].replace("/", "-")
        return run_dir / "conditions" / self.name / "outcomes" / f"{attempt}.json"

    def save_outcome(self, run_dir: Path, outcome: SimulationOutcome) -> None:
        """Keep the current attempt's outcome."""
        write_atomic(self.outcome_path(run_dir), outcome.model_dump_json(indent=2))

    def stored_outcome(self, run_dir: Path) -> SimulationOutcome | None:
        """The current attempt's outcome, if that attempt finished."""
        return _read_outcome(self.outcome_path(run_dir))

    def latest_outcome(self, run_dir: Path) -> SimulationOutcome | None:
        """The newest outcome of any attempt: what the condition last produced, with its own spec."""
        paths = self._outcome_paths(run_dir)
        return _read_outcome(paths[-1]) if paths else None

    def outcomes(self, run_dir: Path) -> dict[str, SimulationOutcome]:
        """Every finished attempt's outcome by its task key (``T300-r1/run1/attempt2``), oldest first."""
        return {
            f"{self.name}/{path.stem.replace('-', '/')}": SimulationOutcome.model_validate_json(
                path.read_bytes()
            )
            for path in self._outcome_paths(run_dir)
        }

    def _outcome_paths(self, run_dir: Path) -> list[Path]:
        folder = self.outcome_path(run_dir).parent
        if not folder.is_dir():
            return []
        return sorted(folder.glob("run*-attempt*.json"), key=_attempt_number)


class ProbeRecord(BaseModel):
    """The speed the fit took for one solvent's system: a probe round of this study, or the workspace's
    speed book (``speeds.py``). Reused on resume instead of measured again."""

    solvent: str
    round: int  # the probe round; 0 for a speed from the book
    steps_per_s: float
    overhead_s: float
    workers: int
    source: Literal["probe", "book"] = "probe"
    measured_by: str | None = None  # the book's measurement: which task of which run, and when

    def throughput(self) -> Throughput:
        return Throughput(self.steps_per_s, self.workers, self.solvent, self.overhead_s)


class StudyState(BaseModel):
    """Everything needed to continue a study where it stopped."""

    run_id: str
    goal: str
    structure: str
    llm_profile: str
    model_id: str
    budget_s: float
    started_at: str
    phase: Phase = "plan"
    spent_s: float = 0.0  # working time so far, across resumes: the budget counts only this
    report_reserve_s: float = DEFAULT_REPORT_RESERVE_S  # the budget's tail kept for the report
    model_latency_s: float | None = None  # the plan call's, to size the interpretation
    plan: StudyPlan | None = None
    plan_source: Source | None = None
    guardrail_changes: list[GuardrailChange] = []
    probe_rounds: int = 0  # probe rounds started; each gets fresh task ids and work directories
    probes: list[ProbeRecord] = []
    fitted: FittedPlan | None = None
    conditions: list[ConditionState] = []
    adaptations: list[Adaptation] = []
    phase_wall_times_s: dict[str, float] = {}
    task_group_id: str | None = None  # a remote site's group of tasks, to re-attach on resume

    def save(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> StudyState:
        return cls.model_validate_json(path.read_text())

    def add_phase_time(self, phase: str, seconds: float) -> None:
        self.phase_wall_times_s[phase] = self.phase_wall_times_s.get(phase, 0.0) + seconds

    def probe_for(self, solvent: str) -> ProbeRecord | None:
        """The finished probe of ``solvent``'s system, if there is one."""
        return next((p for p in reversed(self.probes) if p.solvent == solvent), None)

    @property
    def throughput(self) -> Throughput | None:
        """The speed the plan was fitted with: the probe of the fitted plan's solvent."""
        probe = self.probe_for(self.fitted.solvent) if self.fitted else None
        return probe.throughput() if probe else None


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


def _attempt_number(path: Path) -> int:
    """``run2-attempt3.json`` → 3: attempts are numbered across lineages, so this orders them in time."""
    return int(path.stem.rsplit("attempt", 1)[1])


def _read_outcome(path: Path) -> SimulationOutcome | None:
    return SimulationOutcome.model_validate_json(path.read_text()) if path.exists() else None
