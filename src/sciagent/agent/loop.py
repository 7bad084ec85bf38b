"""The open-ended agent: a model answers a question by calling catalogue tools until it can answer.

Why a small loop of our own rather than pydantic-ai's ``Agent``: its ``Model.request`` is async and
speaks its own message parts, so our ``ChatModel`` would need an async adapter translating messages
both ways; the embedded model (no native tool calls) would need our constrained decision hidden
inside that adapter; and durability (a journal row per step, no tool re-run on resume) would wrap
every tool anyway. What remains is this module.

Each turn the model either calls tools or answers. With native tool calls (``supports_native_tools``)
it gets every tool's schema; otherwise it decides in two constrained steps through the grammar path:
the next tool's name (an enum of the catalogue plus ``final_answer``), then that tool's arguments
(the tool's own pydantic model). Invalid arguments and failed tools come back as observations
naming the tool and the problem; a repeated identical call gets the earlier result and a note.
Budgets (steps, tokens, wall time, simulated ns) end the session with what it has. The answer's
numbers are checked against every number the session's tool results hold: the rest are listed as
unattributed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from sciagent.errors import ModelError, StructuredOutputError
from sciagent.llm.base import ChatModel, Message
from sciagent.llm.structured import StructuredAnswer, ask_structured
from sciagent.report.numbers import find_numbers, matches
from sciagent.tools.registry import COST_RANK, Tool, ToolArgumentsError, ToolContext, ToolFailed, ToolRegistry

log = logging.getLogger(__name__)

FINAL = "final_answer"
ARGUMENT_TOKENS = 256  # a tool's arguments are short; a small model's runaway string is cut here
STUCK_AFTER = 3  # the same failing call this many times running ends the session: it will not change
REPEATS_BEFORE_ANSWER = 2  # calls repeating earlier ones, running, after which the answer is asked for
ANSWER_TOKENS = 256
FINAL_PROMPT = "Write your final answer to the question now, with the numbers the tool results gave."
OBSERVATION_CHARS = 6000  # what the model sees of one result; the record keeps it whole
SYSTEM_PROMPT = (
    "You are sciagent, a computational-science assistant. Answer the user's question by calling the "
    "tools; every number you state must come from a tool result of this session. Simulations return a "
    "task id at once: wait for them with wait_for_task, then analyse them by task id. When you can "
    "answer, answer in a few sentences with the numbers and their units."
)
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


Approve = Callable[[Tool, dict[str, Any]], bool]


@dataclass
class Agent:
    """One session's loop; ``run`` it once with the question.

    Args:
        model: any ``ChatModel``; native tool calls are used where it has them.
        tools: the catalogue the model may call.
        context: what the tools get (the session directory, the task board).
        budget: when to stop without an answer.
        approve: asked before a tool above ``approval_above`` runs; None: such a call is refused and the
            model is told no one can approve it.
        approval_above: tools of a higher cost class ask first (``instant``: simulations ask).
    """

    model: ChatModel
    tools: ToolRegistry
    context: ToolContext
    budget: Budget = field(default_factory=Budget)
    approve: Approve | None = None
    approval_above: str = "instant"
    records: list[ToolCallRecord] = field(default_factory=list)
    _tokens: int = 0
    _simulated_ns: float = 0.0
    _question: str = ""

    def run(self, question: str) -> SessionOutcome:
        """Work on ``question`` until the model answers or a budget runs out."""
        started = time.monotonic()
        self._question = question
        messages: list[Message] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
        step = 0
        while True:
            reason = self._over_budget(step, started)
            if reason:
                return self._outcome("budget_exhausted", "", reason, step, started, question)
            step += 1
            try:
                answer = self._turn(messages, step)
            except (ModelError, StructuredOutputError) as exc:
                return self._outcome("failed", "", f"the model call failed: {exc}", step, started, question)
            if answer is not None:
                return self._outcome("answered", answer, None, step, started, question)
            if self._repeating():  # it has every result it will get: ask for the answer once
                step += 1
                try:
                    answer = self._final_answer(messages)
                except (ModelError, StructuredOutputError) as exc:
                    reason = f"the model call failed: {exc}"
                    return self._outcome("failed", "", reason, step, started, question)
                return self._outcome("answered", answer, None, step, started, question)
            stuck = self._stuck()
            if stuck:
                return self._outcome("failed", "", stuck, step, started, question)

    # --- one turn ---------------------------------------------------------------------------------

    def _turn(self, messages: list[Message], step: int) -> str | None:
        """Ask the model for its next move and carry it out; the answer text when it gives one."""
        if self.model.supports_native_tools:
            return self._native_turn(messages, step)
        return self._decided_turn(messages, step)

    def _native_turn(self, messages: list[Message], step: int) -> str | None:
        reply = self.model.chat(messages, tools=[tool.spec() for tool in self.tools], temperature=0.0)
        self._tokens += reply.usage.prompt_tokens + reply.usage.completion_tokens
        if not reply.tool_calls:
            return (reply.text or "").strip()
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
            for c in reply.tool_calls
        ]
        messages.append({"role": "assistant", "content": reply.text, "tool_calls": calls})
        for call in reply.tool_calls:
            observation = self._execute(call.name, call.raw_arguments or call.arguments, step)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": observation})
        return None

    def _decided_turn(self, messages: list[Message], step: int) -> str | None:
        names = [tool.name for tool in self.tools]
        choice = create_model("NextStep", tool=(Literal[tuple([*names, FINAL])], ...))  # type: ignore[misc]
        ask = [*messages, {"role": "user", "content": _choice_prompt(self.tools)}]
        picked = ask_structured(self.model, ask, choice, retries=1, max_tokens=48)
        self._count(picked)
        name = picked.value.tool
        if name == FINAL:
            return self._final_answer(messages)
        tool = self.tools.get(name)
        example = tool.example()
        shown = f" Example: {json.dumps(example)}" if example else ""
        prompt = f"The question: {self._question}\nThe arguments for {name} ({tool.description}), in JSON?"
        prompt += shown
        try:
            arguments = ask_structured(
                self.model,
                [*messages, {"role": "user", "content": prompt}],
                tool.arguments,
                retries=1,
                max_tokens=ARGUMENT_TOKENS,
            )
        except StructuredOutputError as exc:
            observation = f"error: the arguments for {name} did not validate: {exc}"
            self._record(step, name, {}, "invalid", error=observation)
            messages.append({"role": "user", "content": f"Observation from {name}: {observation}"})
            return None
        self._count(arguments)
        raw = arguments.value.model_dump(mode="json")
        self._execute(name, raw, step)
        record = self.records[-1]
        shown = _readable(record.result) if record.result is not None else record.error
        if record.status == "repeated":
            shown = f"(the same call as before: its result again, not run twice)\n{shown}"
        messages.append({"role": "assistant", "content": json.dumps({"tool": name, "arguments": raw})})
        messages.append({"role": "user", "content": f"Result of {name}:\n{shown}"})
        return None

    # --- carrying out one call --------------------------------------------------------------------

    def _execute(self, name: str, raw: dict[str, Any] | str, step: int) -> str:
        """Run one tool call and return the observation the model reads."""
        arguments = _as_dict(raw)
        earlier = self._same_call(name, arguments)
        if earlier is not None:
            self._record(step, name, arguments, "repeated", result=earlier.result, error=earlier.error)
            note = f"(the same call as step {earlier.step}: its result again, not run twice) "
            return note + _observation(earlier.result, earlier.error)
        try:
            tool = self.tools.get(name)
            parsed = tool.parse(raw)
        except ToolArgumentsError as exc:
            return self._failed(step, name, arguments, "invalid", f"invalid call: {exc}")
        refusal = self._refusal(tool, parsed)
        if refusal:
            return self._failed(step, name, arguments, "refused", refusal)
        try:
            result = tool.run(parsed, self.context)
        except ToolArgumentsError as exc:
            return self._failed(step, name, arguments, "invalid", f"invalid call: {exc}")
        except ToolFailed as exc:
            return self._failed(step, name, arguments, "failed", f"failed ({exc.failure_class}): {exc}")
        dumped = result.model_dump(mode="json")
        self._simulated_ns += _simulated_ns(tool, parsed)
        self._record(step, name, arguments, "ok", result=dumped)
        return _observation(dumped, None)

    def _refusal(self, tool: Tool, parsed: BaseModel) -> str | None:
        """Why ``tool`` may not run now (approval, the simulated-time budget), or None."""
        more = _simulated_ns(tool, parsed)
        if self._simulated_ns + more > self.budget.max_simulated_ns:
            left = self.budget.max_simulated_ns - self._simulated_ns
            return f"refused: {tool.name} asks {more:g} ns but the session has {left:g} ns of simulation left"
        if COST_RANK[tool.cost] <= COST_RANK[self.approval_above]:
            return None
        if self.approve is None:
            return (
                f"refused: {tool.name} ({tool.cost}) needs approval and no one can give it here "
                "(run with --approve-all to allow it)"
            )
        if not self.approve(tool, parsed.model_dump(mode="json")):
            return f"refused: the user declined {tool.name}"
        return None

    def _final_answer(self, messages: list[Message]) -> str:
        """The answer, asked for outright as plain text (a schema adds nothing to prose, and a small
        model's constrained string runs on to the token limit)."""
        prompt = {"role": "user", "content": f"The question: {self._question}\n{FINAL_PROMPT}"}
        reply = self.model.chat([*messages, prompt], temperature=0.0, max_tokens=ANSWER_TOKENS)
        self._tokens += reply.usage.prompt_tokens + reply.usage.completion_tokens
        return (reply.text or "").strip()

    def _repeating(self) -> bool:
        """The model's last ``REPEATS_BEFORE_ANSWER`` calls all repeated an earlier one."""
        last = self.records[-REPEATS_BEFORE_ANSWER:]
        return len(last) == REPEATS_BEFORE_ANSWER and all(record.status == "repeated" for record in last)

    def _stuck(self) -> str | None:
        """Why the session cannot go on: the same failing call ``STUCK_AFTER`` times running."""
        last = self.records[-STUCK_AFTER:]
        if len(last) < STUCK_AFTER or any(record.status == "ok" for record in last):
            return None
        if len({(record.tool, _canonical(record.arguments), record.error) for record in last}) > 1:
            return None
        return f"the model made the same failing call {STUCK_AFTER} times: {last[-1].tool}: {last[-1].error}"

    def _same_call(self, name: str, arguments: dict[str, Any]) -> ToolCallRecord | None:
        """The earlier successful call with exactly these arguments, for tools whose answer cannot change."""
        if name in _NOT_REPEATABLE:
            return None
        key = _canonical(arguments)
        for record in self.records:
            if record.tool == name and record.status == "ok" and _canonical(record.arguments) == key:
                return record
        return None

    def _failed(self, step: int, name: str, arguments: dict[str, Any], status: CallStatus, error: str) -> str:
        self._record(step, name, arguments, status, error=error)
        return error

    def _record(
        self, step: int, name: str, arguments: dict[str, Any], status: CallStatus, **rest: Any
    ) -> None:
        self.records.append(ToolCallRecord(step=step, tool=name, arguments=arguments, status=status, **rest))

    def _count(self, answer: StructuredAnswer[Any]) -> None:
        self._tokens += sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in answer.responses)

    def _over_budget(self, step: int, started: float) -> str | None:
        if step >= self.budget.max_steps:
            return f"the step budget ({self.budget.max_steps}) ran out"
        if self._tokens >= self.budget.max_tokens:
            return f"the token budget ({self.budget.max_tokens:,}) ran out"
        if time.monotonic() - started >= self.budget.wall_time_s:
            return f"the wall-time budget ({self.budget.wall_time_s:g} s) ran out"
        return None

    def _outcome(
        self, status: str, answer: str, reason: str | None, step: int, started: float, question: str
    ) -> SessionOutcome:
        return SessionOutcome(
            status=status,  # type: ignore[arg-type]  # one of the literal's values, by the callers
            answer=answer,
            reason=reason,
            tool_calls=list(self.records),
            unattributed_numbers=unattributed_numbers(answer, self.records, question),
            steps=step,
            tokens=self._tokens,
            wall_time_s=round(time.monotonic() - started, 3),
        )


# Calls whose result changes with time: asking again is a new question, not a repeat.
_NOT_REPEATABLE = frozenset({"wait_for_task", "task_status", "list_tasks", "read_file", "list_files"})


def unattributed_numbers(answer: str, records: list[ToolCallRecord], question: str = "") -> list[str]:
    """The numbers written in ``answer`` that no tool result of the session (nor the question) holds."""
    allowed: list[float] = []
    for record in records:
        if record.result is not None:
            allowed.extend(_numbers_in(record.result))
    allowed.extend(number.value for number in find_numbers(question))
    return [number.text for number in find_numbers(answer) if not matches(number, allowed)]


def _numbers_in(value: Any) -> list[float]:
    """Every number in a result: numeric fields, and numbers written inside its strings."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [float(value), abs(float(value))]
    if isinstance(value, str):
        return [number.value for number in find_numbers(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers_in(item)]
    return []


def _simulated_ns(tool: Tool, parsed: BaseModel) -> float:
    length_ps = getattr(parsed, "length_ps", None) if tool.name == "simulate" else None
    return float(length_ps) / 1000.0 if length_ps else 0.0


def _observation(result: dict[str, Any] | None, error: str | None) -> str:
    text = error if result is None else json.dumps(result)
    if text and len(text) > OBSERVATION_CHARS:
        return text[:OBSERVATION_CHARS] + f" ... [{len(text) - OBSERVATION_CHARS} more characters cut]"
    return text or ""


def _readable(result: dict[str, Any], most: int = 40) -> str:
    """A result as ``name: value`` lines, long lists shortened: what a model without native tool calls
    reads (a small model finds ``total_atoms: 582`` in lines, not in a page of JSON)."""
    lines: list[str] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}.{key}" if name else str(key))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value[:5]):
                walk(item, f"{name}[{index}]")
        elif isinstance(value, list) and len(value) > 8:
            lines.append(f"{name}: {len(value)} values, first {value[0]}, last {value[-1]}")
        else:
            lines.append(f"{name}: {value}")

    walk(result, "")
    return "\n".join(lines[:most])


def _as_dict(raw: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, default=str)


def _choice_prompt(tools: ToolRegistry) -> str:
    listing = "\n".join(f"- {tool.name}: {tool.description}" for tool in tools)
    return f"Tools:\n{listing}\n- {FINAL}: answer the question now.\nWhich one comes next? Answer in JSON."
