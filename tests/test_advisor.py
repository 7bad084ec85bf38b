"""The advisor journals every model call, and says "unknown" for what a call that never happened did not give.

The model is the scripted OpenAI-protocol server (tests/openai_server.py) over real sockets; the advisor,
the structured-output loop, the OpenAI-compatible client and the journal are the real code.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console

from openai_server import OpenAIServer, status_reply, text_reply
from sciagent.agent.journal import Journal
from sciagent.cli.runs import timeline_table
from sciagent.llm.openai_compat import OpenAICompatModel
from sciagent.workflows.study.advisor import ModelAdvisor


class Answer(BaseModel):
    temperature_k: int


MESSAGES = [{"role": "user", "content": "Pick a temperature."}]


def _timeline(journal: Journal, run_id: str) -> str:
    console = Console(width=220, record=True, color_system=None)
    console.print(timeline_table(journal, run_id))
    return console.export_text()


def test_a_fallback_and_a_failed_request_record_unknown_latency_and_tokens(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    openai_server.script(*[text_reply("about 300 kelvin", prompt_tokens=40, completion_tokens=5)] * 2)
    openai_server.script(status_reply(400, message="bad request"))
    model = OpenAICompatModel(openai_server.base_url, "test-model")
    with Journal(tmp_path / "journal.sqlite") as journal:
        run_id = journal.create_run("goal", {})
        advisor = ModelAdvisor(model, journal, run_id, retries=1)
        fallen = advisor.decide("plan", MESSAGES, Answer, lambda: Answer(temperature_k=300))
        failed = advisor.decide("interpret", MESSAGES, Answer, lambda: Answer(temperature_k=310))
        assert (fallen.source, failed.source) == ("fallback", "fallback")
        calls = [row.call for row in journal.model_calls(run_id)]
        timeline = _timeline(journal, run_id)
    assert [c.outcome for c in calls] == ["invalid", "invalid", "fallback", "error"]
    asked, fallback, error = calls[0], calls[2], calls[3]
    assert asked.latency_s is not None and asked.latency_s > 0
    assert (asked.prompt_tokens, asked.completion_tokens) == (40, 5)
    for call in (fallback, error):  # no response came back: nothing was measured
        assert (call.latency_s, call.prompt_tokens, call.completion_tokens) == (None, None, None)
    with sqlite3.connect(tmp_path / "journal.sqlite") as conn:
        nulls = conn.execute("SELECT COUNT(*) FROM model_calls WHERE latency_s IS NULL").fetchone()[0]
    assert nulls == 2
    assert "plan · fallback: no model call · no valid answer after 2 attempts" in timeline
    assert "interpret · test-model · latency unknown · tokens unknown · attempt 1" in timeline
    assert "40+5 tokens" in timeline
    unmeasured = [line for line in timeline.splitlines() if "fallback:" in line or "interpret ·" in line]
    assert len(unmeasured) == 2  # a fast real reply may well take 0.00 s; these rows measured nothing
    assert not any("0.00 s" in line or "0+0 tokens" in line for line in unmeasured)
