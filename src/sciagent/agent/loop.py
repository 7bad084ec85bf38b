"""The open-ended agent: a model answers a question by calling catalogue tools until it can answer.

Why a small loop of our own rather than pydantic-ai's ``Agent``: its ``Model.request`` is async and
speaks its own message parts, so our ``ChatModel`` would need an async adapter translating messages
both ways; the embedded model (no native tool calls) would need our constrained decision hidden
inside that adapter; and durability (a journal row per step, no tool re-run on resume) would wrap
every tool anyway. What remains is this module.

Each turn the model either calls tools or answers. With native tool calls (``supports_native_tools``)
it gets every tool's schema; otherwise it decides in two constrained steps through the grammar path:
the next tool's name (an enum of the catalogue plus ``final_answer``), then that tool's arguments
(the tool's own pydantic model). A small model whose profile says ``guided`` is led by the planner
instead (``sciagent.agent.planner``: a shortlist, the stated arguments filled, a composed answer).
Invalid arguments and failed tools come back as observations naming the tool and the problem; a
repeated identical call gets the earlier result and a note. Budgets (steps, tokens, wall time,
simulated ns) end the session with what it has. The answer's numbers are checked against every number
the session's tool results hold: the rest are listed as unattributed.

Durability: every message and tool call goes to a ``SessionRecorder`` (the journal) as it happens, and
``Agent.resume`` continues from what one recorded: the transcript is restored as it was, calls that
finished are answered from their records and never run again, and only calls that never finished run.
Before each model turn the recorder is asked for messages the user sent meanwhile (``sciagent tell``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, create_model

from sciagent.agent.observations import REPEAT_NOTE, observation, readable, unattributed_numbers
from sciagent.agent.planner import Planner
from sciagent.agent.steps import (
    Budget,
    CallStatus,
    PlannedCall,
    Resumption,
    SessionOutcome,
    SessionRecorder,
    ToolCallRecord,
)
from sciagent.errors import ModelError, StructuredOutputError
from sciagent.llm.base import ChatModel, Message
from sciagent.llm.structured import StructuredAnswer, ask_structured
from sciagent.tools.approval import Answerer, ApprovalPolicy, refusal
from sciagent.tools.registry import Tool, ToolArgumentsError, ToolContext, ToolFailed, ToolRegistry

log = logging.getLogger(__name__)

FINAL = "final_answer"
ARGUMENT_TOKENS = 256  # a tool's arguments are short; a small model's runaway string is cut here
STUCK_AFTER = 3  # the same failing call this many times running ends the session: it will not change
REPEATS_BEFORE_ANSWER = 2  # calls repeating earlier ones, running, after which the answer is asked for
ANSWER_TOKENS = 256
FINAL_PROMPT = "Write your final answer to the question now, with the numbers the tool results gave."
TOLD = "A message from the user while you work: {text}"
SYSTEM_PROMPT = (
    "You are sciagent, a computational-science assistant. Answer the user's question by calling the "
    "tools; every number you state must come from a tool result of this session. Simulations return a "
    "task id at once: wait for them with wait_for_task, then analyse them by task id. When you can "
    "answer, answer in a few sentences with the numbers and their units."
)


@dataclass
class Agent:
    """One session's loop: ``run`` a question, ``resume`` a recorded session, ``follow_up`` in a chat.

    Args:
        model: any ``ChatModel``; native tool calls are used where it has them.
        tools: the catalogue the model may call.
        context: what the tools get (the session directory, the task board).
        budget: when to stop without an answer.
        policy: decides from what each call does whether it runs, asks first or is refused
            (``sciagent.tools.approval``).
        answer: who answers a call the policy says must ask (the journal's approval desk); None: such
            a call is refused and the model is told no one can approve it.
        recorder: where each step goes as it happens (None: nothing is kept).
        instructions: what this agent is for, after the system prompt (a sub-agent's definition).
    """

    model: ChatModel
    tools: ToolRegistry
    context: ToolContext
    budget: Budget = field(default_factory=Budget)
    policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    answer: Answerer | None = None
    recorder: SessionRecorder | None = None
    instructions: str | None = None
    records: list[ToolCallRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    _tokens: int = 0
    _simulated_ns: float = 0.0
    _steps: int = 0
    _question: str = ""
    _finished: dict[str, ToolCallRecord] = field(default_factory=dict)  # by call id, on resume
    _started: float = field(default_factory=time.monotonic)  # of the current turn's loop
    _planner: Planner | None = None  # a guided model's, made on its first turn

    def run(self, question: str) -> SessionOutcome:
        """Work on ``question`` until the model answers or a budget runs out."""
        prompt = f"{SYSTEM_PROMPT}\n{self.instructions}" if self.instructions else SYSTEM_PROMPT
        self._say({"role": "system", "content": prompt})
        return self.follow_up(question)

    def follow_up(self, question: str) -> SessionOutcome:
        """The next question of the same session (a chat): the transcript so far stays in view."""
        self._question = question
        self._say({"role": "user", "content": question})
        return self._loop()

    def resume(self, state: Resumption) -> SessionOutcome:
        """Go on with a recorded session: finished calls are not run again, unfinished ones are."""
        self.restore(state)
        self._perform(state.awaiting, state.steps)
        return self._loop()

    def restore(self, state: Resumption) -> None:
        """Take a recorded session's transcript, calls and spending as this agent's own."""
        self._question = state.question
        self.messages = list(state.messages)
        self.records = list(state.records)
        self._finished = {record.call_id: record for record in state.records if record.call_id}
        self._tokens, self._steps = state.tokens, state.steps
        done = [record for record in state.records if record.status == "ok"]
        self._simulated_ns = sum(self._ns_of(record) for record in done)
        for record in done:
            self._charge(record)

    def usage(self) -> dict[str, float]:
        """What the session has spent: steps, tokens and simulated nanoseconds."""
        return {"steps": self._steps, "tokens": self._tokens, "simulated_ns": round(self._simulated_ns, 6)}

    def left(self) -> Budget:
        """What remains of the budget now: the most a sub-agent of this one may be given."""
        return Budget(
            max_steps=max(0, self.budget.max_steps - self._steps),
            max_tokens=max(0, self.budget.max_tokens - self._tokens),
            wall_time_s=max(0.0, self.budget.wall_time_s - (time.monotonic() - self._started)),
            max_simulated_ns=max(0.0, self.budget.max_simulated_ns - self._simulated_ns),
        )

    def _loop(self) -> SessionOutcome:
        started = self._started = time.monotonic()
        while True:
            reason = self._over_budget(started)
            if reason:
                return self._outcome("budget_exhausted", "", reason, started)
            self._read_incoming()
            self._steps += 1
            try:
                answer = self._turn(self._steps)
                if answer is None and self._repeating():  # it has every result it will get: ask once
                    self._steps += 1
                    answer = self._final_answer()
            except (ModelError, StructuredOutputError) as exc:
                return self._outcome("failed", "", f"the model call failed: {exc}", started)
            if answer is not None:
                return self._outcome("answered", answer, None, started)
            stuck = self._stuck()
            if stuck:
                return self._outcome("failed", "", stuck, started)

    # --- one turn ---------------------------------------------------------------------------------

    def _turn(self, step: int) -> str | None:
        """Ask the model for its next move and carry it out; the answer text when it gives one."""
        if self.model.supports_native_tools:
            return self._native_turn(step)
        if self.model.guided:
            return self._guided_turn(step)
        return self._decided_turn(step)

    def _native_turn(self, step: int) -> str | None:
        reply = self.model.chat(self.messages, tools=[tool.spec() for tool in self.tools], temperature=0.0)
        self._tokens += reply.usage.prompt_tokens + reply.usage.completion_tokens
        if not reply.tool_calls:
            answer = (reply.text or "").strip()
            self._say({"role": "assistant", "content": answer})
            return answer
        calls = [
            PlannedCall(f"{step}.{n}", c.name, c.raw_arguments or c.arguments, True, c.id or f"{step}_{n}")
            for n, c in enumerate(reply.tool_calls, start=1)
        ]
        wire = [
            {"id": c.wire_id, "type": "function", "function": {"name": c.tool, "arguments": _as_text(c.raw)}}
            for c in calls
        ]
        self._say({"role": "assistant", "content": reply.text, "tool_calls": wire}, calls=calls)
        self._perform(calls, step)
        return None

    def _decided_turn(self, step: int) -> str | None:
        names = [tool.name for tool in self.tools]
        choice = create_model("NextStep", tool=(Literal[tuple([*names, FINAL])], ...))  # type: ignore[misc]
        ask = [*self.messages, {"role": "user", "content": _choice_prompt(self.tools)}]
        picked = ask_structured(self.model, ask, choice, retries=1, max_tokens=48)
        self._count(picked)
        name = picked.value.tool
        if name == FINAL:
            return self._final_answer()
        tool = self.tools.get(name)
        example = tool.example()
        prompt = f"The question: {self._question}\nThe arguments for {name} ({tool.description}), in JSON?"
        prompt += f" Example: {json.dumps(example)}" if example else ""
        try:
            arguments = ask_structured(
                self.model,
                [*self.messages, {"role": "user", "content": prompt}],
                tool.arguments,
                retries=1,
                max_tokens=ARGUMENT_TOKENS,
            )
        except StructuredOutputError as exc:
            return self._invalid(step, name, {}, f"error: the arguments for {name} did not validate: {exc}")
        self._count(arguments)
        return self._carry_out(step, name, arguments.value.model_dump(mode="json"))

    def _guided_turn(self, step: int) -> str | None:
        """The planner's next move for a guided model: a call, or the answer it composes."""
        move = self._guide().decide(self._question, self.records, self._seconds_left())
        self._tokens += sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in move.responses)
        if move.tool is None:
            if move.why:
                log.info("the planner answers now: %s", move.why)
            return self._final_answer()
        if move.error:
            return self._invalid(step, move.tool, move.arguments, move.error)
        return self._carry_out(step, move.tool, move.arguments)

    def _guide(self) -> Planner:
        if self._planner is None:
            self._planner = Planner(self.model, self.tools, self.context, self.instructions)
        return self._planner

    def _carry_out(self, step: int, name: str, raw: dict[str, Any]) -> None:
        """A decided call (no native tool calls): said in words in the transcript, then run."""
        call = PlannedCall(f"{step}.1", name, raw, native=False)
        self._say({"role": "assistant", "content": _call_in_words(name, raw)}, calls=[call])
        self._perform([call], step)

    def _invalid(self, step: int, name: str, arguments: dict[str, Any], error: str) -> None:
        """A decided call whose arguments did not validate: recorded, and the model told."""
        self._record(step, None, name, arguments, "invalid", error=error)
        self._say({"role": "user", "content": f"Observation from {name}: {error}"})

    def _perform(self, calls: list[PlannedCall], step: int) -> None:
        """Carry out ``calls`` (a call that finished before a resume gives its record) and put each
        result in the transcript."""
        for call in calls:
            record = self._finished.get(call.call_id) or self._execute(call, step)
            self._say(self._result_message(call, record), result_of=call.call_id)

    def _result_message(self, call: PlannedCall, record: ToolCallRecord) -> Message:
        earlier = self._same_call(record.tool, record.arguments) if record.status == "repeated" else None
        if call.native:
            note = REPEAT_NOTE.format(step=earlier.step) if earlier else ""
            content = note + observation(record.result, record.error)
            return {"role": "tool", "tool_call_id": call.wire_id, "content": content}
        shown = readable(record.result) if record.result is not None else record.error
        if earlier:
            shown = f"(the same call as before: its result again, not run twice)\n{shown}"
        return {"role": "user", "content": f"Result of {call.tool}:\n{shown}"}

    # --- carrying out one call --------------------------------------------------------------------

    def _execute(self, call: PlannedCall, step: int) -> ToolCallRecord:
        """Run one tool call; its record (ok, invalid, failed, repeated or refused)."""
        name, arguments = call.tool, _as_dict(call.raw)
        earlier = self._same_call(name, arguments)
        if earlier is not None:
            return self._record(step, call.call_id, name, arguments, "repeated", **_outcome_of(earlier))
        if self.recorder:
            self.recorder.call_started(call, step)
        try:
            tool = self.tools.get(name)
            parsed = tool.parse(call.raw)
        except ToolArgumentsError as exc:
            return self._record(step, call.call_id, name, arguments, "invalid", error=f"invalid call: {exc}")
        context = replace(self.context, call_id=call.call_id, transcript=tuple(self.messages))
        refusal = self._refusal(tool, parsed, context)
        if refusal:
            return self._record(step, call.call_id, name, arguments, "refused", error=refusal)
        try:
            result = tool.run(parsed, context)
        except ToolArgumentsError as exc:
            return self._record(step, call.call_id, name, arguments, "invalid", error=f"invalid call: {exc}")
        except ToolFailed as exc:
            error = f"failed ({exc.failure_class}): {exc}"
            return self._record(step, call.call_id, name, arguments, "failed", error=error)
        self._simulated_ns += _asked_ns(tool.name, parsed)
        dumped = result.model_dump(mode="json")
        record = self._record(step, call.call_id, name, arguments, "ok", result=dumped)
        self._charge(record)
        return record

    def _charge(self, record: ToolCallRecord) -> None:
        """Count what a tool spent on the session's behalf (a sub-agent's ``usage``) against its budget."""
        usage = (record.result or {}).get("usage")
        if isinstance(usage, dict):
            self._steps += int(usage.get("steps", 0))
            self._tokens += int(usage.get("tokens", 0))
            self._simulated_ns += float(usage.get("simulated_ns", 0.0))

    def _refusal(self, tool: Tool, parsed: BaseModel, context: ToolContext) -> str | None:
        """Why ``tool`` may not run now (the simulated-time budget, the approval policy), or None."""
        more = _asked_ns(tool.name, parsed)
        if self._simulated_ns + more > self.budget.max_simulated_ns:
            left = self.budget.max_simulated_ns - self._simulated_ns
            return f"refused: {tool.name} asks {more:g} ns but the session has {left:g} ns of simulation left"
        return refusal(self.policy.request(tool, parsed, context, context.call_id), self.answer)

    def _final_answer(self) -> str:
        """The answer, asked for outright as plain text (a schema adds nothing to prose, and a small
        model's constrained string runs on to the token limit).

        A model without native tool calls is shown the question and the results alone: after a run of
        its own decisions in the transcript, a small model writes one more decision instead of an answer.
        A guided model's answer is composed by the planner from the result fields it picks.
        """
        if self.model.guided:
            composed = self._guide().compose(self._question, self.records, self._seconds_left())
            self._tokens += sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in composed.responses)
            self._say({"role": "assistant", "content": composed.text})
            return composed.text
        prompt = {"role": "user", "content": f"The question: {self._question}\n{FINAL_PROMPT}"}
        if self.model.supports_native_tools:
            asked = [*self.messages, prompt]
        else:
            asked = [self.messages[0], {"role": "user", "content": self._results_digest()}, prompt]
        reply = self.model.chat(asked, temperature=0.0, max_tokens=ANSWER_TOKENS)
        self._tokens += reply.usage.prompt_tokens + reply.usage.completion_tokens
        answer = (reply.text or "").strip()
        self._say({"role": "assistant", "content": answer})
        return answer

    def _results_digest(self) -> str:
        """Every distinct tool result of the session as ``name: value`` lines, errors as their message."""
        parts = [f"The question: {self._question}", "The tool results:"]
        for record in self.records:
            if record.status == "repeated":
                continue
            shown = readable(record.result) if record.result is not None else record.error
            parts.append(f"{record.tool}({_arguments_in_words(record.arguments)}):\n{shown}")
        return "\n".join(parts)

    def _read_incoming(self) -> None:
        """Put what the user told the session meanwhile (``sciagent tell``) before the next model call,
        and cancel the tasks someone asked to cancel (``sciagent ui``)."""
        if self.context.tasks is not None:
            self.context.tasks.poll()
        for told, text in self.recorder.incoming() if self.recorder else []:
            self._say({"role": "user", "content": TOLD.format(text=text)}, told=told)

    def _say(
        self,
        message: Message,
        *,
        calls: Sequence[PlannedCall] = (),
        result_of: str | None = None,
        told: int | None = None,
    ) -> None:
        self.messages.append(message)
        if self.recorder:
            self.recorder.message(message, self._steps, calls=calls, result_of=result_of, told=told)

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

    def _record(
        self,
        step: int,
        call_id: str | None,
        name: str,
        arguments: dict[str, Any],
        status: CallStatus,
        **rest: Any,
    ) -> ToolCallRecord:
        record = ToolCallRecord(
            step=step, call_id=call_id, tool=name, arguments=arguments, status=status, **rest
        )
        self.records.append(record)
        if self.recorder:
            self.recorder.call_finished(record)
        return record

    def _ns_of(self, record: ToolCallRecord) -> float:
        """The simulated time a recorded call asked for (its arguments parsed again, defaults included)."""
        if record.tool not in self.tools:
            return 0.0
        return _asked_ns(record.tool, self.tools.get(record.tool).parse(record.arguments))

    def _count(self, answer: StructuredAnswer[Any]) -> None:
        self._tokens += sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in answer.responses)

    def _seconds_left(self) -> float:
        return self.budget.wall_time_s - (time.monotonic() - self._started)

    def _over_budget(self, started: float) -> str | None:
        if self._steps >= self.budget.max_steps:
            return f"the step budget ({self.budget.max_steps}) ran out"
        if self._tokens >= self.budget.max_tokens:
            return f"the token budget ({self.budget.max_tokens:,}) ran out"
        if time.monotonic() - started >= self.budget.wall_time_s:
            return f"the wall-time budget ({self.budget.wall_time_s:g} s) ran out"
        return None

    def _outcome(self, status: str, answer: str, reason: str | None, started: float) -> SessionOutcome:
        asked = " ".join(m["content"] for m in self.messages if m["role"] == "user" and m.get("content"))
        results = [record.result for record in self.records if record.result is not None]
        return SessionOutcome(
            status=status,  # type: ignore[arg-type]  # one of the literal's values, by the callers
            answer=answer,
            reason=reason,
            tool_calls=list(self.records),
            unattributed_numbers=unattributed_numbers(answer, results, asked),
            steps=self._steps,
            tokens=self._tokens,
            wall_time_s=round(time.monotonic() - started, 3),
        )


# Calls whose result changes with time: asking again is a new question, not a repeat.
_NOT_REPEATABLE = frozenset({"wait_for_task", "task_status", "list_tasks", "read_file", "list_files"})


def _outcome_of(record: ToolCallRecord) -> dict[str, Any]:
    return {"result": record.result, "error": record.error}


def _asked_ns(tool: str, parsed: BaseModel) -> float:
    length_ps = getattr(parsed, "length_ps", None) if tool == "simulate" else None
    return float(length_ps) / 1000.0 if length_ps else 0.0


def _as_dict(raw: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _as_text(raw: dict[str, Any] | str) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw)


def _call_in_words(tool: str, arguments: dict[str, Any]) -> str:
    """A decided call as the transcript keeps it: a sentence, not JSON, so that a small model's final
    answer, written after a run of these, is prose rather than one more JSON call."""
    return f"I call {tool}({_arguments_in_words(arguments)})."


def _arguments_in_words(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in arguments.items())


def _canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, default=str)


def _choice_prompt(tools: ToolRegistry) -> str:
    listing = "\n".join(f"- {tool.name}: {tool.description}" for tool in tools)
    return f"Tools:\n{listing}\n- {FINAL}: answer the question now.\nWhich one comes next? Answer in JSON."
