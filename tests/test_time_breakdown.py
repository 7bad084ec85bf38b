"""Where a study's time went: the time breakdown of a real ``sciagent run``, in results.json and the report.

The model is the boundary stand-in (tests/openai_server.py, real HTTP); the study (the local executor,
OpenMM, the segment ledger, the analysis, the report) is the real code, run once as a process for the
module. No timing is asserted: the checks are that the parts are the recorded times and add up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import OpenAIServer, text_reply
from sciagent.report.accounting import time_table
from sciagent.report.attribution import check_text
from sciagent.report.models import SIMULATION_PARTS, TIME_PARTS
from sciagent.report.render import load_record, render_report
from sciagent.report.values import study_values
from sciagent.science.segments import read_segments
from sciagent.science.simulate import SimulationOutcome
from sciagent.workflows.study.state import StudyState
from sciagent.workflows.study.timing import time_breakdown
from scripted_plans import villin_plan

pytestmark = pytest.mark.timeout(400)

BUDGET_S = 90  # runs go to their deadline: the study takes about this long, on a busy machine too
SUMMARY = {"summary": "Both runs are short; see the findings."}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One real short study: its run directory and its ``--json`` summary.

    Whether its runs complete depends on the machine's speed (a run cut by the budget exits 1); the
    breakdown is recorded either way, and that is what these tests check.
    """
    cwd = tmp_path_factory.mktemp("study")
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(villin_plan())), text_reply(json.dumps(SUMMARY)))
        (cwd / "sciagent.toml").write_text(
            f'[llm.scripted]\nkind = "openai"\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\n'
            "max_retries = 0\ntimeout_s = 30\n[study]\nextensions = 0\n"
        )
        command = [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", "--budget", f"{BUDGET_S}s"]
        completed = subprocess.run([*command, "--json"], cwd=cwd, capture_output=True, text=True, timeout=360)
    assert completed.returncode in (0, 1) and "Traceback" not in completed.stderr, completed.stderr
    summary = json.loads(completed.stdout)
    assert "results_json" in summary, summary
    return Path(summary["results_json"]).parent, summary


def _parts_sum(breakdown: dict) -> float:
    return sum(breakdown[name] for name in TIME_PARTS)


def _ledger(run_dir: Path) -> list[dict]:
    return [line for path in sorted(run_dir.glob("conditions/*/run*")) for line in read_segments(path)]


@pytest.mark.slow
def test_a_study_reports_where_its_budget_went_and_the_parts_are_what_it_recorded(
    study: tuple[Path, dict],
) -> None:
    run_dir, summary = study
    results = json.loads((run_dir / "results.json").read_text())
    breakdown = results["record"]["time_breakdown"]
    workers = breakdown["workers"]
    assert workers == len(os.sched_getaffinity(0)) and breakdown["budget_s"] == BUDGET_S
    capacity = workers * BUDGET_S
    # Every worker-second of the budget is accounted for, exactly, and none is negative.
    assert _parts_sum(breakdown) == pytest.approx(capacity + breakdown["overrun"], rel=1e-9)
    assert all(breakdown[name] >= 0 for name in (*TIME_PARTS, "overrun"))
    assert breakdown["unused"] == 0 or breakdown["overrun"] == 0
    assert sum(breakdown["fractions"].values()) - breakdown["fractions"]["overrun"] == pytest.approx(
        1 + breakdown["overrun"] / capacity
    )
    # Simulation is the segment ledger's wall time, split as the ledger splits it.
    ledger = _ledger(run_dir)
    assert ledger and breakdown["simulation_calls"] == len(ledger)
    simulating = sum(breakdown[name] for name in SIMULATION_PARTS)
    assert simulating == pytest.approx(sum(line["wall_s"] for line in ledger), rel=1e-9)
    assert breakdown["budget_use"] == pytest.approx(simulating / capacity)
    assert breakdown["unsplit_calls"] == sum(1 for line in ledger if not line.get("timings_s"))
    for part in ("equilibration", "production"):
        split = [line["timings_s"].get(part, 0.0) for line in ledger if line.get("timings_s")]
        if len(split) == len(ledger):
            assert breakdown[part] == pytest.approx(sum(split), rel=1e-9)
    # The analysis is what the workers measured, the waits are the phases' wall times x workers.
    outcomes = [
        SimulationOutcome.model_validate_json(path.read_text())
        for path in run_dir.glob("conditions/*/outcomes/*.json")
    ]
    assert outcomes and all(o.analysis_s is not None for o in outcomes if o.result.ok)
    assert breakdown["analysis"] == pytest.approx(sum(o.analysis_s or 0.0 for o in outcomes))
    walls = results["record"]["provenance"]["phase_wall_times_s"]
    assert breakdown["plan"] == pytest.approx(workers * walls["plan"])
    assert breakdown["probe"] == pytest.approx(workers * walls["fit"])
    assert breakdown["report"] > 0 and "report" not in walls  # measured up to rendering, before it ended
    # The report shows it in both formats, and re-rendering from results.json alone shows the same.
    markdown, html = Path(summary["report_md"]).read_text(), Path(summary["report_html"]).read_text()
    percent = f"{breakdown['budget_use']:.1%}"
    assert "## Where the time went" in markdown and f"Budget use: {percent}" in markdown
    assert "<h2>Where the time went</h2>" in html and f"Budget use: {percent}" in html
    assert f"| idle workers | {breakdown['idle']:.1f} |" in markdown
    rerendered = render_report(load_record(run_dir / "results.json"), run_dir.parent / "rerendered")
    section = markdown.split("## Where the time went")[1].split("## ")[0]
    assert section in rerendered.markdown.read_text()


@pytest.mark.slow
def test_numbers_of_the_breakdown_are_attributed_and_unregistered_ones_are_flagged(
    study: tuple[Path, dict],
) -> None:
    """A sentence citing the budget use and the production worker-seconds passes the number check;
    control: the same sentence against the same record without its breakdown is flagged."""
    run_dir, _ = study
    record = load_record(run_dir / "results.json")
    assert record.time_breakdown is not None
    b = record.time_breakdown
    percent = f"{b.budget_use:.1%}"
    sentence = f"Simulation used {percent} of the budget; production took {b.production:.0f} worker-seconds."
    assert check_text(sentence, study_values(record)).flagged == []
    without = record.model_copy(update={"time_breakdown": None})
    flagged = check_text(sentence, study_values(without)).flagged
    assert percent in [number.text for number in flagged]


@pytest.mark.slow
def test_an_overrun_is_a_row_of_its_own_never_a_negative_part(
    study: tuple[Path, dict], tmp_path: Path
) -> None:
    """The never-negative rule, on a real run's files modified: the saved state says the study worked
    1.5 x its budget, and one ledger line claims more worker time than the study lasted.

    Control: the plain remainders (budget - recorded, wall time x workers - busy) are negative there.
    """
    run_dir = tmp_path / "run"
    shutil.copytree(study[0], run_dir)
    state = StudyState.load(run_dir / "state.json")
    state.spent_s = 1.5 * state.budget_s
    workers = json.loads((run_dir / "results.json").read_text())["record"]["time_breakdown"]["workers"]

    over = time_breakdown(state, run_dir, workers, report_s=1.0)
    capacity = workers * state.budget_s
    recorded = sum(getattr(over, name) for name in TIME_PARTS if name not in ("idle", "unused"))
    assert capacity - recorded - over.idle < 0  # control: the plain remainder would be negative
    assert over.unused == 0 and over.overrun == pytest.approx(workers * state.spent_s - capacity)
    assert all(getattr(over, name) >= 0 for name in TIME_PARTS)
    assert sum(getattr(over, name) for name in TIME_PARTS) == pytest.approx(capacity + over.overrun)
    table = time_table(over)
    assert table is not None and "went over its budget by" in table.line
    assert any(row[0].startswith("over budget") for row in table.rows)
    assert not any(cell.startswith("-") for row in table.rows for cell in row[1:])

    ledger = next(run_dir.glob("conditions/*/run1/segments.jsonl"))
    lines = ledger.read_text().splitlines()
    inflated = {**json.loads(lines[0]), "wall_s": 10 * state.spent_s * workers, "timings_s": {}}
    ledger.write_text("\n".join([json.dumps(inflated), *lines[1:]]) + "\n")
    busy = time_breakdown(state, run_dir, workers, report_s=1.0)
    measured = sum(getattr(busy, name) for name in TIME_PARTS if name not in ("idle", "unused"))
    assert workers * state.spent_s - measured < 0  # control: the plain idle remainder would be negative
    assert busy.idle == 0 and busy.unused == 0 and busy.unsplit_calls >= 1
    assert sum(getattr(busy, name) for name in TIME_PARTS) == pytest.approx(capacity + busy.overrun)


@pytest.mark.slow
def test_a_remote_sites_calls_come_from_the_outcomes_and_agree_with_the_ledger(
    study: tuple[Path, dict],
) -> None:
    """A remote site's ledgers are not on this disk: the outcomes it sent back give the same split."""
    run_dir = study[0]
    state = StudyState.load(run_dir / "state.json")
    local = time_breakdown(state, run_dir, 2, report_s=1.0)
    remote = time_breakdown(state, run_dir, 2, report_s=1.0, remote=True)
    assert remote.simulation_calls == local.simulation_calls
    for part in SIMULATION_PARTS:  # the ledger rounds to the millisecond
        assert getattr(remote, part) == pytest.approx(getattr(local, part), abs=1e-3 * local.simulation_calls)
