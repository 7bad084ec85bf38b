"""Sub-agents on the fly: ``create_agent`` through a real ``sciagent ask`` process.

The model is the boundary stand-in (tests/openai_server.py, real HTTP); parent and sub-agent talk to
the same scripted endpoint, so its replies are consumed in the order the two agents ask. The loop, the
journal, the tools and ``sciagent show`` are the real code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import RecordedRequest, text_reply, tool_call_reply

pytestmark = pytest.mark.timeout(300)
QUESTION = "How many atoms and residues does the villin headpiece have?"
SIZER = {
    "name": "structure_sizer",
    "task": "Count the atoms and residues of the villin headpiece (villin).",
    "instructions": "Use the structure tools and report the counts.",
    "tools": ["structure_info", "fetch_structure"],
    "save": True,
}


def _workspace(tmp_path: Path, url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
    )
    return tmp_path


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", *args],
        cwd=cwd, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _ask(cwd: Path, *args: str) -> dict:
    completed = _run(cwd, "ask", QUESTION, "--llm", "scripted", "--approve-all", "--json", *args)
    assert completed.stdout.strip(), completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def _offered(request: RecordedRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.body["tools"]]


def test_a_sub_agent_with_two_tools_answers_and_its_numbers_reach_the_parent(
    tmp_path: Path, openai_server
) -> None:
    openai_server.script(
        tool_call_reply("create_agent", SIZER),  # parent
        tool_call_reply("structure_info", {"structure": "villin"}),  # sub-agent
        text_reply("Villin has 582 atoms in 35 residues."),  # sub-agent's answer
        text_reply("The villin headpiece has 582 atoms and 35 residues."),  # parent's answer
    )
    cwd = _workspace(tmp_path, openai_server.base_url)
    summary = _ask(cwd)
    assert summary["status"] == "answered", summary
    (call,) = summary["tool_calls"]
    result = call["result"]
    assert (call["tool"], result["status"], result["agent"]) == (
        "create_agent",
        "answered",
        "structure_sizer",
    )
    assert result["answer"] == "Villin has 582 atoms in 35 residues."
    (inner,) = result["tool_results"]
    assert (inner["tool"], inner["result"]["total_atoms"]) == ("structure_info", 582)
    assert summary["unattributed_numbers"] == []  # 582 and 35 come from the sub-agent's tool result
    assert result["usage"]["steps"] == 2 and result["saved"] is True

    parent_first, sub_first, _sub_second, parent_last = openai_server.chat_requests()
    assert "create_agent" in _offered(parent_first)
    assert sorted(_offered(sub_first)) == ["fetch_structure", "structure_info"]  # its two tools only
    system = sub_first.body["messages"][0]["content"]
    assert "sub-agent structure_sizer" in system and SIZER["instructions"] in system
    assert sub_first.body["messages"][1]["content"] == SIZER["task"]
    assert "Villin has 582 atoms in 35 residues." in parent_last.body["messages"][-1]["content"]

    # Its own durable session, nested under the parent's in `show`, kept as a sub-agent in `runs`.
    shown = _run(cwd, "show", summary["session_id"])
    assert shown.returncode == 0, shown.stderr
    assert "sub-agent structure_sizer" in shown.stdout and "structure_info(structure=villin)" in shown.stdout
    assert "sub-agent" in _run(cwd, "runs").stdout
    sub_id = result["session_id"]
    refused = _run(cwd, "resume", sub_id)
    assert refused.returncode == 2 and "is a sub-agent of session" in refused.stderr

    # The saved definition is reused by name in a later session.
    listed = json.loads(_run(cwd, "skills", "list", "--json").stdout)
    assert [agent["name"] for agent in listed["agents"]] == ["structure_sizer"]
    openai_server.script(
        tool_call_reply("create_agent", {"name": "structure_sizer", "task": SIZER["task"]}),
        text_reply("I could not look."),
        text_reply("No count this time."),
    )
    again = _ask(cwd)
    assert again["tool_calls"][0]["result"]["status"] == "answered"
    assert sorted(_offered(openai_server.chat_requests()[-2])) == ["fetch_structure", "structure_info"]


def test_a_sub_agent_gets_no_more_than_its_parent_has_left(tmp_path: Path, openai_server) -> None:
    villin = tool_call_reply("structure_info", {"structure": "villin"})
    asks_for_more = {**SIZER, "max_steps": 50, "save": False}
    openai_server.script(
        tool_call_reply("create_agent", {**SIZER, "tools": ["structure_info", "create_agent"]}),
        tool_call_reply("create_agent", {**SIZER, "tools": ["fold_protein"]}),
        tool_call_reply("create_agent", asks_for_more),
        villin,
        tool_call_reply("fetch_structure", {"structure": "villin"}),
    )
    summary = _ask(_workspace(tmp_path, openai_server.base_url), "--max-steps", "5")
    nesting, unknown, capped = summary["tool_calls"]
    assert nesting["status"] == "invalid" and "a sub-agent cannot make sub-agents" in nesting["error"]
    assert unknown["status"] == "invalid" and "fold_protein are not tools of this session" in unknown["error"]
    # The parent had used 3 of its 5 steps: the sub-agent got 2 of the 50 it asked for.
    assert capped["result"]["status"] == "budget_exhausted"
    assert capped["result"]["reason"] == "the step budget (2) ran out"
    # ...and what it spent was charged to the parent, whose budget is now spent too.
    assert summary["status"] == "budget_exhausted" and "step budget (5)" in summary["reason"]
