"""The records of an agent session: its budget, each tool call and the outcome, the calls a model asks
for, and the recorder interface through which the loop keeps them (the journal implements it).

One set of types from the loop to the journal, the CLI's ``--json`` and the reports (smolagents keeps
its transcript the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from sciagent.llm.base import Message

CallStatus = Literal["ok", "invalid", "failed", "repeated", "refused"]


@dataclass(frozen=True)
class Budget:
    """When a session stops even without an answer."""

    max_steps: int = 20
    max_tokens: int = 200_000
    wall_time_s: float = 3600.0
    max_simulated_ns: float = 10.0


class ToolCallRecord(BaseModel):
    """One tool call as it happened: what was asked, and what came of it."""

    step: int
    call_id: str | None = None
    tool: str
    arguments: dict[str, Any]
    status: CallStatus
    result: dict[str, Any] | None = None
    error: str | None = None


class SessionOutcome(BaseModel):
    """How a session ended."""

    status: Literal["answered", "budget_exhausted", "failed"]
    answer: str
    reason: str | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    unattributed_numbers: list[str] = Field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    wall_time_s: float = 0.0


def with_structure(question: str, structure: str | None) -> str:
    """A question with the structure it is about named, as ``--structure`` and eval suites give it."""
    return f"{question}\n(Structure: {structure})" if structure else question


@dataclass(frozen=True)
class PlannedCall:
    """A tool call the model asked for, before it runs.

    Attributes:
        call_id: unique in the session (``<step>.<n>``): what records and the journal key it by, since
            the ids models give are unique only within one reply, if at all.
        tool: the tool's name; raw: the arguments as sent.
        native: it came as a native tool call, so its result is a ``tool`` message quoting ``wire_id``.
        wire_id: the id the model gave the call (native calls).
    """

    call_id: str
    tool: str
    raw: dict[str, Any] | str
    native: bool
    wire_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id, "tool": self.tool, "raw": self.raw, "native": self.native,
            "wire_id": self.wire_id,
        }  # fmt: skip


class SessionRecorder(Protocol):
    """Where a session's steps go as they happen (the journal), and where messages told to it come from."""

    def message(
        self,
        message: Message,
        step: int,
        *,
        calls: Sequence[PlannedCall] = (),
        result_of: str | None = None,
        told: int | None = None,
    ) -> None:
        """A message joined the transcript at model turn ``step``; ``calls`` it asks for, the call it
        answers, the ``sciagent tell`` message it was."""

    def call_started(self, call: PlannedCall, step: int) -> None:
        """A call is about to run (a kill now leaves it unfinished, and resume runs it)."""

    def call_finished(self, record: ToolCallRecord) -> None:
        """A call ended, whatever its status."""

    def incoming(self) -> list[tuple[int, str]]:
        """Messages the user sent the session since the last ones it read, with their ids."""


@dataclass(frozen=True)
class Resumption:
    """A session as its recorder kept it: enough to go on where it stopped.

    Attributes:
        question: the session's first question.
        messages: the transcript, system prompt first.
        records: every tool call that finished.
        awaiting: calls the last assistant message asked for whose results are not in the transcript.
        steps: model turns taken. tokens: tokens spent.
    """

    question: str
    messages: list[Message]
    records: list[ToolCallRecord]
    awaiting: list[PlannedCall]
    steps: int
    tokens: int
