"""The user's own numbers win in studies: the values a goal states are held against the model's plan.

The end-to-end tests run ``sciagent run`` as a real process against the scripted OpenAI-protocol server
(tests/openai_server.py), with real guardrails, probe, simulations and report; the rule tests drive
``hold_goal`` through the real ``fit_plan`` with a fixed-speed measurement callback, as test_guardrails does.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import OpenAIServer, text_reply
from sciagent.errors import UserError
from sciagent.workflows.study.goal import dropped_by_the_fit, goal_values, hold_goal
from sciagent.workflows.study.guardrails import Allowance, Throughput, fit_plan, physical_checks
from sciagent.workflows.study.plans import StudyPlan
from scripted_plans import villin_plan

GOAL = "Is the villin headpiece stable at 300 K and at 400 K?"
# the model's choice: 450 K, where the user asked for 400 K
MODEL_PLAN = villin_plan(elevated_temperatures_k=[450], rationale="450 K stresses the fold hardest.")
SUMMARY = {"summary": "The runs are compared in the findings."}


def _workspace(tmp_path: Path, base_url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nkind = "openai"\nbase_url = "{base_url}"\nmodel = "scripted-model"\n'
        "max_retries = 0\ntimeout_s = 30\n[study]\nextensions = 0\n"
    )
    return tmp_path


def _run(cwd: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sciagent", "run", *args, "--llm", "scripted"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def _declined(cwd: Path, goal: str) -> subprocess.CompletedProcess[str]:
    """Plan, probe and fit for real, then decline the batch at the terminal: nothing is simulated."""
    controller, terminal = pty.openpty()
    os.write(controller, b"n\n")
    try:
        return _run(cwd, goal, "--budget", "90s", "--approve", "--json", stdin=terminal, timeout=300)
    finally:
        os.close(terminal)
        os.close(controller)


@pytest.mark.slow
@pytest.mark.whole_machine  # the plan is fitted to this machine's measured speed
def test_a_study_runs_exactly_the_temperatures_its_goal_names(tmp_path: Path) -> None:
    """The model planned 300 K and 450 K for a goal naming 300 K and 400 K: 300 K and 400 K are simulated,
    and the report names the replacement and its reason."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(MODEL_PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url)
        completed = _run(cwd, GOAL, "--budget", "90s", "--json", timeout=600)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    record = json.loads(Path(summary["results_json"]).read_text())["record"]
    assert record["plan"]["elevated_temperatures_k"] == [450]  # what the model said, kept as said
    ran = [(c["status"], c["outcome"]["result"]["spec"]["temperature_k"]) for c in record["conditions"]]
    assert ran == [("completed", 300.0), ("completed", 400.0)]
    (change,) = [c for c in record["guardrail_changes"] if c["field"] == "temperatures_k"]
    assert (change["proposed"], change["applied"]) == ([300.0, 450.0], [300.0, 400.0])
    assert "the goal states 300 K and 400 K" in change["reason"]
    report = Path(summary["report_md"]).read_text()
    assert "the goal states 300 K and 400 K" in report and "450" in report


@pytest.mark.slow
@pytest.mark.whole_machine
def test_control_a_goal_naming_no_temperature_keeps_the_models_choice(tmp_path: Path) -> None:
    """The same scripted plan, a goal naming no temperature: 450 K stands (the hold is what replaced it)."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(MODEL_PLAN)), text_reply(json.dumps(SUMMARY)))
        completed = _declined(_workspace(tmp_path, server.base_url), "Is the villin headpiece stable?")
    assert completed.returncode == 1, completed.stderr
    assert "Run 2 simulation(s) [T300-r1, T450-r1]" in completed.stderr
    record = json.loads(Path(json.loads(completed.stdout)["results_json"]).read_text())["record"]
    assert not [c for c in record["guardrail_changes"] if c["field"] == "temperatures_k"]


def test_a_goal_one_study_cannot_run_is_one_line_before_the_model_is_asked(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        completed = _run(_workspace(tmp_path, server.base_url), "Is villin more stable at pH 5 or pH 8?",
                         "--budget", "60s", timeout=120)  # fmt: skip
        asked = server.chat_requests()
    assert completed.returncode != 0
    assert "the goal states 2 pH values (5, 8)" in completed.stderr
    assert "Traceback" not in completed.stderr and asked == []


def _plan(**changes: object) -> StudyPlan:
    return StudyPlan(**{**MODEL_PLAN, **changes})


def _fit(plan: StudyPlan, budget_s: float):
    speed = lambda p: Throughput(100.0, 2, p.solvent)  # noqa: E731 - the measurement callback
    return fit_plan(plan, lambda: Allowance(budget_s), speed)


def test_only_the_stated_temperatures_are_planned_and_a_goal_naming_none_changes_nothing() -> None:
    three = _plan(elevated_temperatures_k=[350, 400])
    held, changes = hold_goal(three, goal_values("Is it stable at 310 K?"))
    assert held.temperatures_k == [310.0] and [c.field for c in changes] == ["temperatures_k"]
    fitted, _ = _fit(held, 10_000)
    assert fitted.temperatures_k == [310.0]  # one stated temperature: one, not a model-invented pair
    same, none = hold_goal(three, goal_values("Is the villin headpiece stable?"))
    assert same == three and none == []


def test_stated_length_solvent_replicas_and_ph_replace_the_models_and_are_recorded() -> None:
    goal = goal_values("Stable at 300 and 400 K over 1 ns in explicit water, 2 replicas, pH 6 and 1 atm?")
    held, changes = hold_goal(_plan(), goal)
    assert (held.production_ps, held.solvent, held.replicas) == (1000.0, "explicit", 2)
    assert {c.field for c in changes} == {"temperatures_k", "production_ps", "solvent", "replicas"}
    assert all(c.reason.startswith("the goal states") for c in changes)
    assert (goal.ph, goal.pressure_bar) == (6.0, 1.01325)


def test_a_stated_temperature_the_budget_drops_is_named_with_the_reason() -> None:
    goal = goal_values("Compare 300 K, 350 K and 400 K.")
    held, _ = hold_goal(_plan(), goal)
    plan, _ = physical_checks(held)
    fitted, changes = _fit(plan, 200)  # a verdict for two runs, not three: the fit drops the mildest
    dropped = dropped_by_the_fit(goal, fitted, changes)
    assert fitted.temperatures_k == [300.0, 400.0]
    (change,) = dropped
    assert "350 K could not be run" in change.reason and "--budget" in change.reason
    assert "budget" in change.reason.split("could not be run:")[1]  # the fit's own reason follows
    assert dropped_by_the_fit(goal, _fit(plan, 10_000)[0], []) == []


@pytest.mark.parametrize(
    ("goal", "error"),
    [
        ("at 300 K for 10 and 20 ps", "2 lengths"),
        ("at 1 bar and 1000 bar", "2 pressures"),
        ("at 2000 K", "temperature_k 2000"),
        ("at 300 K in vacuum", "vacuum"),
    ],
)
def test_goals_a_study_cannot_hold_are_refused(goal: str, error: str) -> None:
    with pytest.raises(UserError, match=error):
        goal_values(goal)
