"""Render a study into ``report.md``, a self-contained ``report.html`` and ``results.json``.

Both documents are filled from one context built here, from the rows of ``tables.py``, the findings of
``findings.py``, the number check of ``attribution.py`` and the degeneracy tests of ``quality.py``, so
they say the same things; jinja2 templates in ``templates/`` hold the layout. A model text that is
degenerate (a loop, a non-answer) is not shown as what it claims to be: the report says why it was set
aside and keeps it in an appendix; the computed findings are there either way. The HTML escapes
everything (model-written text included) and embeds the plots as base64 PNG, so it can be mailed or
archived as one file. ``results.json`` holds the whole record, so
``load_record`` and ``render_report`` can re-render a report later from that file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import ValidationError

from sciagent.atomic import write_atomic
from sciagent.errors import UserError
from sciagent.redaction import scrub
from sciagent.report.accounting import time_table
from sciagent.report.allocation import allocation_table
from sciagent.report.attribution import NumberCheck, check_text
from sciagent.report.findings import FINDINGS_LABEL, findings
from sciagent.report.models import Adaptation, StudyRecord, VerdictOutlook
from sciagent.report.numbers import segments
from sciagent.report.plots import PlotSet, make_plots
from sciagent.report.quality import RATIONALE_MIN_WORDS, degeneracy, interpretation_degeneracy, quoted
from sciagent.report.tables import (
    DISPLAY_SIGNIFICANT_DIGITS,
    MISSING,
    TABLE_PARTS,
    TEXT_HEADERS,
    ConditionRow,
    condition_rows,
    display_cells,
    format_number,
    status_text,
)
from sciagent.report.values import study_values

FALLBACK_LABEL = "fallback plan (no model answer validated)"
DISPLAY_NOTE = (
    f"Values are shown to {DISPLAY_SIGNIFICANT_DIGITS} significant digits (whole numbers from "
    f"{10**DISPLAY_SIGNIFICANT_DIGITS:,} up); results.json holds them unrounded. “{MISSING}” means no "
    "value: the run failed, was not run, or was not analysed."
)


@dataclass(frozen=True)
class ReportFiles:
    """Where a rendered report's files are."""

    markdown: Path
    html: Path
    results_json: Path
    plots: dict[str, Path]


def render_report(record: StudyRecord, out_dir: Path) -> ReportFiles:
    """Write ``report.md``, ``report.html``, ``results.json`` and ``plots/*.png`` into ``out_dir``.

    Rendering the same record twice writes the same ``results.json``: it holds nothing that depends
    on when or where the report was rendered.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = condition_rows(record)
    check = interpretation_check(record)
    plots = make_plots(record, out_dir / "plots")
    context = _context(record, rows, check, plots)
    files = ReportFiles(
        markdown=out_dir / "report.md",
        html=out_dir / "report.html",
        results_json=out_dir / "results.json",
        plots={plot.name: plot.path for plot in plots.plots},
    )
    write_atomic(files.markdown, scrub(environment(html=False).get_template("report.md.j2").render(context)))
    write_atomic(files.html, scrub(environment(html=True).get_template("report.html.j2").render(context)))
    write_atomic(files.results_json, scrub(results_json_text(record, rows, check)))
    return files


def interpretation_check(record: StudyRecord) -> NumberCheck:
    """The attribution check of the interpretation: each number against what its sentence names."""
    return check_text(record.interpretation or "", study_values(record))


def interpretation_set_aside(record: StudyRecord, check: NumberCheck) -> str | None:
    """Why the model's interpretation is not shown as one, or None (also for sciagent's fallback)."""
    if record.interpretation_source != "model" or not record.interpretation:
        return None
    return interpretation_degeneracy(record.interpretation, check)


def results_json_text(record: StudyRecord, rows: list[ConditionRow], check: NumberCheck) -> str:
    """``results.json``: the record, the table rows, the findings and the number check.

    Refuses NaN and infinity. Everything but the record is recomputed from it on every render.
    """
    document = {
        "record": record.model_dump(mode="json"),
        "table": [row.model_dump(mode="json") for row in rows],
        "findings": findings(record),
        "number_check": {**check.model_dump(mode="json"), "summary": check.summary()},
        "interpretation_set_aside": interpretation_set_aside(record, check),
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def load_record(results_json: Path) -> StudyRecord:
    """Read the record back from a ``results.json`` written by ``render_report``.

    Raises:
        UserError: the file is missing, is not JSON, or does not hold a study record.
    """
    path = Path(results_json)
    try:
        document = json.loads(path.read_text())
        return StudyRecord.model_validate(document["record"])
    except FileNotFoundError as exc:
        raise UserError(f"{path} does not exist: give a run directory that holds results.json") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a results.json written by sciagent ({exc})") from exc
    except ValidationError as exc:
        raise UserError(f"{path} holds an invalid study record: {exc}") from exc


def environment(*, html: bool) -> jinja2.Environment:
    """Templates from the package; HTML autoescapes, and every undefined name is an error."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("sciagent.report", "templates"),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["cell"] = _markdown_cell
    environment.filters["quote"] = lambda text: "\n".join(f"> {line}" for line in text.splitlines())
    return environment


def _context(
    record: StudyRecord, rows: list[ConditionRow], check: NumberCheck, plots: PlotSet
) -> dict[str, Any]:
    """Everything the templates show, as display strings, so both formats print the same text."""
    model_label = f"model-written ({record.provenance.model_id})"
    interpretation = record.interpretation or ""
    flagged_markdown, footnotes = _flag_markdown(interpretation, check)
    set_aside = interpretation_set_aside(record, check)
    return {
        "record": record,
        "summary": _summary(rows),
        "plan_items": [(key, plain(value)) for key, value in record.plan.items()],
        "plan_label": model_label if record.plan_source == "model" else FALLBACK_LABEL,
        "rationale": _rationale(record),
        "guardrails": [
            (c.field, plain(c.proposed), plain(c.applied), c.reason) for c in record.guardrail_changes
        ],
        "table_parts": _table_parts(rows),
        "display_note": DISPLAY_NOTE,
        "verdicts": [_verdict(row) for row in rows],
        "outlook": _outlook(record.outlook) if record.outlook else None,
        "findings": findings(record),
        "findings_label": FINDINGS_LABEL,
        "plots": plots.plots,
        "plot_notes": plots.notes,
        "adaptations": [_adaptation_cells(a) for a in record.adaptations],
        "interpretation_label": _interpretation_label(record, model_label),
        "interpretation_set_aside": (
            f"The model's interpretation was set aside: it {set_aside}. The findings above are "
            "computed; its text is in the appendix."
            if set_aside
            else None
        ),
        "interpretation_segments": segments(interpretation, check.flagged),
        "interpretation_markdown": flagged_markdown,
        "interpretation_footnotes": footnotes,
        "check_line": check.summary(),
        "check": check,
        "provenance": _provenance(record),
        "accounting": [
            table
            for table in (time_table(record.time_breakdown), allocation_table(record.allocation))
            if table is not None
        ],
    }


def _rationale(record: StudyRecord) -> dict[str, Any]:
    """The plan's rationale, or, when the model's is degenerate, a statement that it gave none.

    ``usable`` is False for a degenerate model rationale: the template then shows ``text`` as a
    statement of sciagent's, not inside the model-written box.
    """
    text = record.rationale
    if not text:
        return {"usable": False, "text": "none recorded"}
    if record.plan_source == "model":
        reason = degeneracy(text, RATIONALE_MIN_WORDS)
        if reason is not None:
            statement = f"the model gave no usable rationale: {quoted(text)} (it {reason})"
            return {"usable": False, "text": statement}
    return {"usable": True, "text": text}


def _outlook(outlook: VerdictOutlook) -> dict[str, str]:
    """What a verdict would need, as a sentence, and the command that would get one."""
    return {
        "sentence": (
            f"No verdict was possible within the budget ({outlook.reason}): runs of at least "
            f"{format_number(outlook.needed_production_ps)} ps are needed (about "
            f"{_about(outlook.estimated_wall_s)} at the measured speed)."
        ),
        "command": outlook.command,
    }


def _about(seconds: float) -> str:
    """A rough wall time for people: "40 s", "6 min", "1.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table_parts(rows: list[ConditionRow]) -> list[dict[str, Any]]:
    """The results table's parts: headers, and per row (text, css class) cells in header order."""
    parts = []
    for title, headers in TABLE_PARTS:
        body = []
        for row in rows:
            cells = display_cells(row)
            special = {
                "Status": f"status-{row.status.replace(' ', '-')}",
                "Verdict": f"verdict-{row.verdict}",
            }
            body.append([(cells[h], special.get(h, "" if h in TEXT_HEADERS else "num")) for h in headers])
        classes = ["" if h in TEXT_HEADERS else "num" for h in headers]
        parts.append({"title": title, "headers": list(zip(headers, classes, strict=True)), "rows": body})
    return parts


def _adaptation_cells(a: Adaptation) -> tuple[str, ...]:
    """One adaptation as table cells, in the order of the template's header."""
    error, rationale = a.error or MISSING, a.rationale or MISSING
    return (a.condition, str(a.round), a.trigger, error, a.decided_by, plain(a.changes), rationale)


def _summary(rows: list[ConditionRow]) -> str:
    statuses = [row.status for row in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("completed", "failed", "not run"))
    verdicts = [row.verdict for row in rows if row.verdict]
    tally = ", ".join(f"{verdicts.count(v)} {v}" for v in ("stable", "unstable", "inconclusive"))
    return f"{len(rows)} conditions: {counts}. Verdicts: {tally if verdicts else 'none'}."


def _verdict(row: ConditionRow) -> dict[str, Any]:
    """One condition's verdict and its reasons, or why there is none."""
    verdict = row.verdict or f"no verdict: {status_text(row)}"
    return {
        "condition": row.condition,
        "verdict": verdict,
        "css": f"verdict-{row.verdict or 'none'}",
        "reasons": row.reasons,
        "note": row.note,
    }


def _interpretation_label(record: StudyRecord, model_label: str) -> str:
    if record.interpretation_source == "model":
        return model_label
    if record.interpretation_source == "fallback":
        return "fallback text (no model answer validated)"
    return "source not recorded"


def _flag_markdown(text: str, check: NumberCheck) -> tuple[str, list[str]]:
    """The text with each flagged number in bold and a footnote mark, and the footnotes."""
    pieces, notes = [], []
    for piece, flag in segments(text, check.flagged):
        if flag is None:
            pieces.append(piece)
            continue
        notes.append(f"[^nd{len(notes) + 1}]: ⚠ {flag.reason}")
        pieces.append(f"**{piece}**[^nd{len(notes)}]")
    return "".join(pieces), notes


def _provenance(record: StudyRecord) -> list[tuple[str, str]]:
    p = record.provenance
    walls = ", ".join(f"{phase} {format_number(s)} s" for phase, s in p.phase_wall_times_s.items())
    return [
        ("run id", record.run_id),
        ("sciagent", p.sciagent_version),
        ("OpenMM", p.openmm_version),
        ("Python", p.python_version),
        ("host", p.hostname),
        ("platforms", ", ".join(p.platforms) or MISSING),
        ("LLM profile", p.llm_profile),
        ("model", p.model_id),
        ("seeds", plain(p.seeds)),
        ("wall time per phase", walls or MISSING),
        ("started", p.started_at),
        ("finished", p.finished_at or "not finished"),
    ]


def plain(value: Any) -> str:
    """An input value (plan, guardrail, change) shown exactly as given: floats unrounded, no quotes."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={plain(item)}" for key, item in value.items()) or MISSING
    if isinstance(value, list | tuple):
        return ", ".join(plain(item) for item in value) or MISSING
    return str(value)


def _markdown_cell(value: object) -> str:
    """Text safe inside a markdown table cell: pipes escaped, line breaks flattened."""
    return " ".join(str(value).split()).replace("|", "\\|")
