"""Production until the deadline, through ``sciagent run``: a scripted model, real simulations.

Each run's production ends at its deadline (set when it starts, from the time left) or at the plan's
maximum, whichever comes first; the live speed drops conditions that cannot reach a verdict's minimum;
extensions are granted or refused on the speed measured on that run, with the numbers; and a run
killed in deadline-bounded production resumes under the same rule, no step computed twice. No timing
is asserted: which way each run ended is read from its own result.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from journal_sql import journal_rows
from openai_server import OpenAIServer, text_reply
from sciagent.science.segments import read_segments
from scripted_plans import villin_plan

pytestmark = [pytest.mark.slow, pytest.mark.whole_machine]  # deadlines are fitted to this machine

SUMMARY = {"summary": "Compared in the findings."}
# A quick look: each run planned for 1 ps at least, so its maximum (twice that) ends it in seconds.
QUICK = "min_production_ps = 1\n"


def _workspace(tmp_path: Path, base_url: str, study: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nkind = "openai"\nbase_url = "{base_url}"\nmodel = "scripted-model"\n'
        f"max_retries = 1\ntimeout_s = 30\n[study]\n{study}"
    )
    return tmp_path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", "--json", *args]


def _study(tmp_path: Path, plan: dict, study: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(plan)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url, study)
        completed = subprocess.run(_command(*args), cwd=cwd, capture_output=True, text=True, timeout=300)
    return completed, cwd


def _record(completed: subprocess.CompletedProcess) -> dict:
    summary = json.loads(completed.stdout)
    return json.loads(Path(summary["results_json"]).read_text())["record"]


def _events(cwd: Path) -> list[str]:
    return [row[0] for row in journal_rows(cwd, "SELECT message FROM events ORDER BY id")]


def _assert_contiguous(workdir: Path, resumed_from: int | None = None) -> None:
    """The ledger's segments follow each other from step 0, and the state CSV holds every reported step
    once. A call killed with SIGKILL writes no ledger line: after one, the ledger may start where the
    resume continued (``resumed_from``)."""
    segments = read_segments(workdir)
    assert segments and segments[0]["from_step"] in {0, resumed_from}, segments
    for before, after in itertools.pairwise(segments):
        assert after["from_step"] == before["to_step"], segments
    rows = [line.split(",")[:2] for line in (workdir / "state.csv").read_text().splitlines()[1:]]
    steps = [int(step) for _, step in rows]
    assert steps == sorted(set(steps)), workdir  # no step reported twice, none out of order


def test_runs_end_at_their_deadline_and_an_extension_is_refused_with_the_numbers(tmp_path: Path) -> None:
    """A 60 s budget: both runs end at their deadline, short of their 100 ps maximum and completed;
    with no time left the policy refuses to extend them and says why, with the numbers."""
    completed, cwd = _study(tmp_path, villin_plan(), "extensions = 1\n", "--budget", "60s")
    assert completed.returncode == 0, completed.stderr
    record = _record(completed)
    for condition in record["conditions"]:
        result = condition["outcome"]["result"]
        assert condition["status"] == "completed" and result["ended_by"] == "deadline"
        assert (
            result["steps_completed"]
            < result["spec"]["equilibration_steps"] + result["spec"]["production_steps"]
        )
        assert result["spec"]["production_deadline_unix"] is not None
        _assert_contiguous(Path(result["workdir"]))
    refused = [e for e in _events(cwd) if "not extended" in e]
    assert len(refused) == 2, _events(cwd)
    for message in refused:  # the time left, the measured speed, what it would add and what it needs
        assert "s left for it, at" in message and "steps/s measured on this run" in message
        assert "ps after" in message and "it needs" in message


def test_runs_end_at_their_maximum_and_an_extension_is_granted_on_the_measured_time(tmp_path: Path) -> None:
    """Planned for 1 ps at least (``[study] min_production_ps``), each run's maximum is 2 ps: a 150 s
    budget outlasts it, so it ends at its maximum; the analysis still finds 2 ps too short for a
    verdict, and the time really left at the speed measured on the run grants the extension, which
    ends at its new maximum."""
    completed, cwd = _study(tmp_path, villin_plan(), "extensions = 1\n" + QUICK, "--budget", "150s")
    assert completed.returncode == 0, completed.stderr
    record = _record(completed)
    extended = [a for a in record["adaptations"] if a["trigger"] == "inconclusive"]
    assert {a["condition"] for a in extended} == {"T300-r1", "T400-r1"}
    for adaptation in extended:
        assert "extended to its deadline" in adaptation["rationale"]
        assert "steps/s measured on this run" in adaptation["rationale"]
    for condition in record["conditions"]:
        result = condition["outcome"]["result"]
        spec = result["spec"]
        assert condition["status"] == "completed"
        assert result["ended_by"] == "max"
        assert result["steps_completed"] == spec["equilibration_steps"] + spec["production_steps"]
        assert result["resumed_from_step"] > 0  # the extension continued the run, not a new one
        _assert_contiguous(Path(result["workdir"]))
    assert [e for e in _events(cwd) if "extension already used" in e]


def test_the_live_estimate_drops_the_mildest_elevated_temperature(tmp_path: Path) -> None:
    """300, 350 and 400 K on two workers in 75 s: two waves, each far short of the 50 ps a verdict
    needs at the speed the runs show. The live estimate drops 350 K (the fit's order: the mildest
    elevated temperature), which was running: its run is cancelled, 400 K gets the worker, the
    change is recorded with the numbers, and the study still succeeds (exit 0)."""
    plan = villin_plan(elevated_temperatures_k=[350, 400])
    completed, cwd = _study(tmp_path, plan, "extensions = 0\n", "--budget", "75s")
    assert completed.returncode == 0, completed.stderr
    record = _record(completed)
    assert [c["name"] for c in record["conditions"]] == ["T300-r1", "T400-r1"]
    assert all(c["status"] == "completed" for c in record["conditions"])
    drops = [c for c in record["guardrail_changes"] if "live estimate drops" in c["reason"]]
    assert len(drops) == 1 and "T350-r1" in drops[0]["reason"], record["guardrail_changes"]
    assert "steps/s" in drops[0]["reason"] and "ps at its deadline" in drops[0]["reason"]
    assert drops[0]["applied"]["temperatures_k"] == [300.0, 400.0]
    tasks = dict(journal_rows(cwd, "SELECT key, status FROM tasks"))
    assert tasks["T350-r1/run1/attempt1"] == "cancelled"


def test_control_without_a_shortfall_no_condition_is_dropped(tmp_path: Path) -> None:
    """The same three temperatures and budget, with runs planned for 1 ps (`min_production_ps = 1`):
    every run can reach its minimum, so the live estimate drops nothing and all three complete."""
    plan = villin_plan(elevated_temperatures_k=[350, 400])
    completed, _ = _study(tmp_path, plan, "extensions = 0\nmin_production_ps = 1\n", "--budget", "75s")
    assert completed.returncode == 0, completed.stderr
    record = _record(completed)
    assert [c["name"] for c in record["conditions"]] == ["T300-r1", "T350-r1", "T400-r1"], record[
        "guardrail_changes"
    ]
    assert not [c for c in record["guardrail_changes"] if "live estimate drops" in c["reason"]]


def test_a_run_killed_in_deadline_bounded_production_resumes_under_the_same_rule(tmp_path: Path) -> None:
    """SIGKILL while both runs are in production, then `sciagent resume`: each run continues from its
    checkpoint with a deadline derived again from the budget then left (not the old timestamp), ends
    completed, and no step is computed twice."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(villin_plan())), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url, "extensions = 0\n")
        process = subprocess.Popen(_command("--budget", "70s"), cwd=cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            workdir = _wait_for_production(cwd, process)
            first_deadline = json.loads((workdir / "spec.json").read_text())["production_deadline_unix"]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            process.kill()
        (run_id,) = journal_rows(cwd, "SELECT id FROM runs")[0]
        resumed = subprocess.run([sys.executable, "-m", "sciagent", "resume", run_id, "--json"], cwd=cwd,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    record = _record(resumed)
    for condition in record["conditions"]:
        result = condition["outcome"]["result"]
        assert condition["status"] == "completed" and result["ended_by"] in ("deadline", "max")
        _assert_contiguous(Path(result["workdir"]), result["resumed_from_step"])
    t300 = next(c for c in record["conditions"] if c["name"] == "T300-r1")["outcome"]["result"]
    assert t300["resumed_from_step"] > t300["spec"]["equilibration_steps"]  # it was in production
    assert t300["spec"]["production_deadline_unix"] != first_deadline  # the rule, not the timestamp


def _wait_for_production(cwd: Path, process: subprocess.Popen, timeout: float = 200) -> Path:
    """T300-r1's work directory once a production checkpoint holds (its deadline is in its spec)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before production"
        for meta in cwd.glob("sciagent-runs/*/conditions/T300-r1/run1/checkpoint.json"):
            spec = json.loads((meta.parent / "spec.json").read_text())
            if json.loads(meta.read_text())["step"] > spec["equilibration_steps"]:
                return meta.parent
        time.sleep(0.2)
    raise AssertionError(f"no production checkpoint within {timeout} s")
