"""Turn a study's state into its report: records, the model's interpretation, rendered files."""

from __future__ import annotations

import platform
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import openmm

from sciagent.report.models import ConditionRecord, Provenance, StudyRecord, TimeBreakdown, VerdictOutlook
from sciagent.report.render import render_report
from sciagent.report.tables import HEADERS, condition_rows, display_cells
from sciagent.workflows.study import prompts
from sciagent.workflows.study.schemas import Interpretation
from sciagent.workflows.study.state import StudyState

if TYPE_CHECKING:
    from sciagent.workflows.study.context import StudyContext

# What the report says when no model interpretation validated: the computed findings say the rest,
# so this repeats none of them.
MIN_INTERPRETATION_TOKENS = 60  # fewer cannot say anything worth reading about a results table
FALLBACK_INTERPRETATION = (
    "No interpretation from the model validated; the findings above are computed by sciagent from the "
    "analysis."
)


def build_record(state: StudyState, run_dir: Path) -> StudyRecord:
    """The report's records: each condition with its last outcome and the spec that produced it."""
    conditions = []
    for condition in state.conditions:
        outcome = condition.latest_outcome(run_dir)
        status = condition.status if condition.status in ("completed", "failed", "not run") else "failed"
        conditions.append(
            ConditionRecord(
                name=condition.name,
                temperature_k=condition.temperature_k,
                replica=condition.replica,
                spec=outcome.result.spec if outcome else condition.spec,
                status=status,
                attempts=condition.attempts,
                outcome=outcome,
                failure=condition.failure
                or (None if status == "completed" else "interrupted before it finished"),
            )
        )
    assert state.plan is not None and state.plan_source is not None
    return StudyRecord(
        run_id=state.run_id,
        goal=state.goal,
        structure=state.structure,
        plan=state.plan.model_dump(mode="json", exclude={"rationale"}),
        plan_source=state.plan_source,
        rationale=state.plan.rationale,
        guardrail_changes=state.guardrail_changes,
        conditions=conditions,
        adaptations=state.adaptations,
        provenance=_provenance(state, conditions),
        budget_s=state.budget_s,
    )


def write_report(
    state: StudyState,
    ctx: StudyContext,
    step_id: int | None,
    outlook: VerdictOutlook | None = None,
    max_tokens: int | None = None,
    time_breakdown: Callable[[], TimeBreakdown] | None = None,
) -> dict[str, Path]:
    """Ask the model to interpret the table (checked, labelled), then render md, html and json.

    ``outlook`` is what a verdict would need when the budget allowed none (the workflow knows the
    measured speed and the verdict's needs); the report prints it with the command that would get one.
    ``max_tokens`` is what the budget leaves the model; too few, and the model is not asked at all.
    ``time_breakdown`` measures where the time went; it is called last, just before rendering.
    """
    record = build_record(state, ctx.run_dir)
    record.outlook = outlook
    messages = prompts.interpretation_messages(state.goal, results_table_text(record))
    fallback = Interpretation(summary=FALLBACK_INTERPRETATION)
    if max_tokens is not None and max_tokens < MIN_INTERPRETATION_TOKENS:
        reason = "no time left in the budget for the model's interpretation"
        decision = ctx.advisor.fall_back("interpret", messages, fallback, reason, step_id)
    else:
        decision = ctx.advisor.decide(
            "interpret", messages, Interpretation, lambda: fallback, step_id, max_tokens=max_tokens
        )
    record.interpretation = decision.value.summary
    record.interpretation_source = decision.source
    record.time_breakdown = time_breakdown() if time_breakdown else None
    files = render_report(record, ctx.run_dir)
    return {
        "report_md": files.markdown,
        "report_html": files.html,
        "results_json": files.results_json,
    }


def results_table_text(record: StudyRecord) -> str:
    """The results table as markdown, exactly as the report displays it, for the model to read."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(display_cells(row)) + " |" for row in condition_rows(record)]
    return "\n".join(lines)


def _provenance(state: StudyState, conditions: list[ConditionRecord]) -> Provenance:
    platforms = sorted(
        {c.outcome.result.platform for c in conditions if c.outcome and c.outcome.result.platform}
    )
    return Provenance(
        sciagent_version=version("sciagent"),
        openmm_version=openmm.__version__,
        python_version=platform.python_version(),
        hostname=socket.gethostname(),
        platforms=platforms,
        llm_profile=state.llm_profile,
        model_id=state.model_id,
        seeds={c.name: c.spec.seed for c in conditions},
        phase_wall_times_s=dict(state.phase_wall_times_s),
        started_at=state.started_at,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
