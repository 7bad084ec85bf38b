"""The planner for small models (``sciagent.agent.planner``), through real ``sciagent ask`` processes.

The model is the scripted OpenAI-protocol server with a profile that says what a small local server's
does: no native tool calls, ``guided``. Each test reads the requests the model got: the tools it was
offered (the enum of its decision schema), the fields it was asked to fill, what it was told of a
failure. The control shows that a capable (native) profile gets none of this.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import RecordedRequest, slow_reply, text_reply, tool_call_reply
from sciagent.agent.planner import ARGUMENT_TOKENS, MIN_STEP_TOKENS

pytestmark = pytest.mark.timeout(300)
QUESTION = "Count the atoms of the villin headpiece and write the number to a file named atoms.txt."
GUIDED = "supports_native_tools = false\nguided = true\n"


def _ask(
    tmp_path: Path, url: str, question: str, profile: str = GUIDED
) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n{profile}'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "sciagent", "ask", question, "--llm", "scripted", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = completed.stdout.splitlines()
    return completed, json.loads(lines[-1]) if lines else {}


def _schema(request: RecordedRequest) -> dict:
    return request.body["response_format"]["json_schema"]["schema"]


def _offered(request: RecordedRequest) -> list[str]:
    return _schema(request)["properties"]["tool"]["enum"]


def _prompt(request: RecordedRequest) -> str:
    return request.body["messages"][-1]["content"]


def test_a_guided_model_chooses_from_a_shortlist_fills_what_remains_and_its_answer_is_composed(
    tmp_path: Path, openai_server
) -> None:
    openai_server.script(
        slow_reply(2.0, text_reply('{"tool": "structure_info"}', completion_tokens=16)),
        text_reply('{"tool": "write_file"}'),
        text_reply('{"text": 582}'),  # not a string: the arguments do not validate
        text_reply('{"tool": "write_file"}'),
        text_reply('{"text": "582"}'),
        text_reply('{"fields": ["total atoms"]}'),
    )
    completed, summary = _ask(tmp_path, openai_server.base_url, QUESTION)
    assert completed.returncode == 0, completed.stderr
    first, second, arguments, after_failure, retried, pick = openai_server.chat_requests()

    # A shortlist, not the catalogue: reading first; nothing that writes code or spends; no answer yet.
    assert _offered(first) == ["structure_info", "write_file"] and "tools" not in first.body
    assert "structure_info(structure=villin)" in _prompt(first)  # the stated structure, shown as fixed
    assert "write_file(path=atoms.txt, text=?)" in _prompt(first)
    # structure_info needed nothing from the model: no request for its arguments; it is not offered twice.
    assert _offered(second) == ["write_file", "answer_now"]
    # Only what remains is asked for, through a schema of that field alone; text is chosen among the
    # results' values, each shown with what it is.
    (text,) = _schema(arguments)["properties"].values()
    assert set(_schema(arguments)["properties"]) == {"text"} and "582" in text.get(
        "enum", [text.get("const")]
    )
    assert "582 (chain A atoms)" in _prompt(arguments) and "path=atoms.txt" in _prompt(arguments)
    # The step's token cap follows the speed measured so far (16 tokens in 2 s): well under the default.
    assert MIN_STEP_TOKENS < arguments.body["max_tokens"] < ARGUMENT_TOKENS
    # The failure is shown to the next decision in one short line.
    (failure,) = [line for line in _prompt(after_failure).splitlines() if ": invalid: " in line]
    assert failure.startswith("- write_file(path=atoms.txt): invalid: error: the arguments for write_file")
    assert "text: Input should be" in failure and len(failure) < 250
    assert set(_schema(retried)["properties"]) == {"text"}
    # The answer's numbers are chosen from the result fields, not written by the model.
    names = _schema(pick)["properties"]["fields"]["items"]["enum"]
    assert {"total atoms", "chain A atoms"} <= set(names) and len(names) <= 8
    assert summary["answer"] == "From the tool results: total atoms = 582 (structure_info)."
    assert summary["unattributed_numbers"] == []
    calls = [(c["tool"], c["arguments"], c["status"]) for c in summary["tool_calls"]]
    assert calls == [
        ("structure_info", {"structure": "villin"}, "ok"),
        ("write_file", {"path": "atoms.txt"}, "invalid"),
        ("write_file", {"path": "atoms.txt", "text": "582"}, "ok"),
    ]
    assert (Path(summary["results_json"]).parent / "atoms.txt").read_text() == "582"


def test_a_model_whose_decisions_do_not_parse_ends_the_turn_at_once(tmp_path: Path, openai_server) -> None:
    openai_server.script(
        text_reply("I would call structure_info first."),  # no JSON: no valid decision
        text_reply("I could not look it up."),
    )
    _, summary = _ask(tmp_path, openai_server.base_url, QUESTION)
    decision, answer = openai_server.chat_requests()  # no re-ask, no second decision
    assert "response_format" in decision.body and "response_format" not in answer.body
    assert summary["status"] == "answered" and summary["tool_calls"] == []
    assert summary["answer"] == "I could not look it up."


def test_a_capable_native_profile_gets_the_catalogue_and_writes_its_own_answer(
    tmp_path: Path, openai_server
) -> None:
    openai_server.script(
        tool_call_reply("structure_info", {"structure": "villin"}),
        text_reply("Villin has 582 atoms; I wrote nothing yet."),
    )
    completed, summary = _ask(tmp_path, openai_server.base_url, QUESTION, profile="")
    assert completed.returncode == 0, completed.stderr
    first, _ = openai_server.chat_requests()
    offered = {tool["function"]["name"] for tool in first.body["tools"]}
    assert {"create_tool", "simulate", "submit_job", "structure_info", "write_file"} <= offered
    assert "response_format" not in first.body
    assert summary["answer"] == "Villin has 582 atoms; I wrote nothing yet."
    assert "note: a small offline model" not in completed.stderr


def test_the_offline_default_answers_the_readme_question_and_says_a_small_model_answers(
    tmp_path: Path,
) -> None:
    """The real embedded model (SmolLM2-135M), offline: the README's first question gets 582, and
    stderr, not the JSON on stdout, says that a small model answered and how to choose a capable one."""
    completed = subprocess.run(
        [sys.executable, "-m", "sciagent", "ask", "How many atoms does the villin headpiece have?", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    (line,) = completed.stdout.splitlines()
    summary = json.loads(line)
    assert (
        summary["answer"].startswith("From the tool results:")
        and "= 582 (structure_info)" in summary["answer"]
    )
    assert summary["unattributed_numbers"] == []
    (notice,) = [text for text in completed.stderr.splitlines() if "small offline model" in text]
    assert "--llm" in notice and "sciagent llm profiles" in notice


def test_the_fields_a_question_names_by_its_words_are_added_to_the_models_pick() -> None:
    """The fields the question names (its words, as it states arguments) are found deterministically:
    the whole before a part, then the latest tool, siblings of a comparison together; a word every such
    question has ("structure") and the structure's name name nothing, and a count sciagent made is
    never added."""
    from sciagent.agent.observations import result_fields
    from sciagent.agent.retrieval import named_fields

    info = {
        "total_atoms": 660, "total_residues": 76,
        "chains": [{"chain_id": "A", "residues": 76, "atoms": 602, "sequence": "MQIFVK"}],
        "secondary_structure": {"helix": 0.2368, "strand": 0.3421, "coil": 0.4211},
    }  # fmt: skip
    rows = [{"label": "sim-1", "values": {"rmsf": 0.356}}, {"label": "sim-2", "values": {"rmsf": 0.449}}]
    compared = {"rows": rows}
    fields = result_fields("structure_info", info) + result_fields("compare_runs", compared)
    recency = ["structure_info", "compare_runs"]

    def keys(question: str) -> list[str]:
        return [f.key for f in named_fields(question, fields, recency)]

    # "number of chains" is a count sciagent made (water chains counted too): never added
    assert keys("How many chains, residues and atoms does this structure have? (Structure: 1UBQ)") == [
        "structure_info.chains.0.residues", "structure_info.total_residues", "structure_info.total_atoms",
    ]  # fmt: skip
    assert keys("What fractions of its residues are in helices and in strands?")[-2:] == [
        "structure_info.secondary_structure.helix", "structure_info.secondary_structure.strand",
    ]  # fmt: skip
    assert keys("What is the amino-acid sequence of this structure?") == ["structure_info.chains.0.sequence"]
    assert keys("Compare the RMSF at pH 5 and at pH 8") == [
        "compare_runs.rows.0.values.rmsf", "compare_runs.rows.1.values.rmsf",
    ]  # fmt: skip
    assert keys("Tell me about this structure (Structure: villin)") == []
