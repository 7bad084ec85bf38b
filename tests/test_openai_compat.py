"""OpenAICompatModel and RetryPolicy against a real OpenAI-protocol server over real sockets."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from openai_server import (
    LLAMA_CPP_REJECTS_JSON_SCHEMA,
    OpenAIServer,
    drop_connection,
    json_reply,
    slow_reply,
    status_reply,
    text_reply,
    tool_call_reply,
)
from sciagent.errors import ModelAuthError, ModelError, ModelRequestError, ModelUnavailable, UserError
from sciagent.llm.base import ChatModel, OutputSchema, ToolSpec
from sciagent.llm.openai_compat import OpenAICompatModel
from sciagent.llm.retry import RetryPolicy, parse_retry_after

SECRET = "sk-test-5ecret-do-not-leak"
HELLO = [{"role": "user", "content": "hello"}]
FAST = RetryPolicy(max_retries=3, base_delay_s=0.2, max_delay_s=5.0, jitter=0.0)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def model(openai_server: OpenAIServer, sleeps: list[float]) -> OpenAICompatModel:
    """A client with a secret key whose back-off is recorded instead of slept."""
    return OpenAICompatModel(
        openai_server.base_url, "test-model", api_key=SECRET, retry=FAST, sleep=sleeps.append
    )


def test_text_reply_with_usage_and_latency(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(text_reply("hi there", prompt_tokens=12, completion_tokens=3, model="served-name"))
    response = model.chat(HELLO)
    assert isinstance(model, ChatModel)
    assert response.text == "hi there"
    assert response.tool_calls == []
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (12, 3)
    assert response.model == "served-name"  # the id the server reports, for the journal
    assert response.finish_reason == "stop"
    assert 0 < response.latency_s < 5
    assert response.tokens_per_s is not None


def test_request_carries_options_only_when_set(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(text_reply("a"), text_reply("b"))
    model.chat(HELLO, temperature=0.3, max_tokens=64)
    model.chat(HELLO)
    first, second = openai_server.chat_requests()
    assert first.body["model"] == "test-model"
    assert first.body["messages"] == HELLO
    assert (first.body["temperature"], first.body["max_tokens"]) == (0.3, 64)
    assert not {"temperature", "max_tokens", "tools", "response_format"} & set(second.body)


def test_key_sent_as_bearer_and_placeholder_when_none(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.script(text_reply("a"), text_reply("b"))
    model.chat(HELLO)
    OpenAICompatModel(openai_server.base_url, "test-model").chat(HELLO)
    with_key, without_key = openai_server.chat_requests()
    assert with_key.headers["authorization"] == f"Bearer {SECRET}"
    assert without_key.headers["authorization"] == "Bearer not-needed"


def test_tool_call_is_parsed(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    tool = ToolSpec(
        "run_md", "run a simulation", {"type": "object", "properties": {"steps": {"type": "integer"}}}
    )
    openai_server.script(tool_call_reply("run_md", {"steps": 500}, call_id="call_abc"))
    response = model.chat(HELLO, tools=[tool])
    assert openai_server.requests[0].body["tools"] == [tool.to_openai()]
    [call] = response.tool_calls
    assert (call.id, call.name, call.arguments) == ("call_abc", "run_md", {"steps": 500})
    assert response.finish_reason == "tool_calls"


def test_an_mcp_tools_dotted_name_goes_out_as_the_api_allows_and_comes_back_as_it_was(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    """OpenAI's API accepts tool names of ``[a-zA-Z0-9_-]`` only; ``ext.echo`` travels as ``ext__echo``,
    in the tools, in earlier calls of the transcript, and back in the reply."""
    tool = ToolSpec("ext.echo", "echo a text", {"type": "object", "properties": {"text": {"type": "string"}}})
    earlier = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "ext.echo", "arguments": "{}"}}
    ]}  # fmt: skip
    history = [*HELLO, earlier, {"role": "tool", "tool_call_id": "c1", "content": "{}"}]
    openai_server.script(tool_call_reply("ext__echo", {"text": "hi"}))
    response = model.chat(history, tools=[tool])
    body = openai_server.requests[0].body
    assert [t["function"]["name"] for t in body["tools"]] == ["ext__echo"]
    assert body["messages"][-2]["tool_calls"][0]["function"]["name"] == "ext__echo"
    assert history[-2]["tool_calls"][0]["function"]["name"] == "ext.echo"  # the caller's copy is untouched
    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("ext.echo", {"text": "hi"})


def test_invalid_tool_arguments_are_kept_raw(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(tool_call_reply("run_md", '{"steps": 5'))
    [call] = model.chat(HELLO).tool_calls
    assert call.arguments == {}
    assert call.raw_arguments == '{"steps": 5'


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        (
            "json_schema",
            {"type": "json_schema", "json_schema": {"name": "Plan", "schema": {"type": "object"}}},
        ),
        ("json_object", {"type": "json_object", "schema": {"type": "object"}}),
        ("prompt", None),
    ],
)
def test_response_format_dialect(openai_server: OpenAIServer, style: str, expected: dict) -> None:
    openai_server.script(text_reply("{}"))
    model = OpenAICompatModel(openai_server.base_url, "test-model", response_format_style=style)  # type: ignore[arg-type]
    model.chat(HELLO, output_schema=OutputSchema("Plan", {"type": "object"}))
    assert openai_server.requests[0].body.get("response_format") == expected
    if style == "prompt":  # the schema travels in a system message instead
        first = openai_server.requests[0].body["messages"][0]
        assert first["role"] == "system" and '{"type":"object"}' in first["content"]


BOUNDED = OutputSchema(
    "Plan", {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 3}}}
)


def test_a_rejected_style_is_not_retried_and_the_next_style_is_remembered(
    openai_server: OpenAIServer, model: OpenAICompatModel, sleeps: list[float]
) -> None:
    openai_server.script(LLAMA_CPP_REJECTS_JSON_SCHEMA, text_reply('{"replicas": 2}'), text_reply("{}"))
    assert model.chat(HELLO, output_schema=BOUNDED).text == '{"replicas": 2}'
    assert model.response_format_style == "json_object"
    model.chat(HELLO, output_schema=BOUNDED)  # straight to the style that worked
    formats = [r.body["response_format"]["type"] for r in openai_server.chat_requests()]
    assert formats == ["json_schema", "json_object", "json_object"] and sleeps == []
    # llama.cpp's grammar ignores numeric bounds: it gets them as an enum, as the embedded model does.
    sent = openai_server.chat_requests()[1].body["response_format"]["schema"]["properties"]["replicas"]
    assert sent["enum"] == [1, 2, 3]


def test_a_server_rejecting_both_formats_gets_the_schema_in_the_prompt(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.script(status_reply(400, message="response_format is not supported"), status_reply(422))
    openai_server.script(text_reply('{"replicas": 1}'))
    assert model.chat(HELLO, output_schema=BOUNDED).text == '{"replicas": 1}'
    last = openai_server.chat_requests()[-1].body
    assert "response_format" not in last and '"enum":[1,2,3]' in last["messages"][0]["content"]
    assert model.response_format_style == "prompt"


def test_a_request_rejected_in_every_style_says_what_the_server_said(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.script(*[status_reply(400, message="prompt is longer than the context")] * 3)
    with pytest.raises(ModelRequestError, match="rejected a structured request in every style") as caught:
        model.chat(HELLO, output_schema=BOUNDED)
    assert "could not reach" not in str(caught.value) and "longer than the context" in str(caught.value)
    assert len(openai_server.requests) == 3


def test_a_500_saying_the_request_is_invalid_is_not_retried(
    openai_server: OpenAIServer, model: OpenAICompatModel, sleeps: list[float]
) -> None:
    openai_server.script(LLAMA_CPP_REJECTS_JSON_SCHEMA)
    with pytest.raises(ModelRequestError, match=r"rejected the request \(HTTP 500\): 1 validation error"):
        model.chat(HELLO)
    assert len(openai_server.requests) == 1 and sleeps == []


def test_429_is_retried_honouring_retry_after(
    openai_server: OpenAIServer, model: OpenAICompatModel, sleeps: list[float]
) -> None:
    openai_server.script(status_reply(429, retry_after=1.5), text_reply("ok"))
    assert model.chat(HELLO).text == "ok"
    assert sleeps == [1.5]  # the server's wait, not our 0.2 s back-off
    assert len(openai_server.requests) == 2


def test_retry_after_ms_and_cap(
    openai_server: OpenAIServer, model: OpenAICompatModel, sleeps: list[float]
) -> None:
    millis = dataclasses.replace(status_reply(429), headers={"retry-after-ms": "250"})
    openai_server.script(millis, status_reply(503, retry_after=3600), text_reply("ok"))
    assert model.chat(HELLO).text == "ok"
    assert sleeps == [0.25, FAST.max_delay_s]


def test_500_then_success_is_logged_without_the_key(
    openai_server: OpenAIServer,
    model: OpenAICompatModel,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    openai_server.script(status_reply(500, message=f"bad key {SECRET}"), status_reply(502), text_reply("ok"))
    with caplog.at_level(logging.DEBUG):
        response = model.chat(HELLO)
    assert response.text == "ok"
    assert sleeps == [0.2, 0.4]  # exponential back-off, jitter off
    retries = [r.getMessage() for r in caplog.records if r.name == "sciagent.llm.openai_compat"]
    assert len(retries) == 2
    assert "attempt 1 of 4" in retries[0] and "HTTP 500" in retries[0] and "0.20 s" in retries[0]
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert response.latency_s < 1  # the successful attempt only, not the back-off


def test_dropped_connection_is_retried(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(drop_connection(), text_reply("back again"))
    assert model.chat(HELLO).text == "back again"
    assert len(openai_server.requests) == 2


def test_retry_limit_then_unavailable(openai_server: OpenAIServer, sleeps: list[float]) -> None:
    policy = RetryPolicy(max_retries=2, base_delay_s=0.01, jitter=0.0)
    model = OpenAICompatModel(openai_server.base_url, "m", api_key=SECRET, retry=policy, sleep=sleeps.append)
    openai_server.script(*[status_reply(503, message=f"overloaded; key {SECRET}")] * 4)
    with pytest.raises(ModelUnavailable, match=r"after 3 attempts: HTTP 503") as caught:
        model.chat(HELLO)
    assert len(openai_server.requests) == 3
    assert openai_server.pending() == 1
    assert len(sleeps) == 2
    assert caught.value.__cause__ is not None
    assert openai_server.base_url in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_not_retried(
    openai_server: OpenAIServer, model: OpenAICompatModel, status: int
) -> None:
    openai_server.script(status_reply(status, message=f"token {SECRET} expired"), text_reply("never sent"))
    with pytest.raises(ModelAuthError) as caught:
        model.chat(HELLO)
    message = str(caught.value)
    assert len(openai_server.requests) == 1
    assert isinstance(caught.value, UserError)
    assert "\n" not in message
    assert f"HTTP {status}" in message and "sciagent auth login" in message
    assert SECRET not in message  # even when the server echoes the token back


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_is_a_request_error(
    openai_server: OpenAIServer, model: OpenAICompatModel, status: int
) -> None:
    openai_server.script(status_reply(status, message="max_tokens is too large"))
    with pytest.raises(ModelRequestError, match=rf"HTTP {status}\): max_tokens is too large"):
        model.chat(HELLO)
    assert len(openai_server.requests) == 1


def test_slow_reply_times_out_and_is_retried(openai_server: OpenAIServer, sleeps: list[float]) -> None:
    policy = RetryPolicy(max_retries=1, base_delay_s=0.01, jitter=0.0)
    model = OpenAICompatModel(openai_server.base_url, "m", timeout_s=0.2, retry=policy, sleep=sleeps.append)
    openai_server.script(slow_reply(1.0), slow_reply(1.0))
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="after 2 attempts: timed out"):
        model.chat(HELLO)
    assert time.perf_counter() - started < 0.9  # gave up at the timeout, did not wait for the replies
    assert len(openai_server.requests) == 2


def test_timeout_then_success(openai_server: OpenAIServer, sleeps: list[float]) -> None:
    model = OpenAICompatModel(openai_server.base_url, "m", timeout_s=0.2, retry=FAST, sleep=sleeps.append)
    openai_server.script(slow_reply(0.6), text_reply("quick now"))
    assert model.chat(HELLO).text == "quick now"


def test_unreachable_endpoint_is_unavailable(sleeps: list[float]) -> None:
    with OpenAIServer() as server:
        base_url = server.base_url  # a port nobody listens on once the server is closed
    policy = RetryPolicy(max_retries=1, base_delay_s=0.0, jitter=0.0)
    model = OpenAICompatModel(base_url, "m", api_key=SECRET, retry=policy, sleep=sleeps.append)
    with pytest.raises(ModelUnavailable, match="after 2 attempts: connection error") as caught:
        model.chat(HELLO)
    assert SECRET not in str(caught.value)


def test_a_body_that_is_not_a_completion_is_a_model_error(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.script(json_reply({"detail": "hello from a web app"}), json_reply("<html>"))
    with pytest.raises(ModelError, match="ends in /v1"):
        model.chat(HELLO)
    with pytest.raises(ModelError, match="invalid JSON"):
        model.chat(HELLO)
    assert len(openai_server.requests) == 2  # not retried: asking again gets the same page


def test_list_models(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.models = ["llama-3.1-8b", "gpt-oss-120b"]
    assert model.list_models() == ["llama-3.1-8b", "gpt-oss-120b"]
    [request] = openai_server.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_list_models_auth_failure(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(status_reply(401), path="/v1/models")
    with pytest.raises(ModelAuthError):
        model.list_models()


def test_repr_hides_the_key(model: OpenAICompatModel) -> None:
    assert SECRET not in repr(model)
    assert "test-model" in repr(model)


@pytest.mark.parametrize(
    "kwargs",
    [{"base_url": " "}, {"model": ""}, {"timeout_s": 0}, {"response_format_style": "xml"}],
)
def test_constructor_rejects_bad_settings(kwargs: dict) -> None:
    settings = {"base_url": "http://localhost:8000/v1", "model": "m", **kwargs}
    with pytest.raises(ValueError):
        OpenAICompatModel(**settings)


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    future = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(future) <= 30  # type: ignore[operator]
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=3.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, retry_after_s=10.0) == 3.0
    assert policy.delay(3, retry_after_s=0.0) == 0.0
    jittery = RetryPolicy(base_delay_s=1.0, jitter=0.25)
    assert all(0.75 <= jittery.delay(1) <= 1.25 for _ in range(50))
    assert RetryPolicy(max_retries=2).attempts == 3


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"base_delay_s": -1}, {"jitter": 1.5}])
def test_retry_policy_validates(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
