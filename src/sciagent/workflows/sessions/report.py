"""An ``ask`` session's report: ``report.md``, a self-contained ``report.html`` and ``results.json``.

A person reading a session needs what the model was asked, what it answered (with the numbers that
no tool result holds marked, so a made-up value cannot pass for a computed one), every tool call in
order with what came of it, the plots the tools drew, and where it all ran. Both documents are filled
from one context, like the study report, so they say the same; the HTML embeds the plots as base64 PNG
so it can be mailed or archived as one file. ``results.json`` is the whole outcome, unabridged.
"""

from __future__ import annotations

import json
import platform
import socket
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import openmm

from sciagent.agent.steps import SessionOutcome, ToolCallRecord
from sciagent.atomic import write_atomic
from sciagent.redaction import scrub
from sciagent.report.numbers import FlaggedNumber, find_numbers, segments
from sciagent.report.plots import Plot
from sciagent.report.render import environment, plain
from sciagent.report.tables import MISSING, format_number

UNATTRIBUTED_REASON = "in no tool result of this session, nor in the question"
SUMMARY_PARTS = 6  # fields of a result shown in the timeline; results.json has them all
TEXT_CHARS = 48  # a string value in the timeline is cut to this
_FAILED = frozenset({"failed", "invalid", "refused"})


@dataclass(frozen=True)
class SessionReportPaths:
    """Where a session's report files are."""

    markdown: Path
    html: Path
    results_json: Path


def write_session_report(
    session_dir: Path,
    *,
    session_id: str,
    question: str,
    model_id: str,
    outcome: SessionOutcome,
    provenance: dict[str, Any],
) -> SessionReportPaths:
    """Write the session's three report files into ``session_dir``.

    ``provenance`` is what the caller knows of the session (profile, sites, budgets, start time);
    the software versions and the host are added here, and the whole of it goes in both documents.
    """
    session_dir = Path(session_dir)
    full_provenance = {**_software(), **provenance}
    paths = SessionReportPaths(
        session_dir / "report.md", session_dir / "report.html", session_dir / "results.json"
    )
    answer = _answer_segments(outcome)
    context = {
        "session_id": session_id,
        "question": question,
        "model_id": model_id,
        "outcome": outcome,
        "answer_segments": answer,
        "answer_md": "".join(f"**{text}** ⚠" if flag else text for text, flag in answer),
        "answer_label": f"model-written ({model_id})" if outcome.answer else "no answer",
        "timeline": [_timeline_row(record) for record in outcome.tool_calls],
        "plots": _plots(session_dir, outcome.tool_calls),
        "provenance": _provenance_rows(session_id, model_id, outcome, full_provenance),
        "unattributed_reason": UNATTRIBUTED_REASON,
    }
    write_atomic(paths.markdown, scrub(environment(html=False).get_template("session.md.j2").render(context)))
    write_atomic(paths.html, scrub(environment(html=True).get_template("session.html.j2").render(context)))
    document = {
        **outcome.model_dump(mode="json"),
        "session_id": session_id,
        "question": question,
        "model_id": model_id,
        "provenance": full_provenance,
    }
    text = json.dumps(document, indent=2, ensure_ascii=False, default=str)  # a Path or a date in provenance
    write_atomic(paths.results_json, scrub(text) + "\n")
    return paths


def _answer_segments(outcome: SessionOutcome) -> list[tuple[str, FlaggedNumber | None]]:
    """The answer split so each unattributed number can be marked; why there is none, if there is none."""
    if not outcome.answer:
        reason = outcome.reason or "no reason recorded"
        return [(f"No answer: the session ended {outcome.status} ({reason}).", None)]
    unattributed = set(outcome.unattributed_numbers)
    flagged = [
        FlaggedNumber(
            text=number.text,
            value=number.value,
            start=number.start,
            end=number.end,
            nearest=None,
            reason=UNATTRIBUTED_REASON,
        )
        for number in find_numbers(outcome.answer)
        if number.text in unattributed
    ]
    return segments(outcome.answer, flagged)


def _timeline_row(record: ToolCallRecord) -> dict[str, Any]:
    """One tool call as the timeline shows it: arguments and result each in one short line."""
    if record.error is not None:
        outcome = " ".join(record.error.split())
    elif record.result is not None:
        outcome = _result_line(record.result)
    else:
        outcome = MISSING
    return {
        "step": record.step,
        "tool": record.tool,
        "arguments": _arguments(record),
        "status": record.status,
        "css": "status-failed" if record.status in _FAILED else "",
        "outcome": outcome,
    }


def _arguments(record: ToolCallRecord) -> str:
    return ", ".join(f"{name}={_short(value)}" for name, value in record.arguments.items())


def _result_line(result: dict[str, Any]) -> str:
    """A tool result in one line: its numbers first, then texts, then how long its lists are.

    Nested objects are opened one level (``secondary_structure.helix=0.6``); what does not fit in
    ``SUMMARY_PARTS`` is counted, never silently dropped.
    """
    parts: list[tuple[int, str]] = []
    for name, value in result.items():
        if isinstance(value, dict) and value and not any(isinstance(v, dict | list) for v in value.values()):
            parts += [(_rank(item), f"{name}.{key}={_short(item)}") for key, item in value.items()]
        elif isinstance(value, dict | list):
            parts.append((2, f"{name}: {len(value)} {'item' if len(value) == 1 else 'items'}"))
        else:
            parts.append((_rank(value), f"{name}={_short(value)}"))
    shown = [text for _, text in sorted(parts, key=lambda part: part[0])[:SUMMARY_PARTS]]
    more = len(parts) - len(shown)
    return ", ".join(shown) + (f", … {more} more" if more else "") if parts else MISSING


def _rank(value: Any) -> int:
    """Numbers before texts before collections: the scalars are what a reader scans a timeline for."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1
    return 0


def _short(value: Any) -> str:
    """A value in a few characters: numbers to display precision, long texts and lists cut, None as —."""
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(_short(item) for item in value[:3])}, … {len(value)} in all]"
    if isinstance(value, list):
        return f"[{', '.join(_short(item) for item in value)}]"
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    text = plain(value)
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def _plots(session_dir: Path, records: list[ToolCallRecord]) -> list[Plot]:
    """Every PNG a tool result names that is a file in the session directory, once, in call order."""
    root = session_dir.resolve()
    plots: dict[Path, Plot] = {}
    for record in records:
        for text in _png_paths(record.result):
            path = (root / text).resolve()
            if path in plots or not path.is_relative_to(root) or not path.is_file():
                continue
            title = f"step {record.step}: {record.tool} ({_arguments(record)})"
            plots[path] = Plot(
                name=str(path.relative_to(root)), title=title, png=path.read_bytes(), path=path
            )
    return list(plots.values())


def _png_paths(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.lower().endswith(".png") else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [path for item in value for path in _png_paths(item)]
    return []


def _provenance_rows(
    session_id: str, model_id: str, outcome: SessionOutcome, provenance: dict[str, Any]
) -> list[tuple[str, str]]:
    rows = [
        ("session", session_id),
        ("model", model_id),
        ("status", outcome.status if outcome.reason is None else f"{outcome.status}: {outcome.reason}"),
        ("steps", str(outcome.steps)),
        ("tool calls", str(len(outcome.tool_calls))),
        ("tokens", f"{outcome.tokens:,}"),
        ("wall time", f"{format_number(outcome.wall_time_s)} s"),
    ]
    return rows + [(name.replace("_", " "), plain(value)) for name, value in provenance.items()]


def _software() -> dict[str, str]:
    """The software and host the session ran with: what a reader needs to reproduce a number."""
    return {
        "sciagent_version": version("sciagent"),
        "openmm_version": openmm.__version__,
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
    }
