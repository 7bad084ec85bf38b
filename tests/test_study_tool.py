"""``run_stability_study``: the stability workflow called as a catalogue tool, through the registry.

The model is the boundary stand-in (tests/openai_server.py, real HTTP); the study itself (guardrails,
the probe, the local executor, OpenMM, the analysis and the report) is the real code, in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openai_server import OpenAIServer, text_reply
from sciagent.config import Settings
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolArgumentsError, ToolContext, ToolFailed
from sciagent.workflows.catalogue import full_catalogue
from sciagent.workflows.study.tool import MIN_BUDGET_S
from scripted_plans import villin_plan

pytestmark = pytest.mark.timeout(300)

GOAL = "Is the villin headpiece stable at 300 K, and does it lose its fold at 400 K?"
PLAN = villin_plan()
# Room for a slow, shared machine; the cap keeps the study from filling it (runs are lengthened to fit).
BUDGET_S, RUN_CAP_S = 120, 45
SUMMARY = {"summary": "Both runs are too short for a firm verdict; see the findings."}


def _context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_url: str) -> ToolContext:
    """A session's tool context whose settings name the scripted endpoint as the session's profile."""
    monkeypatch.chdir(tmp_path)  # no sciagent.toml of the checkout is read
    profile = {"kind": "openai", "base_url": base_url, "model": "scripted-model", "max_retries": 0}
    settings = Settings(llm={"scripted": profile}, default_llm="scripted", study={"extensions": 0})
    return ToolContext(session_dir=tmp_path / "session", settings=settings)


@pytest.mark.slow
def test_a_study_runs_in_the_session_and_returns_its_own_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = full_catalogue().get("run_stability_study")
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(PLAN)), text_reply(json.dumps(SUMMARY)))
        context = _context(tmp_path, monkeypatch, server.base_url)
        arguments = {
            "goal": GOAL,
            "structure": "villin",
            "budget_s": BUDGET_S,
            "max_simulation_time_s": RUN_CAP_S,
        }
        result = tool.call(arguments, context)
        plan_request = server.chat_requests()[0]
    assert GOAL in json.dumps(plan_request.body["messages"])  # the planner was given the goal
    session = context.session_dir
    assert (session / "studies" / "journal.sqlite").is_file()
    assert (session / result.results_json).parent == session / "studies" / result.run_id
    for path in (result.report_md, result.report_html, result.results_json):
        assert (session / path).is_file(), path
    results = json.loads((session / result.results_json).read_text())
    table = results["table"]
    assert result.plan_source == results["record"]["plan_source"] == "model"
    names = [row["condition"] for row in table]
    assert [c.condition for c in result.conditions] == names == ["T300-r1", "T400-r1"]
    for condition, row in zip(result.conditions, table, strict=True):
        for field in ("status", "verdict", "reasons", "final_window_rmsd_mean_angstrom", "rg_mean_nm",
                      "ss_retention", "simulated_ns", "mean_temperature_k"):  # fmt: skip
            assert getattr(condition, field) == row[field], field
    assert result.findings == results["findings"]
    completed = all(row["status"] == "completed" for row in table)
    assert result.status == ("completed" if completed else "incomplete")
    assert 0 < result.spent_s <= BUDGET_S + 10  # inside its budget, give or take the last save


def test_invalid_arguments_name_the_argument(tmp_path: Path) -> None:
    tool = full_catalogue().get("run_stability_study")
    context = ToolContext(session_dir=tmp_path)
    cases = {
        "budget_s": {"goal": GOAL, "structure": "villin", "budget_s": 10},
        "temperatures": {"goal": GOAL, "structure": "villin", "temperatures": [300, 400]},
        "structure": {"goal": GOAL},
        "goal": {"goal": "stable?", "structure": "villin"},
    }
    for argument, arguments in cases.items():
        with pytest.raises(ToolArgumentsError, match=f"run_stability_study: .*'{argument}'"):
            tool.call(arguments, context)


def test_an_unknown_site_is_the_models_to_fix_and_no_settings_is_a_setup_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = full_catalogue().get("run_stability_study")
    arguments = {"goal": GOAL, "structure": "villin", "site": "nowhere"}
    context = _context(tmp_path, monkeypatch, "http://127.0.0.1:9/v1")  # never reached
    with pytest.raises(ToolArgumentsError, match="nowhere"):
        tool.call(arguments, context)
    with pytest.raises(ToolFailed, match="cannot run workflows") as failed:
        tool.call(arguments, ToolContext(session_dir=tmp_path))
    assert failed.value.failure_class == "setup"


def test_the_full_catalogue_is_the_builtin_tools_and_the_workflow_tools() -> None:
    catalogue = full_catalogue()
    names = [tool.name for tool in catalogue]
    assert names == [tool.name for tool in builtin_tools()] + ["run_stability_study"]
    study = catalogue.get("run_stability_study")
    assert (study.cost, study.effects, study.runs_on_site) == ("hours", {"computes", "writes"}, True)
    assert study.parameters()["properties"]["budget_s"]["minimum"] == MIN_BUDGET_S
