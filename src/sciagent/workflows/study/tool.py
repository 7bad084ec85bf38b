"""The thermal-stability workflow as one agent tool: ``run_stability_study``.

An open-ended session can hand a whole study to the workflow that already plans, fits the budget,
simulates, adapts and reports, instead of re-deriving it call by call. The study runs inside the
session's directory (``studies/``: its own journal and one folder per run) with the session's model
profile, and the tool returns what the study's own ``results.json`` says, so the model and the
session report quote the same verdicts and numbers as the study's report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sciagent.report.findings import findings
from sciagent.report.render import load_record
from sciagent.report.tables import condition_rows
from sciagent.tools.registry import Tool, ToolContext, ToolFailed, define_tool
from sciagent.tools.structures import STRUCTURE_HELP
from sciagent.workflows.study.probe import MIN_SIMULATION_S
from sciagent.workflows.study.runner import RunOptions, StudyRun, start_study
from sciagent.workflows.study.state import DEFAULT_REPORT_RESERVE_S

log = logging.getLogger(__name__)

STUDIES_DIR = "studies"  # under the session directory: the studies' journal and run folders
MIN_BUDGET_S = MIN_SIMULATION_S + DEFAULT_REPORT_RESERVE_S  # less is refused by the workflow before it starts
MAX_BUDGET_S = 24 * 3600.0


class StudyArguments(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "goal": "Is villin stable at 300 K and does it unfold at 400 K?",
                    "structure": "villin",
                    "budget_s": 600,
                }
            ]
        },
    )

    goal: str = Field(
        min_length=10,
        max_length=2000,
        description="what the study should find out, with the temperatures of interest: the workflow's "
        "planner chooses the conditions from it",
    )
    structure: str = Field(description=STRUCTURE_HELP)
    budget_s: float = Field(
        default=300.0,
        ge=MIN_BUDGET_S,
        le=MAX_BUDGET_S,
        description="wall time for the whole study in seconds (planning, simulations, report)",
    )
    max_simulation_time_s: float | None = Field(
        default=None, gt=0, description="wall time each simulation may take at most; none: the budget decides"
    )
    site: str | None = Field(
        default=None, description="where the simulations run; the session's site if omitted"
    )


class ConditionVerdict(BaseModel):
    """One condition's verdict with the numbers behind it, as the study's results table has them."""

    condition: str
    temperature_k: float
    replica: int
    status: Literal["completed", "failed", "not run"]
    verdict: Literal["stable", "unstable", "inconclusive"] | None
    reasons: list[str]
    note: str | None = Field(description="why there is no verdict, when there is none")
    simulated_ns: float | None
    final_window_rmsd_mean_angstrom: float | None
    rg_mean_nm: float | None
    ss_retention: float | None
    mean_temperature_k: float | None


class StudyOutcome(BaseModel):
    run_id: str
    status: Literal["completed", "incomplete"] = Field(
        description="incomplete: some condition failed or was not run"
    )
    plan_source: Literal["model", "fallback"]
    spent_s: float = Field(description="wall time the study used of its budget")
    conditions: list[ConditionVerdict]
    findings: list[str] = Field(description="sciagent's own sentences on the verdicts, computed, not written")
    report_md: str = Field(description="paths relative to the session directory")
    report_html: str
    results_json: str


def run_stability_study(arguments: StudyArguments, context: ToolContext) -> StudyOutcome:
    """Run a complete thermal-stability study of a protein (plan temperatures and run lengths, fit them to
    the budget, simulate every condition, adapt failed runs, analyse and write a report); returns each
    condition's verdict (stable, unstable, inconclusive) with its RMSD, Rg and secondary-structure
    retention, and the report's paths. Takes minutes to hours."""
    if context.settings is None:
        raise ToolFailed("this session cannot run workflows (no settings in the tool context)", "setup")
    session_dir = context.session_dir.resolve()
    settings = context.settings.model_copy(update={"workspace": session_dir / STUDIES_DIR})
    default_site = context.tasks.default_site if context.tasks is not None else "local"
    options = RunOptions(
        goal=arguments.goal,
        structure=arguments.structure,
        llm=settings.default_llm,
        site=arguments.site or default_site,
        budget_s=arguments.budget_s,
        max_simulation_time_s=arguments.max_simulation_time_s,
        notify=lambda phase, message: log.info("study %s: %s", phase, message),
    )
    return _outcome(start_study(options, settings), session_dir)


def _outcome(run: StudyRun, session_dir: Path) -> StudyOutcome:
    """The tool's result, read from the ``results.json`` the study's report wrote."""
    results = run.run_dir / "results.json"
    record = load_record(results)
    rows = condition_rows(record)
    return StudyOutcome(
        run_id=run.run_id,
        status="incomplete" if run.unfinished else "completed",
        plan_source=record.plan_source,
        spent_s=round(run.state.spent_s, 1),
        conditions=[ConditionVerdict.model_validate(row.model_dump()) for row in rows],
        findings=findings(record),
        report_md=str((run.run_dir / "report.md").relative_to(session_dir)),
        report_html=str((run.run_dir / "report.html").relative_to(session_dir)),
        results_json=str(results.relative_to(session_dir)),
    )


STUDY_TOOLS: list[Tool] = [
    define_tool(run_stability_study, effects={"computes", "writes"}, cost="hours", runs_on_site=True),
]
