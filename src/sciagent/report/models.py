"""What a study report is made of: plain records the workflow fills and the renderers read.

They live here, below the workflows, so the renderers never import workflow code, and so a report can
be re-rendered later from ``results.json`` alone (``sciagent report RUN``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, computed_field

from sciagent.science.simulate import SimulationOutcome
from sciagent.science.spec import MDSpec

Source = Literal["model", "fallback"]


class ConditionRecord(BaseModel):
    """One simulated condition (a temperature and replica), after all its attempts."""

    name: str  # e.g. "T300-r1"
    temperature_k: float
    replica: int
    spec: MDSpec  # the spec of the last attempt
    status: Literal["completed", "failed", "not run"]
    attempts: int = 0
    outcome: SimulationOutcome | None = None  # of the last attempt
    failure: str | None = None  # why it failed or was not run, for people


class Adaptation(BaseModel):
    """One change the study made in response to a result."""

    condition: str
    round: int
    trigger: Literal["instability", "inconclusive", "transient"]
    error: str | None = None
    decided_by: Literal["model", "fallback", "policy"]
    changes: dict[str, Any]  # field -> new value
    rationale: str | None = None


class GuardrailChange(BaseModel):
    """A value of the model's plan that the guardrails changed, and why."""

    field: str
    proposed: Any
    applied: Any
    reason: str


class Provenance(BaseModel):
    """Where the numbers came from: versions, hardware, model, seeds and time spent."""

    sciagent_version: str
    openmm_version: str
    python_version: str
    hostname: str
    platforms: list[str]
    llm_profile: str
    model_id: str
    seeds: dict[str, int]
    phase_wall_times_s: dict[str, float]
    started_at: str
    finished_at: str | None = None


class VerdictOutlook(BaseModel):
    """What it would take to get a verdict the budget did not allow, filled by the workflow.

    The workflow knows the measured speed and why the runs were inconclusive; the report only says it,
    so a reader who got "inconclusive" also gets the length and the command that would decide it.
    """

    needed_production_ps: float  # production length per run that the verdict criteria need
    estimated_wall_s: float  # wall time of the whole study at that length, at the measured speed
    command: str  # the exact command line that would run it, e.g. "sciagent run --budget 12m"
    reason: str  # why no verdict was possible, e.g. "still drifting after 20 ps"


class JobAllocation(BaseModel):
    """One batch job's device-seconds, by what the devices were doing (``workflows/jobs/allocation.py``).

    ``model_starting``: the model's devices while its server loaded and passed the health gate;
    ``model_serving``: the model's devices after that; ``simulating``: simulation devices running MD
    (from each simulation's segments); ``idle``: simulation devices with nothing to run (waiting on the
    model or on each other); ``continuation``: this job's share spent stopping, checkpointing and
    submitting the next job. Their sum is ``devices * elapsed_s``.
    """

    index: int  # 0: the first job of the run
    job_id: str
    devices: int  # model's plus the simulations'
    elapsed_s: float
    model_starting: float = 0.0
    model_serving: float = 0.0
    simulating: float = 0.0
    idle: float = 0.0
    continuation: float = 0.0

    @property
    def total(self) -> float:
        return self.devices * self.elapsed_s


# The time breakdown's parts, in the report's order: what the workers did, then what they did not.
TIME_PARTS: tuple[str, ...] = (
    "plan", "probe", "setup", "equilibration", "production", "analysis", "report", "idle", "unused"
)  # fmt: skip
SIMULATION_PARTS: tuple[str, ...] = ("setup", "equilibration", "production")


class TimeBreakdown(BaseModel):
    """Where a study's worker-seconds went (``workflows/study/timing.py``), for the report's table.

    Each part is in worker-seconds: ``plan``, ``probe`` and ``report`` are their phases' wall times
    times ``workers`` (every worker waits on them; ``report`` until rendering began, which follows this
    record); ``setup``, ``equilibration`` and ``production`` are the simulation calls' own wall times
    (``segments.jsonl``), ``analysis`` the workers' trajectory analyses. ``idle``: workers with nothing
    to do while the study ran; ``unused``: the budget not spent. Both are remainders and never negative:
    the parts add up to ``workers * budget_s``, plus ``overrun`` when more than that was recorded.
    """

    workers: int
    budget_s: float
    elapsed_s: float  # the study's working time when this was recorded
    plan: float = 0.0
    probe: float = 0.0
    setup: float = 0.0
    equilibration: float = 0.0
    production: float = 0.0
    analysis: float = 0.0
    report: float = 0.0
    idle: float = 0.0
    unused: float = 0.0
    overrun: float = 0.0  # worker-seconds beyond the budget (then ``unused`` is 0)
    simulation_calls: int = 0  # run_md calls (ledger lines) counted
    unsplit_calls: int = 0  # of them, recorded without setup/equilibration times: all counted as production

    @property
    def capacity(self) -> float:
        """The budget in worker-seconds: what the parts are fractions of."""
        return self.workers * self.budget_s

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fractions(self) -> dict[str, float]:
        """Each part (and the overrun) as a fraction of ``workers * budget_s``."""
        parts = {name: getattr(self, name) for name in (*TIME_PARTS, "overrun")}
        return {name: value / self.capacity if self.capacity else 0.0 for name, value in parts.items()}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def budget_use(self) -> float:
        """Simulation wall time (setup, equilibration, production) across workers / (workers x budget)."""
        simulating = sum(getattr(self, name) for name in SIMULATION_PARTS)
        return simulating / self.capacity if self.capacity else 0.0


class StudyRecord(BaseModel):
    """Everything a report shows about one study."""

    run_id: str
    goal: str
    structure: str
    plan: dict[str, Any]
    plan_source: Source
    rationale: str | None  # model-written, labelled as such
    guardrail_changes: list[GuardrailChange] = []
    conditions: list[ConditionRecord] = []
    adaptations: list[Adaptation] = []
    interpretation: str | None = None  # model-written; numbers in it are checked against the table
    interpretation_source: Source | None = None
    provenance: Provenance
    budget_s: float | None = None  # the study's wall-time budget; None in records made before it was kept
    outlook: VerdictOutlook | None = None  # set when a verdict needs more than the budget allowed
    allocation: list[JobAllocation] = []  # set when the run was carried by batch jobs (``sciagent submit``)
    time_breakdown: TimeBreakdown | None = None  # None in records made before it was kept
