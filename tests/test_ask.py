"""``sciagent ask`` end to end: a real process, the scripted OpenAI-protocol model, real tools.

The model is the boundary stand-in (tests/openai_server.py, real HTTP); the loop, the catalogue, the
task board, OpenMM and the analyses are the real code. Each test reads what the model was sent, so
an observation that never reached the model fails it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import (
    OpenAIServer,
    RecordedRequest,
    Reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)
from sciagent.science.outputs import RunFiles

pytestmark = pytest.mark.timeout(400)
QUESTION = "How many atoms does the villin headpiece have?"


def _workspace(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n{extra}'
    )
    return tmp_path


def _ask(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    completed = subprocess.run(
        [sys.executable, "-m", "sciagent", "ask", *args, "--llm", "scripted", "--json"],
        cwd=cwd, capture_output=True, text=True, timeout=360, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return completed, json.loads(completed.stdout.splitlines()[-1]) if completed.stdout.strip() else {}


def _tool_messages(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


def test_a_structure_question_is_answered_from_a_tool_result(tmp_path: Path, openai_server) -> None:
    openai_server.script(
        tool_call_reply("structure_info", {"structure": "villin"}),
        text_reply("The villin headpiece has 582 atoms in 35 residues, in 1 chain."),
    )
    completed, summary = _ask(_workspace(tmp_path, openai_server.base_url), QUESTION)
    assert completed.returncode == 0, completed.stderr
    assert summary["status"] == "answered" and "582 atoms" in summary["answer"]
    assert summary["unattributed_numbers"] == []
    (call,) = summary["tool_calls"]
    assert (call["tool"], call["status"], call["result"]["total_atoms"]) == ("structure_info", "ok", 582)
    first, second = openai_server.chat_requests()
    assert "structure_info" in [tool["function"]["name"] for tool in first.body["tools"]]
    assert '"total_atoms": 582' in _tool_messages(second)[0]  # the model saw the tool's result
    report = Path(summary["report_md"]).read_text()
    assert QUESTION in report and "| 1 | structure_info | structure=villin | ok |" in report
    assert json.loads(Path(summary["results_json"]).read_text())["status"] == "answered"


def test_bad_calls_come_back_as_observations_and_a_made_up_number_is_flagged(
    tmp_path: Path, openai_server
) -> None:
    openai_server.script(
        tool_call_reply("structure_info", {"protein": "villin"}),  # no such argument
        tool_call_reply("fold_protein", {}),  # no such tool
        tool_call_reply("structure_info", {"structure": "villin"}),
        tool_call_reply("structure_info", {"structure": "villin"}),  # the same call again
        text_reply("Villin has 582 atoms and 1234 bonds."),
    )
    completed, summary = _ask(_workspace(tmp_path, openai_server.base_url), QUESTION)
    assert completed.returncode == 0, completed.stderr
    assert [c["status"] for c in summary["tool_calls"]] == ["invalid", "invalid", "ok", "repeated"]
    requests = openai_server.chat_requests()
    assert "argument 'protein' is not one of its arguments" in _tool_messages(requests[1])[-1]
    assert "no tool named 'fold_protein'" in _tool_messages(requests[2])[-1]
    assert "not run twice" in _tool_messages(requests[4])[-1]
    assert summary["unattributed_numbers"] == ["1234"]  # 582 is in the tool result; 1234 is in none
    report = Path(summary["report_md"]).read_text()
    assert "Unattributed numbers" in report and "1234" in report


@pytest.mark.parametrize(
    ("call", "status", "told"),
    [
        (("cancel_task", {"task_id": "sim-1"}), "refused", "cancels, holds or removes asks first"),
        (("ask_user", {"question": "Which chain?"}), "failed", "no one can answer questions in this run"),
    ],
    ids=["cancel-needs-approval", "ask-user"],
)
def test_without_a_terminal_nothing_waits_and_the_model_is_told(
    tmp_path: Path, openai_server, call: tuple[str, dict], status: str, told: str
) -> None:
    openai_server.script(tool_call_reply(*call), text_reply("No one was there to approve or answer."))
    completed, summary = _ask(_workspace(tmp_path, openai_server.base_url), "Simulate villin for 1 ps.")
    assert completed.returncode == 0, completed.stderr
    (record,) = summary["tool_calls"]
    assert record["status"] == status and told in record["error"]
    assert told in _tool_messages(openai_server.chat_requests()[1])[0]
    if call[0] == "cancel_task":
        assert "--approve-all" in record["error"] and "no one could approve it here" in record["error"]


def test_a_model_without_native_tools_decides_through_the_schema(tmp_path: Path, openai_server) -> None:
    openai_server.script(
        text_reply('{"tool": "structure_info"}'),
        text_reply('{"structure": "villin"}'),
        text_reply('{"tool": "final_answer"}'),
        text_reply("Villin has 582 atoms."),  # the answer is prose: asked for without a schema
    )
    cwd = _workspace(tmp_path, openai_server.base_url, "supports_native_tools = false\n")
    completed, summary = _ask(cwd, QUESTION)
    assert completed.returncode == 0, completed.stderr
    assert summary["answer"] == "Villin has 582 atoms." and summary["unattributed_numbers"] == []
    choice, arguments, second_choice, final = openai_server.chat_requests()
    assert "tools" not in choice.body
    schema = choice.body["response_format"]["json_schema"]["schema"]
    assert {"final_answer", "simulate", "structure_info"} <= set(schema["properties"]["tool"]["enum"])
    assert arguments.body["response_format"]["json_schema"]["schema"]["required"] == ["structure"]
    assert 'Example: {"structure": "villin"}' in arguments.body["messages"][-1]["content"]
    seen = second_choice.body["messages"][-2]["content"]  # the result, as lines a small model reads
    assert seen.startswith("Result of structure_info:") and "\ntotal_atoms: 582\n" in seen
    assert "response_format" not in final.body and QUESTION in final.body["messages"][-1]["content"]


def test_a_model_that_repeats_itself_is_asked_for_the_answer_and_one_stuck_on_an_error_stops(
    tmp_path: Path, openai_server
) -> None:
    villin = tool_call_reply("structure_info", {"structure": "villin"})
    openai_server.script(villin, villin, villin, text_reply("It has 582 atoms."))
    cwd = _workspace(tmp_path, openai_server.base_url)
    completed, summary = _ask(cwd, QUESTION)
    assert completed.returncode == 0, completed.stderr
    assert [c["status"] for c in summary["tool_calls"]] == ["ok", "repeated", "repeated"]
    final = openai_server.chat_requests()[-1]
    assert "tools" not in final.body and "final answer" in final.body["messages"][-1]["content"]

    wrong = tool_call_reply("structure_info", {"structure": "nonesuch"})
    openai_server.script(wrong, wrong, wrong)
    completed, summary = _ask(cwd, QUESTION)
    assert completed.returncode == 1 and summary["status"] == "failed"
    assert "the model made the same failing call 3 times: structure_info" in summary["reason"]
    assert "no answer: the model made the same failing call" in completed.stderr


def _compare_answer(request: RecordedRequest) -> Reply:
    """The final turn: state the compared RMSD means to 2 decimals, as a model would."""
    table = next(json.loads(m) for m in reversed(_tool_messages(request)) if '"rows"' in m)
    first, second = (row["values"]["rmsd"] for row in table["rows"])
    return text_reply(f"Mean backbone RMSD: {first:.2f} Å in the first run and {second:.2f} Å in the second.")


TWO_PRESSURES = pytest.param(
    ({"solvent": "explicit", "pressure_bar": 1}, {"solvent": "explicit", "pressure_bar": 1000}),
    ("pressure_bar", [1.0, 1000.0]),
    id="two-pressures-npt",
    marks=pytest.mark.skipif(
        not os.environ.get("SCIAGENT_EXPENSIVE_TESTS"),
        reason="explicit water, NPT: ~5 minutes on 2 cores (solvating and minimising ~9,000 atoms twice); "
        "set SCIAGENT_EXPENSIVE_TESTS=1 to run it",
    ),
)


@pytest.mark.whole_machine  # the two go side by side
@pytest.mark.parametrize(
    ("conditions", "compared"),
    [pytest.param(({"ph": 5}, {"ph": 8}), ("ph", [5.0, 8.0]), id="two-ph-values"), TWO_PRESSURES],
)
def test_two_conditions_run_concurrently_and_end_in_one_table_and_one_plot(
    tmp_path: Path, conditions: tuple[dict, dict], compared: tuple[str, list[float]]
) -> None:
    run = {"structure": "villin", "length_ps": 2, "timestep_fs": 4}
    first, second = ({**run, **condition} for condition in conditions)
    with OpenAIServer() as server:
        server.script(
            tool_calls_reply([("simulate", first), ("simulate", second)]),
            tool_call_reply("wait_for_task", {"task_id": "sim-1", "timeout_s": 300}),
            tool_call_reply("wait_for_task", {"task_id": "sim-2", "timeout_s": 300}),
            tool_call_reply("compare_runs", {"task_ids": ["sim-1", "sim-2"], "metrics": ["rmsd", "sasa"]}),
            tool_call_reply("plot", {"task_ids": ["sim-1", "sim-2"], "metric": "rmsd"}),
        )
        server.respond(_compare_answer)
        cwd = _workspace(tmp_path, server.base_url)
        completed, summary = _ask(cwd, "Compare villin's RMSD under two conditions.", "--approve-all")
    assert completed.returncode == 0, completed.stderr
    calls = summary["tool_calls"]
    assert [(c["tool"], c["status"]) for c in calls] == [
        ("simulate", "ok"), ("simulate", "ok"), ("wait_for_task", "ok"), ("wait_for_task", "ok"),
        ("compare_runs", "ok"), ("plot", "ok"),
    ]  # fmt: skip
    assert [c["result"]["state"] for c in calls[2:4]] == ["completed", "completed"]
    rows = calls[4]["result"]["rows"]
    png = Path(summary["results_json"]).parent / calls[5]["result"]["path"]
    assert png.read_bytes()[:4] == b"\x89PNG" and len(calls[5]["result"]["lines"]) == 2
    key, values = compared
    assert [row[key] for row in rows] == values
    assert summary["unattributed_numbers"] == []  # the rounded means are the table's
    assert re.search(r"\d\.\d\d Å in the first run", summary["answer"])
    html = Path(summary["report_html"]).read_text()
    assert "data:image/png;base64," in html and "compare_runs" in html  # the plot and the timeline
    runs = Path(summary["results_json"]).parent / "runs"
    spans = []
    for task_id in ("sim-1", "sim-2"):
        files = RunFiles(runs / task_id)
        spans.append((files.spec.stat().st_mtime, files.result.stat().st_mtime))
    (start1, end1), (start2, end2) = spans
    assert start2 < end1 and start1 < end2  # they overlapped: run side by side on the local site

