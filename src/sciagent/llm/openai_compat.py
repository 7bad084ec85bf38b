"""A ``ChatModel`` for any OpenAI-compatible endpoint: vLLM, llama.cpp's server, facility inference services.

The ``openai`` SDK speaks the protocol; this module owns everything around it: HTTP retries (the SDK's
are switched off so only ``RetryPolicy`` retries, STYLE.md habit 8), mapping SDK exceptions to ours by
type and status code (habit 9), and turning SDK objects into plain ``ChatResponse`` values.

What is retried: connection errors, timeouts, HTTP 408, 429 and 5xx (honouring ``Retry-After``).
What is not: 401/403 (``ModelAuthError``: the user must log in), other 4xx, and a 500 or 501 whose
body says the request was invalid (llama.cpp's server answers a request it cannot parse with a 500
carrying the validation error): asking again would get the same answer, so the error quotes the
server (``RequestRejected``). The API key never appears in messages, logs or ``repr``.

Structured answers are negotiated: a request the server rejects in one ``response_format`` style is
sent again in the next (``json_schema`` → ``json_object`` with the schema → the schema in a system
message), and the style that worked is kept for the model's later calls (``response_format_style``).
The schema sent in the llama.cpp styles is the grammar-friendly one the embedded model gets: their
grammars ignore numeric bounds, so small ranges become enums (``sciagent.llm.grammar``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import openai

from sciagent.errors import (
    ModelAuthError,
    ModelError,
    ModelRequestError,
    ModelUnavailable,
    RequestRejected,
)
from sciagent.llm.base import (
    RESPONSE_FORMAT_STYLES,
    ChatResponse,
    Message,
    OutputSchema,
    ResponseFormatStyle,
    ToolCall,
    ToolSpec,
    Usage,
)
from sciagent.llm.grammar import grammar_friendly_schema
from sciagent.llm.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Sent when no key is given: local vLLM / llama.cpp servers ignore it, and the SDK requires one.
PLACEHOLDER_API_KEY = "not-needed"
_RETRYABLE_STATUS = frozenset({408, 429})
_WIRE_DOT = "__"  # stands for the dot of NAME.tool in names sent to the API (see wire_name)
_AUTH_STATUS = frozenset({401, 403})
_INVALID_STATUS = frozenset({400, 422})
# A 500 or 501 with these words is the server rejecting the request, not failing to serve it.
_SAYS_INVALID = re.compile(
    r"validation error|invalid request|bad request|unprocessable|not supported|unsupported|not implemented",
    re.IGNORECASE,
)
_BASE_URL_HINT = "check that the base URL points at an OpenAI-compatible API (it usually ends in /v1)"


class OpenAICompatModel:
    """Chat with a model behind an OpenAI-compatible base URL (one that ends in ``/v1``).

    ``chat`` reports ``latency_s`` of the successful HTTP attempt only, not the back-off before it, so
    ``tokens_per_s`` measures the model rather than the network's bad moments.

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (vLLM) or a facility endpoint.
        model: the model id the server knows (``meta-llama/Meta-Llama-3.1-8B-Instruct``).
        api_key: bearer token; None sends a placeholder, since local servers need none.
        timeout_s: per-attempt HTTP timeout; generous by default because long generations are slow.
        retry: back-off policy for transient failures.
        response_format_style: the structured-output style to try first: ``json_schema`` (vLLM,
            OpenAI), ``json_object`` (llama-cpp-python) or ``prompt``; the others are tried when the
            server rejects it, and the one that works is kept here.
        supports_native_tools: whether the server honours ``tools=``.
        guided: whether the agent plans for this model (a small local one; the profile sets it).
        sleep: how to wait between attempts; tests inject a recorder.
    """

    guided = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so a shared default is safe
        response_format_style: ResponseFormatStyle = "json_schema",
        supports_native_tools: bool = True,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not base_url.strip():
            raise ValueError("base_url is empty: give the endpoint's URL, e.g. http://localhost:8000/v1")
        if not model.strip():
            raise ValueError("model is empty: give the model id the endpoint serves (see list_models())")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if response_format_style not in RESPONSE_FORMAT_STYLES:
            raise ValueError(f"response_format_style must be one of {RESPONSE_FORMAT_STYLES}")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.supports_native_tools = supports_native_tools
        self.response_format_style: ResponseFormatStyle = response_format_style
        self.timeout_s = timeout_s
        self._retry = retry
        self._sleep = sleep
        self._api_key = api_key or PLACEHOLDER_API_KEY
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=timeout_s, max_retries=0
        )

    def __repr__(self) -> str:
        return f"OpenAICompatModel(base_url={self.base_url!r}, model={self.model_id!r})"

    def chat(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        output_schema: OutputSchema | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResponse:
        """Send ``messages``; see ``ChatModel.chat``. Unset options are left out of the request.

        With ``output_schema``, a style the server rejects is followed by the next one (module
        docstring); the error after the last names what the server said to each.
        """
        request: dict[str, Any] = {"model": self.model_id, "messages": _wire_messages(messages)}
        if tools:
            request["tools"] = [replace(tool, name=wire_name(tool.name)).to_openai() for tool in tools]
        if temperature is not None:
            request["temperature"] = temperature
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if output_schema is None:
            return _named_back(self._complete(request), tools or [])
        rejections: list[str] = []
        for style in self._styles_to_try():
            try:
                response = self._complete(_structured(request, output_schema, style))
            except RequestRejected as exc:
                rejections.append(f"{style}: {exc}")
                log.info("%s rejected a %s request; trying the next style", self.base_url, style)
                continue
            if style != self.response_format_style:
                log.info("%s answers structured requests in the %s style", self.base_url, style)
                self.response_format_style = style
            return _named_back(response, tools or [])
        raise RequestRejected(
            f"the endpoint {self.base_url} rejected a structured request in every style ("
            + "; ".join(rejections)
            + ")"
        )

    def _styles_to_try(self) -> list[ResponseFormatStyle]:
        """The current style first, then the others in their usual order."""
        first = self.response_format_style
        return [first, *(style for style in RESPONSE_FORMAT_STYLES if style != first)]

    def _complete(self, request: dict[str, Any]) -> ChatResponse:
        completion, latency_s = self._with_retries(
            lambda: self._client.chat.completions.create(**request), "chat completion"
        )
        return self._to_response(completion, latency_s)

    def list_models(self) -> list[str]:
        """The model ids the endpoint serves (``GET /v1/models``): a cheap health and auth check."""
        page, _ = self._with_retries(lambda: self._client.models.list(), "model list")
        return [m.id for m in page.data]

    def _with_retries(self, call: Callable[[], T], what: str) -> tuple[T, float]:
        """Run ``call`` under the retry policy; return its result and the successful attempt's duration."""
        attempts = self._retry.attempts
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                result = call()
            except json.JSONDecodeError as exc:
                raise ModelError(
                    f"the endpoint {self.base_url} answered with invalid JSON; {_BASE_URL_HINT}"
                ) from exc
            except openai.APIStatusError as exc:
                if (exc.status_code not in _RETRYABLE_STATUS and exc.status_code < 500) or _says_invalid(exc):
                    raise self._refusal(exc) from exc
                cause, retry_after = exc, _retry_after_s(exc.response.headers)
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                cause, retry_after = exc, None
            else:
                return result, time.perf_counter() - started
            if attempt == attempts:
                break
            delay = self._retry.delay(attempt, retry_after)
            log.warning(
                "%s from %s failed (attempt %d of %d: %s); retrying in %.2f s",
                what, self.base_url, attempt, attempts, self._redact(_describe(cause)), delay,
            )  # fmt: skip
            self._sleep(delay)
        raise ModelUnavailable(
            f"could not reach {self.base_url} after {attempts} attempts: {self._redact(_describe(cause))}"
        ) from cause

    def _refusal(self, exc: openai.APIStatusError) -> ModelError:
        """The error for a status we do not retry: auth (the user acts) or a bad request (we do)."""
        status = exc.status_code
        detail = self._redact(_server_message(exc))
        if status in _AUTH_STATUS:
            return ModelAuthError(
                f"the endpoint {self.base_url} rejected the token (HTTP {status}: {detail}): "
                "run `sciagent auth login` or check the API key"
            )
        message = f"the endpoint {self.base_url} rejected the request (HTTP {status}): {detail}"
        if status in _INVALID_STATUS or status >= 500:
            return RequestRejected(message)
        hint = "; check the base URL and the model id" if status == 404 else ""
        return ModelRequestError(message + hint)

    def _redact(self, text: str) -> str:
        """Remove the key from server-supplied text, in case a server echoes it back in an error."""
        return text.replace(self._api_key, "[redacted]") if self._api_key != PLACEHOLDER_API_KEY else text

    def _to_response(self, completion: Any, latency_s: float) -> ChatResponse:
        """Plain values from the SDK's object; a body that is not a chat completion is a ``ModelError``."""
        try:
            return _chat_response(completion, latency_s, self.model_id)
        except (AttributeError, IndexError, TypeError) as exc:
            raise ModelError(
                f"the endpoint {self.base_url} answered with something other than a chat completion; "
                f"{_BASE_URL_HINT}"
            ) from exc


def _structured(
    request: dict[str, Any], output_schema: OutputSchema, style: ResponseFormatStyle
) -> dict[str, Any]:
    """``request`` asking for ``output_schema`` in ``style`` (bounded for llama.cpp's grammars)."""
    if style != "json_schema":
        output_schema = OutputSchema(output_schema.name, grammar_friendly_schema(output_schema.schema))
    response_format = output_schema.response_format(style)
    if response_format is None:
        return {**request, "messages": [output_schema.instruction(), *request["messages"]]}
    return {**request, "response_format": response_format}


def wire_name(name: str) -> str:
    """A tool's name as OpenAI's API accepts it (``^[a-zA-Z0-9_-]+$``): an MCP server's ``NAME.tool``
    goes out as ``NAME__tool``."""
    return name.replace(".", _WIRE_DOT)


def _wire_messages(messages: list[Message]) -> list[Message]:
    """The transcript with the tool names of earlier calls as they went out (``wire_name``)."""
    wired = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls and any("." in call["function"]["name"] for call in calls):
            calls = [
                {**call, "function": {**call["function"], "name": wire_name(call["function"]["name"])}}
                for call in calls
            ]
            message = {**message, "tool_calls": calls}
        wired.append(message)
    return wired


def _named_back(response: ChatResponse, tools: list[ToolSpec]) -> ChatResponse:
    """The response with each called tool under its own name again."""
    names = {wire_name(tool.name): tool.name for tool in tools if "." in tool.name}
    if not names or not response.tool_calls:
        return response
    calls = [replace(call, name=names.get(call.name, call.name)) for call in response.tool_calls]
    return replace(response, tool_calls=calls)


def _says_invalid(exc: openai.APIStatusError) -> bool:
    """A 500/501 whose body says the request was invalid: the server's words, not an outage."""
    return exc.status_code in (500, 501) and bool(_SAYS_INVALID.search(_server_message(exc)))


def _chat_response(completion: Any, latency_s: float, model_id: str) -> ChatResponse:
    choice = completion.choices[0]
    usage = completion.usage
    return ChatResponse(
        model=completion.model or model_id,
        text=choice.message.content,
        tool_calls=[
            _to_tool_call(c)
            for c in choice.message.tool_calls or []
            if getattr(c, "type", "function") == "function"
        ],
        usage=Usage(
            prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage else 0,
        ),
        latency_s=latency_s,
        finish_reason=choice.finish_reason,
    )


def _to_tool_call(call: Any) -> ToolCall:
    """Decode the arguments; invalid JSON keeps ``{}`` and the raw string, for the caller to repair."""
    raw = call.function.arguments or ""
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = None
    arguments = decoded if isinstance(decoded, dict) else {}
    return ToolCall(
        id=call.id or f"call_{uuid.uuid4().hex[:24]}",
        name=call.function.name,
        arguments=arguments,
        raw_arguments=raw,
    )


def _retry_after_s(headers: Any) -> float | None:
    """The server's requested wait: OpenAI's ``retry-after-ms`` first, then standard ``Retry-After``."""
    millis = parse_retry_after(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc)}"
    cause = exc.__cause__
    return f"connection error ({type(cause).__name__})" if cause else "connection error"


def _server_message(exc: openai.APIStatusError, limit: int = 300) -> str:
    """The server's own words (OpenAI/vLLM ``message``, FastAPI ``detail``) on one short line."""
    body = exc.body
    text: Any = body
    if isinstance(body, dict):
        text = body.get("message") or body.get("detail") or body.get("error") or body
    text = " ".join(str(text if text is not None else exc.message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
