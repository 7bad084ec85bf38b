"""Structured output and tool choice: validate → repair → give up, against a real OpenAI-protocol server."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from openai_server import OpenAIServer, text_reply, tool_call_reply
from sciagent.errors import StructuredOutputError
from sciagent.llm.base import ToolSpec
from sciagent.llm.openai_compat import OpenAICompatModel
from sciagent.llm.structured import ask_structured, ask_tool_choice, choose_tool, extract_json

ASK = [{"role": "system", "content": "You plan MD runs."}, {"role": "user", "content": "Plan a run."}]
VALID = '{"temperature_k": 300, "steps": 1000}'


class Plan(BaseModel):
    temperature_k: float = Field(gt=0)
    steps: int


class RunArgs(BaseModel):
    steps: int = Field(gt=0)


RUN_MD = ToolSpec(
    "run_md",
    "run a simulation",
    {"type": "object", "properties": {"steps": {"type": "integer"}}, "required": ["steps"]},
)
REPORT = ToolSpec("write_report", "write the report", {"type": "object", "properties": {}})


@pytest.fixture
def model(openai_server: OpenAIServer) -> OpenAICompatModel:
    return OpenAICompatModel(openai_server.base_url, "test-model")


@pytest.fixture
def plain_model(openai_server: OpenAIServer) -> OpenAICompatModel:
    """A server without native tool calling (e.g. llama.cpp without a tool-call template)."""
    return OpenAICompatModel(openai_server.base_url, "test-model", supports_native_tools=False)


def last_message(server: OpenAIServer, index: int = -1) -> dict:
    return server.chat_requests()[index].body["messages"][-1]


def test_valid_first_time(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(text_reply(VALID))
    answer = ask_structured(model, ASK, Plan)
    assert answer.value == Plan(temperature_k=300, steps=1000)
    assert (answer.attempts, answer.raw_replies) == (1, [VALID])
    assert answer.responses[0].usage.completion_tokens == 7
    body = openai_server.requests[0].body
    assert body["response_format"]["json_schema"] == {"name": "Plan", "schema": Plan.model_json_schema()}
    assert body["temperature"] == 0.0


def test_invalid_json_is_repaired(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(text_reply("I think 300 K is fine."), text_reply(VALID))
    answer = ask_structured(model, ASK, Plan)
    assert answer.value.steps == 1000
    assert answer.attempts == 2
    assert answer.raw_replies == ["I think 300 K is fine.", VALID]
    second = openai_server.chat_requests()[1].body["messages"]
    assert second[: len(ASK)] == ASK
    assert second[-2] == {"role": "assistant", "content": "I think 300 K is fine."}
    assert second[-1]["role"] == "user"
    assert "no JSON object" in second[-1]["content"]


def test_schema_violation_is_repaired_with_each_field_error(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.script(text_reply('{"temperature_k": -5, "steps": "many"}'), text_reply(VALID))
    answer = ask_structured(model, ASK, Plan)
    assert answer.attempts == 2
    repair = last_message(openai_server)["content"]
    assert "- temperature_k: Input should be greater than 0 (got -5)" in repair
    assert "- steps: Input should be a valid integer" in repair


def test_always_garbage_raises_with_every_reply(
    openai_server: OpenAIServer, model: OpenAICompatModel
) -> None:
    replies = ["nope", '{"steps": 1}', "```json\n{oops}\n```"]
    openai_server.script(*[text_reply(r) for r in replies])
    with pytest.raises(StructuredOutputError, match="no valid Plan in 3 attempts") as caught:
        ask_structured(model, ASK, Plan, retries=2)
    assert caught.value.raw_replies == replies
    assert len(caught.value.errors) == 3
    assert "temperature_k: Field required" in caught.value.errors[1]
    assert "\n" not in str(caught.value)
    assert len(openai_server.requests) == 3


def test_fenced_json_with_prose_is_accepted(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(text_reply(f"Here is the plan:\n```json\n{VALID}\n```\nLet me know!"))
    assert ask_structured(model, ASK, Plan).attempts == 1


def test_json_object_dialect(openai_server: OpenAIServer) -> None:
    model = OpenAICompatModel(openai_server.base_url, "m", response_format_style="json_object")
    openai_server.script(text_reply(VALID))
    ask_structured(model, ASK, Plan, temperature=None, max_tokens=50)
    body = openai_server.requests[0].body
    assert body["response_format"] == {"type": "json_object", "schema": Plan.model_json_schema()}
    assert "temperature" not in body and body["max_tokens"] == 50


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('  {"a": 1}  ', '{"a": 1}'),
        ('Sure! {"a": {"b": "}"}} hope that helps', '{"a": {"b": "}"}}'),
        ('Options {a, b}; answer: {"a": 2}', '{"a": 2}'),
        ('```\n{"a": 3}\n```', '{"a": 3}'),
        ("[1, 2]", "[1, 2]"),
    ],
)
def test_extract_json(reply: str, expected: str) -> None:
    assert extract_json(reply) == expected


def test_extract_json_without_json() -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("I cannot answer that {properly")


def test_choose_tool_native(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(tool_call_reply("run_md", {"steps": 100}, call_id="call_7"))
    call = choose_tool(model, ASK, [RUN_MD, REPORT])
    assert (call.id, call.name, call.arguments) == ("call_7", "run_md", {"steps": 100})
    body = openai_server.requests[0].body
    assert [t["function"]["name"] for t in body["tools"]] == ["run_md", "write_report"]
    assert "response_format" not in body


def test_native_text_answer_is_reasked(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(text_reply("I would run MD."), tool_call_reply("run_md", {"steps": 100}))
    answer = ask_tool_choice(model, ASK, [RUN_MD, REPORT])
    assert answer.attempts == 2
    assert answer.value.name == "run_md"
    assert "A tool call is required" in last_message(openai_server)["content"]


def test_native_bad_arguments_are_repaired(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(
        tool_call_reply("run_md", '{"steps": ', call_id="call_1"),
        tool_call_reply("run_md", {"steps": -3}, call_id="call_2"),
        tool_call_reply("run_md", {"steps": 50}, call_id="call_3"),
    )
    answer = ask_tool_choice(model, ASK, [RUN_MD], arg_models={"run_md": RunArgs})
    assert (answer.attempts, answer.value.arguments) == (3, {"steps": 50})
    second = openai_server.chat_requests()[1].body["messages"]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "run_md", "arguments": '{"steps": '}
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_1"
    assert "not valid JSON" in second[-1]["content"]
    assert "- steps: Input should be greater than 0" in last_message(openai_server)["content"]


def test_native_unknown_tool_gives_up(openai_server: OpenAIServer, model: OpenAICompatModel) -> None:
    openai_server.script(tool_call_reply("rm_rf", {}), tool_call_reply("rm_rf", {}))
    with pytest.raises(StructuredOutputError, match="no tool named 'rm_rf'") as caught:
        choose_tool(model, ASK, [RUN_MD], retries=1)
    assert len(caught.value.raw_replies) == 2
    assert "rm_rf" in caught.value.raw_replies[0]


def test_choose_tool_without_native_tools(
    openai_server: OpenAIServer, plain_model: OpenAICompatModel
) -> None:
    openai_server.script(text_reply('{"tool": "run_md", "arguments": {"steps": 100}}'))
    call = choose_tool(plain_model, ASK, [RUN_MD, REPORT])
    assert (call.name, call.arguments) == ("run_md", {"steps": 100})
    assert call.id.startswith("call_") and call.raw_arguments == '{"steps": 100}'
    body = openai_server.requests[0].body
    assert "tools" not in body
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["tool"]["enum"] == ["run_md", "write_report"]
    assert schema["required"] == ["tool", "arguments"]
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You plan MD runs.")
    assert "- run_md: run a simulation" in system["content"] and '"steps"' in system["content"]
    assert len(body["messages"]) == len(ASK)


def test_decision_with_bad_arguments_is_repaired(
    openai_server: OpenAIServer, plain_model: OpenAICompatModel
) -> None:
    openai_server.script(
        text_reply('{"tool": "run_md", "arguments": {"steps": "lots"}}'),
        text_reply('{"tool": "run_md", "arguments": {}}'),
        text_reply('{"tool": "run_md", "arguments": {"steps": 10}}'),
    )
    answer = ask_tool_choice(plain_model, [{"role": "user", "content": "go"}], [RUN_MD])
    assert (answer.attempts, answer.value.arguments) == (3, {"steps": 10})
    assert openai_server.requests[0].body["messages"][0]["role"] == "system"  # catalogue added
    assert "- steps: expected integer, got 'lots'" in last_message(openai_server, 1)["content"]
    assert "- steps: required argument is missing" in last_message(openai_server, 2)["content"]


def test_decision_always_invalid_raises(openai_server: OpenAIServer, plain_model: OpenAICompatModel) -> None:
    openai_server.script(
        text_reply('{"tool": "launch_rocket", "arguments": {}}'), text_reply("run_md please")
    )
    with pytest.raises(StructuredOutputError) as caught:
        choose_tool(plain_model, ASK, [RUN_MD], retries=1)
    assert "no tool named 'launch_rocket'" in caught.value.errors[0]
    assert "no JSON object" in caught.value.errors[1]


def test_bad_budgets_and_empty_toolsets_are_refused(model: OpenAICompatModel) -> None:
    with pytest.raises(ValueError, match="at least one tool"):
        choose_tool(model, ASK, [])
    with pytest.raises(ValueError, match="retries"):
        ask_structured(model, ASK, Plan, retries=-1)
