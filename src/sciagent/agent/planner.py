"""The planner for small local models: scaffolding that carries a model which cannot plan tool use.

Why: offered the whole catalogue, a 135M-parameter model repeated its first call, called tools it
cannot use (``create_tool`` with empty arguments, for minutes) and wrote numbers no result held
("35 atoms" beside a result saying 582; issue 21). Models under 1B parameters do fair on one tool call
and fail at multi-step tool use, so for a model whose profile says ``guided`` each step asks it one
small question, and sciagent does the rest deterministically:

- which tool next, among a shortlist: the few tools whose names, descriptions and argument names share
  the most words with the question (BM25), never one a small model cannot use (writing code, defining
  agents, spending an allocation, destroying), never a call identical to one already made; plus
  ``answer_now``. An analysis of a simulation still running is not offered: waiting for it is;
- only the arguments the question does not state: stated values (``sciagent.agent.stated``) and the
  session's own task ids are filled in and shown as fixed, and the model fills what remains (the
  required fields, and optional ones the question names) through a schema of those fields alone; when
  nothing remains there is no model call for arguments;
- at the end, which result fields answer the question (an enum of the session's result fields, the few
  closest to the question): sciagent writes the sentence with their values and units, labelled as
  composed from the results, so a number in it cannot be mistyped or invented.

Every model step gets a token cap sized from the model's measured speed (``Pace``), so a slow model
costs seconds, not minutes; an invalid decision, or two failed calls running, ends the turn with what
the session has. Capable endpoints never come here: the profile chooses (``LLMProfile.guided``).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from sciagent.agent.journal_rows import one_line
from sciagent.agent.observations import ResultField
from sciagent.agent.retrieval import (
    answer_fields,
    bm25,
    field_names,
    named_fields,
    relevant_tools,
    session_fields,
    words,
)
from sciagent.agent.stated import StatedValues, stated_values
from sciagent.agent.steps import ToolCallRecord
from sciagent.errors import StructuredOutputError
from sciagent.llm.base import ChatModel, ChatResponse, Message
from sciagent.llm.structured import ask_structured
from sciagent.tools.registry import Tool, ToolContext, ToolRegistry

log = logging.getLogger(__name__)

ANSWER_NOW = "answer_now"
SHORTLIST = 4  # tools offered at a time: a small model chooses well among a handful, not among forty
NOT_FOR_SMALL_MODELS = frozenset({"create_tool", "create_agent"})  # it cannot write code or define agents
UNSAFE_EFFECTS = frozenset({"runs_code", "spends", "destroys"})
WAITS = frozenset({"wait_for_task"})  # offered while a simulation runs: the analyses need it finished
IDENTIFIERS = frozenset({"site", "job_id"})  # a required one the question does not give: it would invent it
FAILURES_BEFORE_ANSWER = 2  # failed calls running after which the session answers with what it has
STEP_S = 12.0  # the longest one model step may take, at the model's measured speed
MIN_STEP_TOKENS = 16  # a decision's JSON needs about ten
DECISION_TOKENS, ARGUMENT_TOKENS, PICK_TOKENS, WORDS_TOKENS = 48, 256, 96, 64
MOST_PICKS = 4
SYSTEM = (
    "You are sciagent, a computational-science assistant. Each step, choose from the options you are "
    "given, answering in JSON."
)
CONDITIONS = frozenset({"temperature_k", "length_ps", "ph", "pressure_bar"})  # what a question asks to run
# Argument names whose values a question states, and where ``StatedValues`` keeps them.
STATED_FIELDS = {
    "structure": "structures",
    "temperature_k": "temperatures_k",
    "length_ps": "lengths_ps",
    "ph": "ph",
    "pressure_bar": "pressures_bar",
    "solvent": "solvent",
    "path": "files",
    "task_id": "task_ids",
}


@dataclass(frozen=True)
class Option:
    """A tool on offer: the arguments sciagent fills (``fixed``) and those the model must (``asked``)."""

    tool: Tool
    fixed: dict[str, Any]
    asked: tuple[str, ...]

    def shown(self) -> str:
        """``simulate(structure=villin, temperature_k=300): Start a molecular-dynamics ...``."""
        given = [f"{key}={_short(value)}" for key, value in self.fixed.items()]
        given += [f"{key}=?" for key in self.asked]
        return f"{self.tool.name}({', '.join(given)}): {_first_sentence(self.tool.description)}"


@dataclass(frozen=True)
class Move:
    """What the planner decided: a call (``tool`` with its ``arguments``), or the answer (``tool`` None).

    Attributes:
        error: the model's arguments did not validate (recorded as an invalid call).
        why: why the session answers without the model choosing to (no option left, an invalid
            decision, failing calls), for the log.
        responses: the model's replies, for the token count.
    """

    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    why: str | None = None
    responses: tuple[ChatResponse, ...] = ()


@dataclass(frozen=True)
class Composed:
    """The answer sciagent wrote from the result fields the model picked, and the model's replies."""

    text: str
    responses: tuple[ChatResponse, ...] = ()


@dataclass
class Pace:
    """The model's measured speed in this session: completion tokens over wall time (prompt reading
    included, so it errs slow), which sizes the token cap of each later step."""

    tokens: int = 0
    seconds: float = 0.0

    def heard(self, responses: Sequence[ChatResponse]) -> None:
        for response in responses:
            self.tokens += response.usage.completion_tokens
            self.seconds += response.latency_s

    def cap(self, most: int, seconds_left: float) -> int:
        """Tokens the next step may generate: ``most``, or what fits ``STEP_S`` (and the session's time
        left) at the speed measured so far."""
        if self.tokens < MIN_STEP_TOKENS or self.seconds <= 0:
            return most
        affordable = int(self.tokens / self.seconds * max(0.0, min(STEP_S, seconds_left)))
        return max(MIN_STEP_TOKENS, min(most, affordable))


@dataclass
class Planner:
    """One session's planner (see the module docstring); the agent loop carries out what it decides.

    Args:
        model: the guided model.
        tools: the session's catalogue (the shortlist is drawn from it afresh each step).
        context: the tools' context: its task board says which simulations are still running.
        instructions: what this agent is for (a sub-agent's definition), after the system prompt.
    """

    model: ChatModel
    tools: ToolRegistry
    context: ToolContext
    instructions: str | None = None
    pace: Pace = field(default_factory=Pace)

    # --- the next call ----------------------------------------------------------------------------

    def decide(self, question: str, records: Sequence[ToolCallRecord], seconds_left: float) -> Move:
        """The next call, or the answer: the model chooses among ``options``, then fills what remains."""
        last = records[-FAILURES_BEFORE_ANSWER:]
        if len(last) == FAILURES_BEFORE_ANSWER and all(r.status not in ("ok", "repeated") for r in last):
            return Move(why=f"the last {FAILURES_BEFORE_ANSWER} calls failed")
        options = self.options(question, records)
        if not options:
            return Move(why="no tool is left to offer")
        names = [option.tool.name for option in options]
        # An answer needs a result to compose it from; none while a simulation is still running, nor
        # while a condition the question states (300 K, pH 8) is offered and no call has used it yet.
        answerable = (
            any(r.status == "ok" for r in records)
            and all(map(self._finished, self._simulations()))
            and not _conditions_left(options, records)
        )
        if len(options) == 1 and not answerable:  # nothing to choose between: no model call
            return self._arguments(question, records, options[0], seconds_left)
        choices = [*names, ANSWER_NOW] if answerable else names
        choice = create_model("NextStep", tool=(Literal[tuple(choices)], ...))  # type: ignore[misc]
        listing = "\n".join(f"- {option.shown()}" for option in options)
        if answerable:
            listing += f"\n- {ANSWER_NOW}: answer the question from the results so far."
        prompt = (
            f"Done so far:\n{_done(records)}\nThe options:\n{listing}\nThe question: {question}\n"
            "Which option comes next? Answer in JSON."
        )
        try:
            picked = self._ask(prompt, choice, DECISION_TOKENS, seconds_left)
        except StructuredOutputError as exc:
            self.pace.heard(exc.responses)
            return Move(why=f"the model gave no valid decision: {one_line(str(exc))}", responses=_all(exc))
        self.pace.heard(picked.responses)
        if picked.value.tool == ANSWER_NOW:
            return Move(responses=tuple(picked.responses))
        option = options[names.index(picked.value.tool)]
        move = self._arguments(question, records, option, seconds_left)
        return Move(move.tool, move.arguments, move.error, responses=(*picked.responses, *move.responses))

    def options(self, question: str, records: Sequence[ToolCallRecord]) -> list[Option]:
        """The shortlist: at most ``SHORTLIST`` of the usable tools that match the question
        (``relevant_tools``), each with what it can be given; tools that only read come first (look
        before acting); a waiting tool joins while a simulation runs."""
        usable = [tool for tool in self.tools if self._usable(tool)]
        shortlist: list[Option] = []
        for tool in relevant_tools(question, usable):
            option = self._option(tool, question, records)
            if option is not None and len(shortlist) < SHORTLIST:
                shortlist.append(option)
        waits = [
            self._option(self.tools.get(name), question, records) for name in WAITS if name in self.tools
        ]
        for wait in waits:
            if wait is not None and all(option.tool.name != wait.tool.name for option in shortlist):
                shortlist = [*shortlist[: SHORTLIST - 1], wait]
        return sorted(shortlist, key=lambda option: option.tool.effects != {"reads"})

    def _usable(self, tool: Tool) -> bool:
        """Whether a small model may be offered ``tool``: not code, agents, spending, destroying or
        hours of work, nor a question to a person when no one can answer."""
        if tool.name in NOT_FOR_SMALL_MODELS or tool.effects & UNSAFE_EFFECTS or tool.cost == "hours":
            return False
        return not (tool.name == "ask_user" and self.context.ask_user is None)

    def _option(self, tool: Tool, question: str, records: Sequence[ToolCallRecord]) -> Option | None:
        """``tool`` with the first combination of stated values not yet called; None when it cannot be
        given a task or an identifier it needs, or every such call was made.

        The model is asked only for the required fields nothing fills; optional ones keep their defaults
        (asked for ``chains`` because a question said "how many chains", SmolLM2 wrote a list of "1"s).
        """
        fields, stated = _fields(tool), stated_values(question)
        choices: dict[str, list[Any]] = {}
        for name, required in fields.items():
            values = self._values_for(tool, name, stated)
            values = _named_choices(tool, name, question) if values == [] else values
            if values is None or (required and name in IDENTIFIERS and not values):
                return None  # a task it needs is not there or still running; an id it would invent
            if values:
                choices[name] = values
        asked = tuple(name for name, required in fields.items() if required and name not in choices)
        for combination in itertools.product(*choices.values()):
            fixed = dict(zip(choices, combination, strict=True))
            if not any(_covers(record, tool.name, fixed, exact=not asked) for record in records):
                return Option(tool, fixed, asked)
        return None

    def _values_for(self, tool: Tool, name: str, stated: StatedValues) -> list[Any] | None:
        """What sciagent gives argument ``name``: the values the question states, the session's task
        ids, nothing (``[]``: the model or the default decides) or None (the tool cannot run yet)."""
        if name == "task_ids":
            ids = list(stated.task_ids) or self._simulations()
            return [ids] if ids and all(self._finished(task) for task in ids) else None
        stated_value = getattr(stated, STATED_FIELDS.get(name, ""), None)
        values = (
            list(stated_value) if isinstance(stated_value, tuple) else [stated_value] if stated_value else []
        )
        if name != "task_id" or values:
            return values
        if tool.name in WAITS:
            return [task for task in self._simulations() if not self._finished(task)][:1] or None
        latest = self._simulations()[-1:]
        return latest if latest and self._finished(latest[0]) else None

    def _simulations(self) -> list[str]:
        """The session's simulations, oldest first."""
        board = self.context.tasks
        return [task.task_id for task in board.tasks() if task.workdir is not None] if board else []

    def _finished(self, task_id: str) -> bool:
        board = self.context.tasks
        if board is None:
            return False
        try:
            return board.state(board.get(task_id)).done
        except Exception:  # an unknown id: the tool says so when called
            return True

    def _arguments(
        self, question: str, records: Sequence[ToolCallRecord], option: Option, seconds_left: float
    ) -> Move:
        """The option's call: its fixed arguments, and the model's values for the fields that remain.

        A text field is chosen among the values of the session's results when there are any, as the
        answer's numbers are: asked to write one, SmolLM2 wrote the prompt back into ``write_file``.
        """
        name = option.tool.name
        if not option.asked:
            return Move(name, dict(option.fixed))
        results = {f.value: f.label for f in reversed(answer_fields(question, records, self.tools))}
        values = list(reversed(results))  # each value once, named by the closest field that holds it
        shown = [f"{value} ({results[value]})" for value in values]
        wanted = "; ".join(_field_help(option.tool, key, question, shown) for key in option.asked)
        prompt = f"The call: {option.shown()}\nThe question: {question}\nGive {wanted}. Answer in JSON."
        try:
            filled = self._ask(prompt, _remaining(option, values), ARGUMENT_TOKENS, seconds_left)
        except StructuredOutputError as exc:
            self.pace.heard(exc.responses)
            error = f"error: the arguments for {name} did not validate: {_problem(exc)}"
            return Move(name, dict(option.fixed), error=error, responses=_all(exc))
        self.pace.heard(filled.responses)
        given = filled.value.model_dump(mode="json", exclude_unset=True)
        return Move(name, {**option.fixed, **given}, responses=tuple(filled.responses))

    # --- the answer -------------------------------------------------------------------------------

    def compose(self, question: str, records: Sequence[ToolCallRecord], seconds_left: float) -> Composed:
        """The answer: the result fields the model picks, written out by sciagent with their units.

        The model's own sentence is not added: measured on the ``basics`` suite, SmolLM2-135M's sentence
        beside correct facts contradicted them ("3 chains" beside "number of chains = 1") and garbled
        the sequence it was shown. Without results, the model's own words are the answer (its numbers
        are checked like any answer's).
        """
        fields = answer_fields(question, records, self.tools)
        if not fields:
            return self._own_words(question, records, seconds_left)
        names = field_names(fields)
        pick = create_model(
            "Answer",
            fields=(list[Literal[tuple(names)]], Field(min_length=1, max_length=MOST_PICKS)),  # type: ignore[valid-type]
        )
        listing = "\n".join(f"- {name}: {f.value}{_unit(f)}" for name, f in zip(names, fields, strict=True))
        prompt = (  # the question last: a small model heeds what it read last
            f"The results:\n{listing}\nThe question: {question}\nWhich results answer it (at most "
            f"{MOST_PICKS})? Answer in JSON."
        )
        heading, responses = "From the tool results:", ()
        try:
            if len(fields) == 1:  # nothing to choose between: no model call
                chosen: list[ResultField] = fields
            else:
                picked = self._ask(prompt, pick, PICK_TOKENS, seconds_left)
                self.pace.heard(picked.responses)
                chosen = [fields[names.index(name)] for name in dict.fromkeys(picked.value.fields)]
                responses = tuple(picked.responses)
        except StructuredOutputError as exc:
            self.pace.heard(exc.responses)
            chosen, responses = fields[:MOST_PICKS], _all(exc)
            heading = (
                "From the tool results (the closest to the question by its words; the model chose none):"
            )
        named = named_fields(question, session_fields(records), [r.tool for r in records if r.status == "ok"])
        chosen = [*chosen, *[f for f in named if f not in chosen][:MOST_PICKS]]  # the fields it names
        facts = "; ".join(f"{f.label} = {f.value}{_unit(f)} ({f.key.split('.')[0]})" for f in chosen)
        return Composed(f"{heading} {facts}.", responses)

    def _own_words(self, question: str, records: Sequence[ToolCallRecord], seconds_left: float) -> Composed:
        """The model's one sentence, when no tool gave a result to compose an answer from."""
        prompt = (
            f"The question: {question}\nDone so far:\n{_done(records)}\nNo tool gave a result. Answer "
            "the question in one sentence."
        )
        messages: list[Message] = [self._system(), {"role": "user", "content": prompt}]
        reply = self.model.chat(
            messages, temperature=0.0, max_tokens=self.pace.cap(WORDS_TOKENS, seconds_left)
        )
        self.pace.heard([reply])
        return Composed(one_line(reply.text or "", 400), (reply,))

    # --- asking -----------------------------------------------------------------------------------

    def _ask(self, prompt: str, output: type[BaseModel], most: int, seconds_left: float) -> Any:
        messages: list[Message] = [self._system(), {"role": "user", "content": prompt}]
        return ask_structured(
            self.model, messages, output, retries=0, max_tokens=self.pace.cap(most, seconds_left)
        )

    def _system(self) -> Message:
        content = f"{SYSTEM}\n{self.instructions}" if self.instructions else SYSTEM
        return {"role": "system", "content": content}


def _fields(tool: Tool) -> dict[str, bool]:
    """A tool's argument names, each with whether it is required."""
    if tool.arguments.model_fields:
        return {name: info.is_required() for name, info in tool.arguments.model_fields.items()}
    schema = tool.parameters()
    required = set(schema.get("required", []))
    return {name: name in required for name in schema.get("properties", {})}


def _remaining(option: Option, values: list[str]) -> type[BaseModel]:
    """A pydantic model of the fields the model fills: the tool's own field definitions, except that a
    text field takes one of ``values`` (the results' values) when there are any (a schema tool's
    fields take any JSON value; its own schema checks the call)."""
    own = option.tool.arguments.model_fields
    fields: dict[str, Any] = {}
    for name in option.asked:
        if name not in own:
            fields[name] = (Any, ...)
        elif values and _is_text(option.tool, name):
            fields[name] = (Literal[tuple(values)], Field(description=own[name].description))
        else:
            fields[name] = (own[name].annotation, own[name])
    return create_model(f"{option.tool.name.title().replace('_', '')}Arguments", **fields)


def _field_help(tool: Tool, name: str, question: str, results: list[str]) -> str:
    """``metric (what to plot; one of radius_of_gyration, rmsd, ...)``: its allowed values, those
    closest to the question first; a text field's, the results' values (``_remaining``)."""
    described = [_property(tool, name).get("description") or ""]
    values, _ = _enum(tool, name)
    if results and _is_text(tool, name):
        described.append(f"one of {', '.join(results)}")
    elif values:
        scores = bm25(words(question), [words(value) for value in values])
        ranked = [value for _, value in sorted(zip(scores, values, strict=True), key=lambda pair: -pair[0])]
        described.append(f"one of {', '.join(ranked)}")
    shown = "; ".join(filter(None, described))
    return f"{name} ({shown})" if shown else name


def _named_choices(tool: Tool, name: str, question: str) -> list[Any]:
    """The allowed values of argument ``name`` that the question names word for word (``RMSF``,
    ``radius of gyration``): one for a single value, all of them for a list; none when it is unclear."""
    values, many = _enum(tool, name)
    named = [
        v for v in values if re.search(rf"\b{re.escape(v.replace('_', ' '))}\b", question, re.IGNORECASE)
    ]
    if many:
        return [named] if named else []
    return named if len(named) == 1 else []


def _enum(tool: Tool, name: str) -> tuple[list[str], bool]:
    """An argument's allowed string values, and whether it takes a list of them."""
    spec = _property(tool, name)
    many = spec.get("type") == "array"
    values = (spec.get("items", {}) if many else spec).get("enum", [])
    return [value for value in values if isinstance(value, str)], many


def _is_text(tool: Tool, name: str) -> bool:
    spec = _property(tool, name)
    return spec.get("type") == "string" and "enum" not in spec


def _property(tool: Tool, name: str) -> dict[str, Any]:
    spec = tool.parameters().get("properties", {}).get(name, {})
    return spec if isinstance(spec, dict) else {}


def _conditions_left(options: Sequence[Option], records: Sequence[ToolCallRecord]) -> bool:
    """Whether an option carries a stated condition (temperature, length, pH, pressure) that no
    successful call has used yet: the question asked for it to be run."""
    used = {(k, v) for r in records if r.status == "ok" for k, v in r.arguments.items() if k in CONDITIONS}
    return any((k, v) not in used for o in options for k, v in o.fixed.items() if k in CONDITIONS)


def _covers(record: ToolCallRecord, tool: str, fixed: dict[str, Any], *, exact: bool) -> bool:
    """Whether ``record`` already made this call of ``tool``: the same arguments (``exact``), or, when
    the model fills the rest, a successful call with these."""
    if record.tool != tool:
        return False
    if exact:
        return record.arguments == fixed
    return record.status == "ok" and all(record.arguments.get(key) == value for key, value in fixed.items())


def _done(records: Sequence[ToolCallRecord]) -> str:
    """The session's calls, one line each; a failure as one short line."""
    lines = []
    for record in records[-8:]:
        if record.status == "repeated":
            continue
        call = f"{record.tool}({', '.join(f'{k}={_short(v)}' for k, v in record.arguments.items())})"
        outcome = "ok" if record.status == "ok" else f"{record.status}: {one_line(record.error or '', 160)}"
        lines.append(f"- {call}: {outcome}")
    return "\n".join(lines) or "- nothing yet"


def _first_sentence(text: str, most: int = 100) -> str:
    sentence = text.split(". ")[0].strip().rstrip(".")
    return sentence if len(sentence) <= most else sentence[: most - 1] + "…"


def _short(value: Any) -> str:
    return one_line(", ".join(map(str, value)) if isinstance(value, list) else str(value), 60)


def _unit(result_field: ResultField) -> str:
    return f" {result_field.unit}" if result_field.unit else ""


def _problem(error: StructuredOutputError) -> str:
    """What was wrong with the last reply, without the preamble: ``text: Input should be a valid
    string (got 582)``."""
    last = error.errors[-1] if error.errors else str(error)
    fields = [line.strip().removeprefix("- ") for line in last.splitlines() if line.strip().startswith("- ")]
    return one_line("; ".join(fields) or last, 200)


def _all(error: StructuredOutputError) -> tuple[ChatResponse, ...]:
    return tuple(error.responses)
