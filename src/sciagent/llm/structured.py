"""Structured answers from a language model: schema → constrained decode → validate → repair.

Every value a model produces passes through a pydantic model (or a tool's argument schema) before
anything acts on it. When a reply does not validate, the reply and the validation error go back to the
model and it is asked again, within a small budget of re-asks owned by this module (HTTP retries belong
to the ``ChatModel``). When the budget is spent, ``StructuredOutputError`` carries every raw reply and
every error, so the caller can record them and take its documented fallback.

Two entry points:

- ``ask_structured``: an answer that is an instance of a pydantic model.
- ``ask_tool_choice`` / ``choose_tool``: the next tool to call. With native tool calling the request
  carries ``tools=``; without it the model fills a decision object ``{"tool": ..., "arguments": {...}}``
  under a JSON schema (``tool`` is an enum of the tool names) and the tool catalogue is put in the
  system message, so constrained decoding works on servers that cannot call tools.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from sciagent.errors import StructuredOutputError
from sciagent.llm.base import ChatModel, ChatResponse, Message, OutputSchema, ToolCall, ToolSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


@dataclass
class StructuredAnswer(Generic[T]):
    """A validated answer and the record of how it was obtained (for the journal).

    Attributes:
        value: the validated answer.
        attempts: how many model calls it took (1 when the first reply validated).
        raw_replies: each reply's raw text (or its tool calls as JSON), in order.
        responses: each ``ChatResponse``, with its usage and latency.
    """

    value: T
    attempts: int
    raw_replies: list[str]
    responses: list[ChatResponse]


@dataclass(frozen=True)
class _Rejection:
    """A reply that did not validate: the error, and the messages that tell the model about it."""

    error: str
    followup: list[Message]


def extract_json(text: str) -> str:
    """The JSON text inside a model's reply, so that chatty or fenced answers still count.

    Tried in order: the whole reply; the body of each Markdown code fence (```json or bare ```);
    the first balanced JSON object (``{...}``) that parses, wherever it starts, which skips leading
    prose and trailing remarks.

    Raises:
        ValueError: the reply contains no JSON object.
    """
    for candidate in [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]:
        if candidate and _parses(candidate):
            return candidate
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
        else:
            return text[start:end]
    raise ValueError("the reply contains no JSON object")


def ask_structured(
    model: ChatModel,
    messages: list[Message],
    output: type[M],
    *,
    retries: int = 2,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
) -> StructuredAnswer[M]:
    """Ask for an answer that validates as ``output``, re-asking up to ``retries`` times.

    The pydantic model's JSON schema goes out as the ``response_format`` (named after the class), so
    servers with constrained decoding produce matching JSON; the prompt should still describe the
    fields, since not every server shows the schema to the model.

    Raises:
        StructuredOutputError: no reply validated; it carries every raw reply and error.
        ModelAuthError, ModelUnavailable, ModelRequestError: from the model call itself.
    """
    schema = OutputSchema(name=output.__name__, schema=output.model_json_schema())

    def check(response: ChatResponse) -> M | _Rejection:
        raw = response.text or ""
        try:
            return output.model_validate_json(extract_json(raw))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            return _reject_text(raw, _describe(exc), output.__name__)

    request = {"output_schema": schema, "temperature": temperature, "max_tokens": max_tokens}
    return _repair_loop(model, messages, request, check, retries=retries, what=output.__name__)


def ask_tool_choice(
    model: ChatModel,
    messages: list[Message],
    tools: list[ToolSpec],
    *,
    retries: int = 2,
    arg_models: dict[str, type[BaseModel]] | None = None,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
) -> StructuredAnswer[ToolCall]:
    """Ask which tool to call, with which arguments, re-asking up to ``retries`` times.

    The arguments are validated with ``arg_models[tool.name]`` when given (full pydantic validation),
    otherwise with a shallow check of the tool's JSON schema (required keys, top-level types, enums,
    ``additionalProperties: false``). With native tools the first tool call is taken; a text answer is
    re-asked. Without native tools the returned ``ToolCall`` gets a generated id.

    Raises:
        ValueError: ``tools`` is empty.
        StructuredOutputError: no reply named a tool with valid arguments.
        ModelAuthError, ModelUnavailable, ModelRequestError: from the model call itself.
    """
    if not tools:
        raise ValueError("ask_tool_choice needs at least one tool to choose from")
    toolbox = _Toolbox({tool.name: tool for tool in tools}, arg_models or {})
    request: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
    if model.supports_native_tools:
        request["tools"] = tools
        return _repair_loop(model, messages, request, toolbox.check_call, retries=retries, what="tool call")
    request["output_schema"] = _decision_schema(tools)
    history = _with_tool_catalogue(messages, tools)
    return _repair_loop(
        model, history, request, toolbox.check_decision, retries=retries, what="tool decision"
    )


def choose_tool(model: ChatModel, messages: list[Message], tools: list[ToolSpec], **options: Any) -> ToolCall:
    """The tool the model wants to call next: ``ask_tool_choice`` (same options) without the record."""
    return ask_tool_choice(model, messages, tools, **options).value


def _repair_loop(
    model: ChatModel,
    messages: list[Message],
    request: dict[str, Any],
    check: Callable[[ChatResponse], T | _Rejection],
    *,
    retries: int,
    what: str,
) -> StructuredAnswer[T]:
    """Ask, check, and on rejection show the model its error and ask again: the one re-ask budget."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0 (0 asks once), got {retries}")
    history = list(messages)
    raw_replies: list[str] = []
    errors: list[str] = []
    responses: list[ChatResponse] = []
    for attempt in range(1, retries + 2):
        response = model.chat(history, **request)
        responses.append(response)
        raw_replies.append(_raw_reply(response))
        outcome = check(response)
        if not isinstance(outcome, _Rejection):
            return StructuredAnswer(outcome, attempt, raw_replies, responses)
        errors.append(outcome.error)
        log.info("%s from %s: reply %d rejected: %s", what, model.model_id, attempt, _one_line(outcome.error))
        history = [*history, *outcome.followup]
    last = _one_line(errors[-1])
    message = f"{model.model_id} gave no valid {what} in {retries + 1} attempts; last error: {last}"
    raise StructuredOutputError(message, raw_replies, errors, responses)


class _Decision(BaseModel):
    """The answer asked for when the server cannot call tools natively."""

    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class _Toolbox:
    """The tools on offer and how to validate their arguments."""

    tools: dict[str, ToolSpec]
    arg_models: dict[str, type[BaseModel]]

    def check_call(self, response: ChatResponse) -> ToolCall | _Rejection:
        """Native tool calling: take the first call; a text reply or bad arguments are re-asked."""
        if not response.tool_calls:
            names = ", ".join(self.tools)
            required = {
                "role": "user",
                "content": f"A tool call is required: call one of these tools: {names}.",
            }
            assistant = {"role": "assistant", "content": response.text or ""}
            return _Rejection("the reply was text, not a tool call", [assistant, required])
        call = response.tool_calls[0]
        error = self.call_error(call.name, call.arguments, call.raw_arguments)
        if error is None:
            return call
        # Answer the bad call within the protocol: the assistant's call, then a tool message with the error.
        call_dict = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.raw_arguments},
        }
        assistant = {"role": "assistant", "content": response.text, "tool_calls": [call_dict]}
        reply = {
            "role": "tool",
            "tool_call_id": call.id,
            "content": f"Error: {error}\nCall the tool again, corrected.",
        }
        return _Rejection(error, [assistant, reply])

    def check_decision(self, response: ChatResponse) -> ToolCall | _Rejection:
        """A decision object in text: parse, validate, and give the call an id of our own."""
        raw = response.text or ""
        try:
            decision = _Decision.model_validate_json(extract_json(raw))
        except ValueError as exc:
            return _reject_text(raw, _describe(exc), "tool decision")
        error = self.call_error(decision.tool, decision.arguments, None)
        if error is not None:
            return _reject_text(raw, error, "tool decision")
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        return ToolCall(call_id, decision.tool, decision.arguments, json.dumps(decision.arguments))

    def call_error(self, name: str, arguments: dict[str, Any], raw_arguments: str | None) -> str | None:
        """Why this tool call cannot be used, or None when it can."""
        tool = self.tools.get(name)
        if tool is None:
            return f"there is no tool named {name!r}; the tools are: {', '.join(self.tools)}"
        if raw_arguments is not None and raw_arguments.strip():
            try:
                decoded = json.loads(raw_arguments)
            except ValueError as exc:
                return f"the arguments for tool {name} are not valid JSON ({exc})"
            if not isinstance(decoded, dict):
                return f"the arguments for tool {name} must be a JSON object"
        arg_model = self.arg_models.get(name)
        if arg_model is not None:
            try:
                arg_model.model_validate(arguments)
            except ValidationError as exc:
                return f"invalid arguments for tool {name}:\n" + "\n".join(_field_errors(exc))
            return None
        problems = _schema_errors(tool.parameters, arguments)
        return f"invalid arguments for tool {name}:\n" + "\n".join(problems) if problems else None


def _schema_errors(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """A shallow JSON-schema check (top level only); pass an ``arg_models`` entry for full validation."""
    properties: dict[str, Any] = schema.get("properties", {})
    problems = [
        f"- {key}: required argument is missing" for key in schema.get("required", []) if key not in arguments
    ]
    for key, value in arguments.items():
        spec = properties.get(key)
        if spec is None:
            if schema.get("additionalProperties") is False:
                problems.append(f"- {key}: unknown argument; the arguments are: {', '.join(properties)}")
            continue
        expected = spec.get("type")
        if expected is not None and not _has_json_type(value, expected):
            problems.append(f"- {key}: expected {expected}, got {_short(value)}")
        elif "enum" in spec and value not in spec["enum"]:
            problems.append(f"- {key}: must be one of {spec['enum']}, got {_short(value)}")
    return problems


def _has_json_type(value: Any, expected: str | list[str]) -> bool:
    names = [expected] if isinstance(expected, str) else expected
    if isinstance(value, bool) and "boolean" not in names:
        return False  # JSON true is not a number, although Python's bool is an int
    return any(isinstance(value, _JSON_TYPES.get(name, object)) for name in names)


def _decision_schema(tools: list[ToolSpec]) -> OutputSchema:
    names = [tool.name for tool in tools]
    return OutputSchema(
        name="ToolDecision",
        schema={
            "type": "object",
            "properties": {
                "tool": {"type": "string", "enum": names, "description": "the tool to call"},
                "arguments": {"type": "object", "description": "the tool's arguments"},
            },
            "required": ["tool", "arguments"],
        },
    )


def _with_tool_catalogue(messages: list[Message], tools: list[ToolSpec]) -> list[Message]:
    """Describe the tools in the system message, since without native tools the model cannot see them.

    The catalogue is merged into an existing system message: some chat templates accept only one.
    """
    lines = [
        'Choose the next action by answering with one JSON object {"tool": <tool name>, "arguments": {...}} '
        "whose arguments match that tool's parameters. The tools:"
    ]
    lines += [f"- {t.name}: {t.description}\n  parameters: {json.dumps(t.parameters)}" for t in tools]
    catalogue = "\n".join(lines)
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{catalogue}"}, *messages[1:]]
    return [{"role": "system", "content": catalogue}, *messages]


def _reject_text(raw: str, error: str, what: str) -> _Rejection:
    retry = f"Your reply could not be used: {error}\nAnswer again with only a JSON object for the {what}."
    return _Rejection(error, [{"role": "assistant", "content": raw}, {"role": "user", "content": retry}])


def _describe(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "the JSON does not match the schema:\n" + "\n".join(_field_errors(exc))
    return f"the reply is not usable JSON ({exc})"


def _field_errors(exc: ValidationError) -> list[str]:
    """One concise line per field error: where, what, and (unless missing) what was given."""
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "(the whole object)"
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        lines.append(f"- {where}: {err['msg']}{got}")
    return lines


def _raw_reply(response: ChatResponse) -> str:
    if response.tool_calls:
        return json.dumps([{"tool": c.name, "arguments": c.raw_arguments} for c in response.tool_calls])
    return response.text or ""


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
