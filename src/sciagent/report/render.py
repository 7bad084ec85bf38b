"""Render a study into ``report.md``, a self-contained ``report.html`` and ``results.json``.

Both documents are filled from one context built here, from the rows of ``tables.py`` and the number
check of ``numbers.py``, so they say the same things; jinja2 templates in ``templates/`` hold the
layout. The HTML escapes everything (model-written text included) and embeds the plots as base64
PNG, so it can be mailed or archived as one file. ``results.json`` holds the whole record, so
``load_record`` and ``render_report`` can re-render a report later from that file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import ValidationError

from sciagent.errors import UserError
from sciagent.report.models import Adaptation, StudyRecord
from sciagent.report.numbers import NumberCheck, allowed_numbers, number_check, segments
from sciagent.report.plots import PlotSet, make_plots
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
from sciagent.science.outputs import write_text_atomic

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
    write_text_atomic(files.markdown, _environment(html=False).get_template("report.md.j2").render(context))
    write_text_atomic(files.html, _environment(html=True).get_template("report.html.j2").render(context))
    write_text_atomic(files.results_json, results_json_text(record, rows, check))
    return files


def interpretation_check(record: StudyRecord) -> NumberCheck:
    """The number check of the model's interpretation against everything the report shows."""
    return number_check(record.interpretation or "", allowed_numbers(record))


def results_json_text(record: StudyRecord, rows: list[ConditionRow], check: NumberCheck) -> str:
    """``results.json``: the record, the table rows and the number check; refuses NaN and infinity."""
    document = {
        "record": record.model_dump(mode="json"),
        "table": [row.model_dump(mode="json") for row in rows],
        "number_check": check.model_dump(mode="json"),
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


def _environment(*, html: bool) -> jinja2.Environment:
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
    flagged = len(check.flagged)
    flagged_markdown, footnotes = _flag_markdown(interpretation, check)
    return {
        "record": record,
        "summary": _summary(rows),
        "plan_items": [(key, plain(value)) for key, value in record.plan.items()],
        "plan_label": model_label if record.plan_source == "model" else FALLBACK_LABEL,
        "guardrails": [
            (c.field, plain(c.proposed), plain(c.applied), c.reason) for c in record.guardrail_changes
        ],
        "table_parts": _table_parts(rows),
        "display_note": DISPLAY_NOTE,
        "verdicts": [_verdict(row) for row in rows],
        "plots": plots.plots,
        "plot_notes": plots.notes,
        "adaptations": [_adaptation_cells(a) for a in record.adaptations],
        "interpretation_label": _interpretation_label(record, model_label),
        "interpretation_segments": segments(interpretation, check.flagged),
        "interpretation_markdown": flagged_markdown,
        "interpretation_footnotes": footnotes,
        "check_line": (
            f"Numbers checked against the data: {check.checked}; not found in the data: {flagged}."
        ),
        "check": check,
        "provenance": _provenance(record),
    }


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
    for piece, flagged in segments(text, check.flagged):
        if not flagged:
            pieces.append(piece)
            continue
        number = check.flagged[len(notes)]
        notes.append(f"[^nd{len(notes) + 1}]: ⚠ not in the data (nearest value: {plain(number.nearest)})")
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
