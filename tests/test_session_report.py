"""The session report, from an outcome made of real tool results: structure_info and fetch_structure run
through the registry, a PNG drawn with matplotlib as the plot tool draws one, a task status model."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import openmm
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sciagent.agent.observations import unattributed_numbers
from sciagent.agent.steps import SessionOutcome, ToolCallRecord
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolArgumentsError, ToolContext
from sciagent.tools.tasks import TaskStatus
from sciagent.workflows.sessions.report import write_session_report

QUESTION = "How many atoms does the villin headpiece have, and how far does it drift at 300 K?"
ANSWER = "The villin headpiece has 582 atoms in 35 residues; its backbone RMSD settles near 9.87 Å."
PROVENANCE = {"llm_profile": "scripted", "sites": ["local"], "budget": {"max_steps": 20}, "started_at": None}


def _png(path: Path) -> bytes:
    figure = Figure(figsize=(3, 2), dpi=50)
    figure.add_subplot().plot([0.0, 1.0, 2.0], [0.5, 1.2, 1.1])
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path.read_bytes()


def _outcome(session: Path) -> tuple[SessionOutcome, bytes]:
    """Four calls: structure info (ok), a structure that does not exist (invalid), a task status with a
    missing value, and a plot whose PNG is in the session directory."""
    tools, context = builtin_tools(), ToolContext(session_dir=session)
    info = tools.get("structure_info").call({"structure": "villin"}, context)
    with pytest.raises(ToolArgumentsError) as missing:
        tools.get("fetch_structure").call({"structure": "no-such-file.pdb"}, context)
    status = TaskStatus(task_id="sim-1", site="local", state="completed", elapsed_s=12.5)
    png = _png(session / "plots" / "rmsd-sim-1.png")
    plot = {"path": "plots/rmsd-sim-1.png", "metric": "rmsd", "unit": "Å", "lines": [{"task_id": "sim-1"}]}
    records = [
        ToolCallRecord(
            step=1, tool="structure_info", arguments={"structure": "villin"}, status="ok",
            result=info.model_dump(mode="json"),
        ),
        ToolCallRecord(
            step=1, tool="fetch_structure", arguments={"structure": "no-such-file.pdb"}, status="invalid",
            error=f"invalid call: {missing.value}",
        ),
        ToolCallRecord(
            step=2, tool="task_status", arguments={"task_id": "sim-1"}, status="ok",
            result=status.model_dump(mode="json"),
        ),
        ToolCallRecord(
            step=3, tool="plot", arguments={"task_ids": ["sim-1"], "metric": "rmsd"}, status="ok", result=plot
        ),
    ]  # fmt: skip
    results = [record.result for record in records if record.result is not None]
    outcome = SessionOutcome(
        status="answered",
        answer=ANSWER,
        tool_calls=records,
        unattributed_numbers=unattributed_numbers(ANSWER, results, QUESTION),
        steps=4,
        tokens=1234,
        wall_time_s=8.25,
    )
    return outcome, png


def _write(session: Path, outcome: SessionOutcome):
    return write_session_report(
        session, session_id="ask-1", question=QUESTION, model_id="scripted-model", outcome=outcome,
        provenance=PROVENANCE,
    )  # fmt: skip


def test_the_report_shows_the_answer_flagged_the_timeline_the_plots_and_provenance(tmp_path: Path) -> None:
    outcome, png = _outcome(tmp_path)
    assert outcome.unattributed_numbers == ["9.87"]  # 582 and 35 are in structure_info's result
    paths = _write(tmp_path, outcome)
    html, markdown = paths.html.read_text(), paths.markdown.read_text()

    # The answer, with the made-up number marked and listed; the computed ones are not marked.
    assert QUESTION in html and QUESTION in markdown
    assert re.findall(r"<mark[^>]*>([^<]*)</mark>", html) == ["9.87", "like this"]
    assert "**9.87** ⚠" in markdown and "**582**" not in markdown
    assert "Unattributed numbers" in html and "): 9.87." in markdown

    # The timeline: one row per call, in order, with its status and a one-line result or error.
    rows = re.findall(r"<tr><td>(\d+)</td><td>([a-z_]+)</td>", html)
    assert rows == [(str(r.step), r.tool) for r in outcome.tool_calls]
    timeline = [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [line.split(" | ")[1] for line in timeline] == [r.tool for r in outcome.tool_calls]
    assert "total_atoms=582" in timeline[0] and "total_residues=35" in timeline[0]
    assert "invalid" in timeline[1] and "no-such-file.pdb" in timeline[1]
    assert "structure=—" in timeline[2] and "elapsed_s=12.5" in timeline[2]  # missing, not 0 or None
    assert "lines: 1 item" in timeline[3] and 'class="status-failed">invalid<' in html

    # The plot: embedded in the HTML (nothing outside it is loaded), linked from the markdown.
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    assert re.search(
        r"!\[step 3: plot \(task_ids=\[sim-1\], metric=rmsd\)\]\(plots/rmsd-sim-1\.png\)", markdown
    )

    # Provenance: the caller's, with a missing value as "—", and the software versions.
    assert "<th>started at</th><td>—</td>" in html and "| started at | — |" in markdown
    assert f"<th>openmm version</th><td>{openmm.__version__}</td>" in html
    assert "| tokens | 1,234 |" in markdown and "| sites | local |" in markdown


def test_results_json_is_the_outcome_with_the_session_and_its_provenance(tmp_path: Path) -> None:
    outcome, _ = _outcome(tmp_path)
    document = json.loads(_write(tmp_path, outcome).results_json.read_text())
    provenance = document.pop("provenance")
    session = {"session_id": "ask-1", "question": QUESTION, "model_id": "scripted-model"}
    assert document == {**outcome.model_dump(mode="json"), **session}
    assert provenance["openmm_version"] == openmm.__version__ and provenance["started_at"] is None
    assert provenance["budget"] == {"max_steps": 20}


def test_a_session_without_an_answer_or_calls_says_so(tmp_path: Path) -> None:
    outcome = SessionOutcome(status="budget_exhausted", answer="", reason="the step budget (20) ran out")
    paths = _write(tmp_path, outcome)
    html, markdown = paths.html.read_text(), paths.markdown.read_text()
    for text in (html, markdown):
        assert "No answer: the session ended budget_exhausted (the step budget (20) ran out)." in text
        assert "No tool was called." in text and "No tool drew a plot." in text
    assert "model-written" not in markdown and "<mark" not in html
