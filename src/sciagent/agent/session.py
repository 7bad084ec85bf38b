"""A session of the open-ended agent, kept in the workspace journal as it happens.

A session is a run whose config says ``"kind": "session"``. Its transcript is one ``message`` step per
message (with the calls an assistant message asks for, or the call a result answers); each tool call
is a ``tool_call`` step, opened before the tool runs and closed with its record, so a call a kill
interrupted is the one left ``running``; model requests are ``model_calls`` rows (``JournalledModel``);
simulations are ``tasks`` rows, so a resumed session finds them again; a message sent with
``sciagent tell`` is an event the loop reads before its next model call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sciagent.agent.journal import Journal, ModelCall, digest_messages
from sciagent.agent.journal_rows import one_line
from sciagent.agent.steps import PlannedCall, Resumption, SessionOutcome, ToolCallRecord
from sciagent.errors import ModelError, UserError
from sciagent.llm.base import ChatModel, ChatResponse, Message, OutputSchema, ToolSpec

SESSION_KIND = "session"
EVAL_KIND = "eval"  # an evaluation run (workflows/sessions/evaluate.py); runs without a kind are studies
MCP_KIND = "mcp"  # the MCP server's record of a workspace (workflows/sessions/mcp_session.py)
CHEM_KIND = "chem"  # one `sciagent chem energy` (workflows/chem_run.py)
TELL = "tell"
INTERRUPTED = "interrupted: the process ended before this call finished (resume runs it again)"


def run_kind(config: dict[str, Any]) -> str:
    """What a journal run is, from its config: ``session``, ``eval``, ``mcp``, ``chem`` or ``study``."""
    return str(config.get("kind") or "study")


def is_session(config: dict[str, Any]) -> bool:
    return run_kind(config) == SESSION_KIND


@dataclass
class SessionJournal:
    """One session's rows in the journal; the ``SessionRecorder`` the agent loop writes to."""

    journal: Journal
    session_id: str
    _open_calls: dict[str, int] = field(default_factory=dict)  # call id -> its running step
    _last_told: int = 0

    @classmethod
    def create(cls, journal: Journal, question: str, config: dict[str, Any]) -> SessionJournal:
        return cls(journal, journal.create_run(question, {**config, "kind": SESSION_KIND}))

    @classmethod
    def open(cls, journal: Journal, session_id: str) -> SessionJournal:
        """The session with this id (or unique prefix); a ``UserError`` if it is a study or unknown."""
        run = journal.get_run(session_id)
        if not is_session(run.config):
            raise UserError(f"{run.id} is a study, not an ask/chat session: use `sciagent show {run.id}`")
        return cls(journal, run.id)

    @property
    def config(self) -> dict[str, Any]:
        return self.journal.get_run(self.session_id).config

    # --- SessionRecorder --------------------------------------------------------------------------

    def message(
        self,
        message: Message,
        step: int,
        *,
        calls: Sequence[PlannedCall] = (),
        result_of: str | None = None,
        told: int | None = None,
    ) -> None:
        data: dict[str, Any] = {"message": message, "step": step}
        if calls:
            data["calls"] = [call.to_json() for call in calls]
        if result_of:
            data["result_of"] = result_of
        if told is not None:
            data["told"] = told
            self._last_told = max(self._last_told, told)
        self.journal.record_step(self.session_id, "message", _summary(message, calls), data)

    def call_started(self, call: PlannedCall, step: int) -> None:
        data = {"call": call.to_json(), "step": step}
        self._open_calls[call.call_id] = self.journal.start_step(
            self.session_id, "tool_call", call.tool, data
        )

    def call_finished(self, record: ToolCallRecord) -> None:
        summary = f"{record.tool}: {record.status}" + (f" · {record.error}" if record.error else "")
        data = {"record": record.model_dump(mode="json")}
        step_id = self._open_calls.pop(record.call_id or "", None)
        if step_id is None:  # never started: repeated, or arguments that did not validate
            self.journal.record_step(self.session_id, "tool_call", one_line(summary), data)
            return
        status = "completed" if record.status == "ok" else "failed"
        self.journal.finish_step(step_id, status, one_line(summary), data)

    def incoming(self) -> list[tuple[int, str]]:
        told = [
            (event.id, str(event.data.get("text", "")))
            for event in self.journal.events(self.session_id)
            if event.data.get("kind") == TELL and event.id > self._last_told
        ]
        return told

    # --- the session as a whole -------------------------------------------------------------------

    def tell(self, text: str) -> None:
        """Leave ``text`` for the session to read before its next model call."""
        self.journal.add_event(self.session_id, "info", f"told: {text}", {"kind": TELL, "text": text})

    def load(self) -> Resumption:
        """The session as recorded; calls a kill left running are closed as interrupted (resume runs
        them again)."""
        self.journal.close_open_steps(self.session_id, INTERRUPTED)
        messages: list[Message] = []
        records: list[ToolCallRecord] = []
        asked: list[PlannedCall] = []
        answered: set[str] = set()
        steps = 0
        for row in self.journal.steps(self.session_id):
            if row.kind == "tool_call" and "record" in row.data:
                records.append(ToolCallRecord.model_validate(row.data["record"]))
            if row.kind != "message":
                continue
            messages.append(row.data["message"])
            steps = max(steps, int(row.data.get("step", 0)))
            self._last_told = max(self._last_told, int(row.data.get("told", 0)))
            if row.data.get("calls"):
                asked, answered = [PlannedCall(**call) for call in row.data["calls"]], set()
            answered.add(row.data.get("result_of", ""))
        tokens = sum(
            (call.call.prompt_tokens or 0) + (call.call.completion_tokens or 0)
            for call in self.journal.model_calls(self.session_id)
        )
        awaiting = [call for call in asked if call.call_id not in answered]
        question = self.journal.get_run(self.session_id).goal
        return Resumption(question, messages, records, awaiting, steps, tokens)

    def finish(self, outcome: SessionOutcome) -> None:
        status = "completed" if outcome.status == "answered" else "failed"
        self.journal.set_run_status(self.session_id, status, outcome.reason)


def _summary(message: Message, calls: Sequence[PlannedCall]) -> str:
    if calls:
        return one_line(f"{message['role']}: calls " + ", ".join(call.tool for call in calls))
    return one_line(f"{message['role']}: {message.get('content') or ''}")


@dataclass
class JournalledModel:
    """A ``ChatModel`` that records each request of a session (tokens, latency, reply) in the journal."""

    model: ChatModel
    session: SessionJournal
    purpose: str = "agent"

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def supports_native_tools(self) -> bool:
        return self.model.supports_native_tools

    @property
    def guided(self) -> bool:
        return self.model.guided

    @property
    def response_format_style(self):
        return self.model.response_format_style

    def chat(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        output_schema: OutputSchema | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResponse:
        digest = digest_messages(messages)
        began = time.monotonic()
        try:
            reply = self.model.chat(
                messages, tools=tools, output_schema=output_schema, temperature=temperature,
                max_tokens=max_tokens,
            )  # fmt: skip
        except ModelError as exc:
            self._record(digest, None, "", "error", f"{exc} (after {time.monotonic() - began:.1f} s)")
            raise
        raw = reply.text or ""
        if reply.tool_calls:
            raw += "".join(f"\n{call.name}({call.raw_arguments})" for call in reply.tool_calls)
        self._record(digest, reply, raw.strip(), "valid", None)
        return reply

    def _record(
        self, digest: str, reply: ChatResponse | None, raw: str, outcome: str, error: str | None
    ) -> None:
        call = ModelCall.of(
            self.purpose, self.model.model_id, digest, reply, raw_reply=raw, outcome=outcome, error=error
        )
        self.session.journal.record_model_call(self.session.session_id, None, call)
