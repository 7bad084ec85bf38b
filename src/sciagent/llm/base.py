"""The contract every language model backend meets, and the values that cross it.

Messages use the OpenAI chat format (``{"role": ..., "content": ...}``, assistant ``tool_calls`` and
``tool`` replies), the lingua franca of every endpoint we target. What comes back is a ``ChatResponse``:
text and/or parsed tool calls, token usage and latency, never a backend-specific object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, Any]
# How a structured answer is asked for: OpenAI's ``json_schema`` (vLLM, OpenAI), llama.cpp's
# ``json_object`` with a schema, or ``prompt`` (the schema in a system message, for servers with neither).
ResponseFormatStyle = Literal["json_schema", "json_object", "prompt"]
RESPONSE_FORMAT_STYLES: tuple[ResponseFormatStyle, ...] = ("json_schema", "json_object", "prompt")


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it is for, and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model made. ``arguments`` is the decoded JSON object (not yet validated)."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str


@dataclass(frozen=True)
class OutputSchema:
    """Ask the model to answer with JSON matching ``schema`` (a JSON schema named ``name``)."""

    name: str
    schema: dict[str, Any]

    def response_format(self, style: ResponseFormatStyle) -> dict[str, Any] | None:
        """The ``response_format`` request field in the dialect the backend understands.

        vLLM and OpenAI take ``json_schema``; llama-cpp-python takes only ``json_object`` with a
        schema; the ``prompt`` style sends none (see ``instruction``).
        """
        if style == "prompt":
            return None
        if style == "json_object":
            return {"type": "json_object", "schema": self.schema}
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema}}

    def instruction(self) -> Message:
        """The system message that carries the schema when the request itself cannot (``prompt``)."""
        schema = json.dumps(self.schema, separators=(",", ":"))
        return {
            "role": "system",
            "content": f"Answer with one JSON object, nothing else, that matches this JSON schema: {schema}",
        }


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResponse:
    """What a model said, how much it cost, and how long it took."""

    model: str
    text: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = Usage()
    latency_s: float = 0.0
    finish_reason: str | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens per second of wall time, when both are known."""
        if self.usage.completion_tokens and self.latency_s > 0:
            return self.usage.completion_tokens / self.latency_s
        return None


@runtime_checkable
class ChatModel(Protocol):
    """Anything that can hold a chat: remote endpoints, local servers, the embedded model.

    Attributes:
        model_id: the model's name as the backend knows it (recorded in journals and reports).
        supports_native_tools: whether ``tools=`` is honoured by the backend; when False, callers use
            a constrained decision schema instead (see ``sciagent.llm.structured``).
        response_format_style: which ``response_format`` dialect the backend speaks.
        guided: a small model the agent plans for (a shortlist of tools, the stated arguments filled,
            the answer composed from the results: ``sciagent.agent.planner``); set by its profile.
    """

    model_id: str
    supports_native_tools: bool
    response_format_style: ResponseFormatStyle
    guided: bool

    def chat(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        output_schema: OutputSchema | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResponse:
        """Send ``messages`` and return the reply.

        Raises:
            ModelAuthError, ModelUnavailable, ModelRequestError: see ``sciagent.errors``.
        """
        ...
