"""Durable sessions: ``sciagent ask`` killed and resumed, ``sciagent tell`` steering a running session,
``sciagent show`` and ``runs``, and ``sciagent chat``; all through the real CLI in real processes.

The model is the scripted OpenAI-protocol server (tests/openai_server.py, real HTTP); the kill is a
real SIGKILL of the ``sciagent ask`` process; the journal, the loop, the task board and OpenMM are the
real code. "No tool call twice" is read from the journal (each tool call is a row opened before the
tool runs) and from the run directory (a second simulation would be a second directory; the state
CSV would hold a step twice).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from openai_server import OpenAIServer, RecordedRequest, Reply, text_reply, tool_call_reply
from sciagent.science.outputs import RunFiles

pytestmark = pytest.mark.timeout(400)
SIMULATE = {"structure": "villin", "length_ps": 8, "timestep_fs": 4}  # 2000 steps, a checkpoint per 200


def _workspace(tmp_path: Path, url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
    )
    return tmp_path


def _sciagent(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def _last_json(completed: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(completed.stdout.splitlines()[-1])


def _tool_rows(workspace: Path) -> list[tuple[str, str]]:
    """(tool, step status) of every tool-call row in the journal, in order."""
    with sqlite3.connect(workspace / "sciagent-runs" / "journal.sqlite") as db:
        rows = db.execute("SELECT status, data FROM steps WHERE kind = 'tool_call' ORDER BY id").fetchall()
    return [(json.loads(data).get("record", json.loads(data).get("call", {})).get("tool"), status)
            for status, data in rows]  # fmt: skip


def _session_dirs(workspace: Path) -> list[Path]:
    return sorted((workspace / "sciagent-runs" / "sessions").glob("*"))


def test_a_session_killed_while_its_simulation_runs_resumes_without_running_any_call_twice(
    tmp_path: Path,
) -> None:
    """Killed inside wait_for_task with the simulation past a checkpoint; resumed: structure_info and
    simulate are not run again (their results come from the journal), the simulation continues from its
    checkpoint in the same directory, the interrupted wait runs again, and the session answers."""
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.script(
            tool_call_reply("structure_info", {"structure": "villin"}),
            tool_call_reply("simulate", SIMULATE),
            tool_call_reply("wait_for_task", {"task_id": "sim-1", "timeout_s": 300}),
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "sciagent", "ask", "Simulate villin for 8 ps.", "--llm", "scripted",
             "--approve-all", "--json"],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            run = _wait_for_checkpoint(cwd, process)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            process.kill()
        steps_before = _state_steps(run)
        assert server.pending() == 0 and len(server.chat_requests()) == 3

        server.script(
            tool_call_reply("task_result", {"task_id": "sim-1"}),
            text_reply("The 8 ps simulation of villin (582 atoms) completed."),
        )
        (session,) = _session_dirs(cwd)
        completed = _sciagent(cwd, "resume", session.name, "--llm", "scripted", "--approve-all", "--json")
    assert completed.returncode == 0, completed.stderr
    summary = _last_json(completed)
    assert summary["status"] == "answered" and summary["unattributed_numbers"] == [], summary
    tools = [(c["tool"], c["status"]) for c in summary["tool_calls"]]
    assert tools == [
        ("structure_info", "ok"),
        ("simulate", "ok"),
        ("wait_for_task", "ok"),
        ("task_result", "ok"),
    ]
    assert summary["tool_calls"][2]["result"]["state"] == "completed"
    assert summary["tool_calls"][3]["result"]["simulated_ps"] == pytest.approx(8.0)

    executed = Counter(tool for tool, status in _tool_rows(cwd) if status != "failed")
    assert executed == {"structure_info": 1, "simulate": 1, "wait_for_task": 1, "task_result": 1}
    interrupted = [tool for tool, status in _tool_rows(cwd) if status == "failed"]
    assert interrupted == ["wait_for_task"]  # the call the kill cut short, closed as interrupted
    assert sorted(p.name for p in (session / "runs").iterdir()) == ["sim-1"]  # no second simulation
    result = json.loads(run.result.read_text())
    assert result["status"] == "completed" and result["resumed_from"] == "checkpoint"
    assert 400 <= result["resumed_from_step"] <= steps_before[-1]
    written = _state_steps(run)
    assert len(written) == len(set(written)), "a step was written twice"
    assert written[-1] == 2200  # 200 steps of equilibration, then 2000 of production

    # The resumed model turn saw the whole transcript: the first three results came from the journal.
    resumed_first = server.chat_requests()[3]
    tool_messages = [m["content"] for m in resumed_first.body["messages"] if m["role"] == "tool"]
    assert '"total_atoms": 582' in tool_messages[0] and len(tool_messages) == 3


def _wait_for_checkpoint(cwd: Path, process: subprocess.Popen[str]) -> RunFiles:
    """The run once wait_for_task is running (its journal row is open) and the simulation is past its
    second checkpoint."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = list((cwd / "sciagent-runs" / "sessions").glob("*/runs/sim-1"))
        waiting = ("wait_for_task", "running") in _tool_rows(cwd) if runs else False
        if (
            waiting
            and RunFiles(runs[0]).state_csv.exists()
            and max(_state_steps(RunFiles(runs[0])), default=0) >= 500
        ):
            return RunFiles(runs[0])  # past two checkpoints (one every 200 steps)
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("the simulation wrote no checkpoint in time")


def _state_steps(run: RunFiles) -> list[int]:
    with run.state_csv.open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def test_tell_reaches_a_running_session_before_its_next_model_call_and_changes_its_course(
    tmp_path: Path,
) -> None:
    """While the session's first model call is answered, `sciagent tell` (another process) leaves a
    message; the next request carries it, and the scripted model, following the user as a real one
    would, prepares the structure at pH 5 instead of answering."""
    told = "Prepare villin at pH 5 and describe the prepared file instead."
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)

        def reply(request: RecordedRequest) -> Reply:
            if len(server.chat_requests()) == 1:
                (session,) = _session_dirs(cwd)
                completed = _sciagent(cwd, "tell", session.name[:12], told)
                assert completed.returncode == 0, completed.stderr
                return tool_call_reply("structure_info", {"structure": "villin"})
            users = [m["content"] for m in request.body["messages"] if m["role"] == "user"]
            calls = [m for m in request.body["messages"] if m["role"] == "tool"]
            if any(told in text for text in users) and len(calls) == 1:
                return tool_call_reply("prepare_structure", {"structure": "villin", "ph": 5})
            return text_reply("Prepared villin at pH 5.")

        server.respond(reply)
        completed = _sciagent(cwd, "ask", "Describe villin.", "--llm", "scripted", "--json")
    assert completed.returncode == 0, completed.stderr
    summary = _last_json(completed)
    assert [c["tool"] for c in summary["tool_calls"]] == ["structure_info", "prepare_structure"]
    second = server.chat_requests()[1]
    assert second.body["messages"][-1] == {
        "role": "user",
        "content": f"A message from the user while you work: {told}",
    }

    shown = _sciagent(cwd, "show", summary["session_id"])
    assert shown.returncode == 0, shown.stderr
    for expected in ("told", "prepare_structure", "Describe villin.", "Prepared villin at pH 5."):
        assert expected in shown.stdout
    listed = _sciagent(cwd, "runs")
    assert summary["session_id"] in listed.stdout and "session" in listed.stdout


def test_chat_holds_a_conversation_and_answers_the_agents_question_from_the_next_line(
    tmp_path: Path,
) -> None:
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.script(
            tool_call_reply("ask_user", {"question": "Which structure?"}),
            tool_call_reply("structure_info", {"structure": "villin"}),
            text_reply("Villin has 582 atoms."),
            text_reply("It has 35 residues."),  # the follow-up, from the transcript's tool result
        )
        completed = _sciagent(
            cwd, "chat", "--llm", "scripted", stdin="How many atoms?\nvillin\nAnd residues?\n\n"
        )
    assert completed.returncode == 0, completed.stderr
    assert "Villin has 582 atoms." in completed.stdout and "It has 35 residues." in completed.stdout
    requests = server.chat_requests()
    reply = next(m["content"] for m in requests[1].body["messages"] if m["role"] == "tool")
    assert '"reply": "villin"' in reply
    last = requests[3].body["messages"]
    assert last[-1] == {"role": "user", "content": "And residues?"}
    assert any(m["role"] == "tool" and '"total_atoms": 582' in m["content"] for m in last)
    (session,) = _session_dirs(cwd)
    assert json.loads((session / "results.json").read_text())["answer"] == "It has 35 residues."


def test_resume_and_tell_name_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.script(text_reply("Nothing to do."))
        asked = _sciagent(cwd, "ask", "Hello?", "--llm", "scripted", "--json")
        assert asked.returncode == 0, asked.stderr
    for args in (("resume", "nonesuch", "--llm", "scripted"), ("tell", "nonesuch", "hi")):
        completed = _sciagent(cwd, *args)
        assert completed.returncode == 2, completed.stderr
        assert "no run nonesuch" in completed.stderr and "Traceback" not in completed.stderr
        assert len(completed.stderr.strip().splitlines()) == 1
