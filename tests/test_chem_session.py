"""A scripted-model session asks the issue's chemistry question; the tool, tblite and report are real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import RecordedRequest, Reply, text_reply, tool_call_reply

pytestmark = pytest.mark.timeout(300)
# chem_energy costs "minutes" (a vibration analysis of a large molecule can), so a non-interactive run
# needs --approve-all, as a user would pass it.
QUESTION = "What is the GFN2-xTB energy of optimised aspirin, and did the optimisation converge?"


def _answer_from_the_tool_result(request: RecordedRequest) -> Reply:
    """The model's final answer, written from the tool message it was sent (so every number is attributed)."""
    (content,) = [m["content"] for m in request.body["messages"] if m["role"] == "tool"]
    energy = re.search(r'"energy_hartree":\s*(-?[0-9.]+)', content).group(1)
    converged = re.search(r'"converged":\s*(true|false)', content).group(1)
    verdict = "converged" if converged == "true" else "did not converge"
    return text_reply(f"The GFN2-xTB energy of optimised aspirin is {energy} Eh; the optimisation {verdict}.")


def test_aspirin_question_is_answered_from_a_real_gfn2_optimisation(tmp_path: Path, openai_server) -> None:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{openai_server.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
    )
    openai_server.script(tool_call_reply("chem_energy", {"molecule": "aspirin", "optimize": True}))
    openai_server.respond(_answer_from_the_tool_result)
    env = os.environ | {
        "SCIAGENT_CHEM_CACHE": str(tmp_path / "cache"),
        "SCIAGENT_PUBCHEM_URL": "http://127.0.0.1:9/rest/pug",
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "sciagent", "ask", QUESTION, "--llm", "scripted", "--json", "--approve-all"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.splitlines()[-1])
    (call,) = summary["tool_calls"]
    assert (call["tool"], call["status"]) == ("chem_energy", "ok"), call
    result = call["result"]["result"]
    assert result["converged"] is True and result["final_fmax_ev_per_a"] < 0.01
    assert call["result"]["formula"] == "C9H8O4"
    assert summary["status"] == "answered" and "converged" in summary["answer"]
    assert f"{result['energy_hartree']}" in summary["answer"] and summary["unattributed_numbers"] == []
    report = Path(summary["report_md"]).read_text()
    assert "chem_energy" in report and "optimisation-trace.png" in report
