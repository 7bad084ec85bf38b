"""A session of the open-ended agent, kept in the workspace journal as it happens.

A session is a run whose config says ``"kind": "session"``. Its transcript is one ``message`` step per
message (with the calls an assistant message asks for, or the call a result answers); each tool call
is a ``tool_call`` step, opened before the tool runs and closed with its record, so a call a kill
interrupted is the one left ``running``; model requests are ``model_calls`` rows (``JournalledModel``);
simulations are ``tasks`` rows, so a resumed session finds them again; a message sent with
``sciagent tell`` is an event the loop reads before its next model call, and a ``cancel_request`` event
(``sciagent ui``) is honoured there and while a tool waits on tasks: the process that holds the task
board is the only one that can cancel its tasks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sciagent.agent.journal import Journal, ModelCall, digest_messages
from sciagent.agent.journal_rows import EventRow, one_line
from sciagent.agent.steps import PlannedCall, Resumption, SessionOutcome, ToolCallRecord
from sciagent.errors import ModelError, UserError
from sciagent.llm.base import ChatModel, ChatResponse, Message, OutputSchema, ToolSpec

if TYPE_CHECKING:
    from sciagent.tools.tasks import TaskBoard

SESSION_KIND = "session"
EVAL_KIND = "eval"  # an evaluation run (workflows/sessions/evaluate.py); runs without a kind are studies
MCP_KIND = "mcp"  # the MCP server's record of a workspace (workflows/sessions/mcp_session.py)
CHEM_KIND = "chem"  # one `sciagent chem energy` (workflows/chem_run.py)
TELL = "tell"
CANCEL_REQUEST = "cancel_request"  # another process asks the session to cancel one of its tasks
TASK_CANCELLED = "task_cancelled"  # what the session did about it
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

    def honour_cancels(self, board: TaskBoard) -> None:
        """Cancel the tasks another process asked to cancel (each request once), and journal the outcome.

        A request names a task by key; the task row becomes ``cancelled`` and a ``task_cancelled`` event
        answers the request, also when there was nothing left to cancel (the task had finished).
        """
        for event in unanswered_cancels(self.journal, self.session_id):
            key, by = str(event.data.get("task", "")), str(event.data.get("by", "someone"))
            task = next((task for task in board.tasks() if task.task_id == key), None)
            cancelled = task is not None and board.cancel(task)
            row = self.journal.find_task(self.session_id, key)
            if cancelled and row is not None:
                self.journal.update_task(row.id, status="cancelled", error=f"cancelled by {by}")
            if cancelled:
                message = f"task {key} cancelled (asked by {by})"
            else:
                why = "this session has no such task" if task is None else "it had already finished"
                message = f"task {key} not cancelled: {why} (asked by {by})"
            data = {"kind": TASK_CANCELLED, "request": event.id, "task": key, "cancelled": cancelled}
            self.journal.add_event(self.session_id, "warning" if cancelled else "info", message, data)

    def on_poll(self, board: TaskBoard) -> None:
        """What the board's holder does at each poll: act on cancel requests, then journal what ended."""
        self.honour_cancels(board)
        record_task_states(self.journal, self.session_id, board)

    # --- the session as a whole -------------------------------------------------------------------

    def tell(self, text: str, by: str | None = None) -> int:
        """Leave ``text`` for the session to read before its next model call; the event's id. ``by``
        names who told it where that is known (the web UI)."""
        data = {"kind": TELL, "text": text, **({"by": by} if by else {})}
        return self.journal.add_event(self.session_id, "info", f"told: {text}", data)

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


def record_task_states(journal: Journal, run_id: str, board: TaskBoard) -> int:
    """Each finished task's state into its journal row (only rows that changed); the unfinished count.

    Why: the row is written ``running`` at submission, and only the process holding the board sees a
    task end; without this a completed simulation stays ``running`` in ``sciagent show`` and the web UI.
    """
    unfinished = 0
    for task in board.tasks():
        state = board.state(task)
        unfinished += not state.done
        row = journal.find_task(run_id, task.task_id)
        if row is not None and state.done and row.status != state.value:
            journal.update_task(row.id, status=state.value)
    return unfinished


def unanswered_cancels(journal: Journal, run_id: str) -> list[EventRow]:
    """The run's ``cancel_request`` events its session has not acted on yet, oldest first."""
    events = journal.events(run_id, kinds=(CANCEL_REQUEST, TASK_CANCELLED))  # polled every second
    answered = {event.data.get("request") for event in events if event.data.get("kind") == TASK_CANCELLED}
    return [
        event for event in events if event.data.get("kind") == CANCEL_REQUEST and event.id not in answered
    ]


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
