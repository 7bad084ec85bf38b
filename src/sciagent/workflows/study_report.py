"""Turn a study's state into its report: records, the model's interpretation, rendered files."""

from __future__ import annotations

import platform
import socket
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import openmm

from sciagent.report.models import ConditionRecord, Provenance, StudyRecord
from sciagent.report.render import render_report
from sciagent.report.tables import HEADERS, condition_rows, display_cells, format_number
from sciagent.workflows import prompts
from sciagent.workflows.study_schemas import Interpretation
from sciagent.workflows.study_state import StudyState

if TYPE_CHECKING:
    from sciagent.workflows.md_stability import StudyContext


def build_record(state: StudyState, run_dir: Path) -> StudyRecord:
    """The report's records, with each condition's outcome read back from its work directory."""
    conditions = []
    for condition in state.conditions:
        outcome = condition.stored_outcome(run_dir) if condition.status != "not run" else None
        status = condition.status if condition.status in ("completed", "failed", "not run") else "failed"
        conditions.append(
            ConditionRecord(
                name=condition.name,
                temperature_k=condition.temperature_k,
                replica=condition.replica,
                spec=condition.spec,
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
    )


def write_report(state: StudyState, ctx: StudyContext, step_id: int | None) -> dict[str, Path]:
    """Ask the model to interpret the table (checked, labelled), then render md, html and json."""
    record = build_record(state, ctx.run_dir)
    table = results_table_text(record)
    decision = ctx.advisor.decide(
        "interpret",
        prompts.interpretation_messages(state.goal, table),
        Interpretation,
        lambda: Interpretation(summary=fallback_interpretation(record)),
        step_id,
    )
    record.interpretation = decision.value.summary
    record.interpretation_source = decision.source
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


def fallback_interpretation(record: StudyRecord) -> str:
    """A plain statement of each verdict, used when no model interpretation validated."""
    parts = []
    for row in condition_rows(record):
        if row.verdict is None:
            parts.append(f"{row.condition}: {row.status}, no verdict.")
            continue
        parts.append(
            f"{row.condition}: {row.verdict}, final-window backbone RMSD "
            f"{format_number(row.final_window_rmsd_mean_angstrom)} Å."
        )
    return "Generated from the table, not by the model: " + " ".join(parts)


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
