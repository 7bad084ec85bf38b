"""``create_agent``: the model defines a sub-agent (instructions, some of its own tools, a budget) and
hands it a sub-task; the answer comes back as the call's result, with the sub-agent's tool results, so
the parent's number attribution reaches the numbers it computed.

A sub-agent is a session of its own in the journal (``config.parent`` is the parent's id,
``config.parent_call`` the call that made it): journalled step by step, shown nested under its parent
by ``sciagent show``, and resumed, not restarted, when a resumed parent runs the same call again. It
shares its parent's session directory and task board (the files and simulations it makes are the
parent's to use). It never gets more than its parent has: its tools are a subset of the parent's
(never ``create_agent`` itself), its budget the smaller of what was asked and what the parent has left,
and what it spends is charged to the parent (the result's ``usage``). A definition that answered can be
saved beside the skills (``save``) and used again by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from sciagent.agent.loop import Agent
from sciagent.agent.session import JournalledModel, SessionJournal
from sciagent.agent.steps import Budget, Resumption, SessionOutcome
from sciagent.llm.base import ChatModel
from sciagent.tools.registry import (
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolFailed,
    ToolRegistry,
    define_tool,
)
from sciagent.tools.skills import SKILL_NAME, AgentDefinition, SkillLibrary

CREATE_AGENT = "create_agent"
_NEVER_DELEGATED = frozenset({CREATE_AGENT})  # a sub-agent does not make sub-agents


class CreateAgentArguments(BaseModel):
    name: str = Field(description="the sub-agent's name, lower_snake_case (a saved one is reused by name)")
    task: str = Field(min_length=5, description="the sub-task it is to answer, in full")
    instructions: str | None = Field(
        default=None, description="what it is for and how to work; may be left out for a saved agent"
    )
    tools: list[str] | None = Field(
        default=None, description="the names of the tools it may call (a subset of yours)"
    )
    max_steps: int = Field(default=10, ge=1, le=100)
    max_tokens: int = Field(default=50_000, ge=1000)
    save: bool = Field(default=False, description="keep the definition for later sessions if it answers")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "name": "structure_sizer",
                    "task": "How many atoms and residues does villin have?",
                    "instructions": "Fetch the structure and report its size.",
                    "tools": ["fetch_structure"],
                }
            ]
        }
    }


class SubAgentCall(BaseModel):
    tool: str
    arguments: dict[str, Any]
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


class SubAgentResult(BaseModel):
    """A sub-agent's answer, its tool results and what it spent (charged to the parent)."""

    agent: str
    session_id: str
    status: str
    answer: str
    reason: str | None = None
    tool_results: list[SubAgentCall]
    usage: dict[str, float] = Field(description="steps, tokens and simulated_ns the sub-agent spent")
    saved: bool = False


@dataclass
class SubAgents:
    """What ``create_agent`` needs of its parent session: the journal, the model, the parent agent."""

    record: SessionJournal
    model: ChatModel
    skills: SkillLibrary
    parent: Callable[[], Agent]  # the parent agent, made after this tool is

    def tool(self) -> Tool:
        return define_tool(self.create_agent, effects={"computes"}, name=CREATE_AGENT, cost="minutes")

    def create_agent(self, arguments: CreateAgentArguments, context: ToolContext) -> SubAgentResult:
        """Hand a sub-task to a sub-agent you define: its instructions, the tools it may use (some of
        yours) and its budget. Its answer and its tool results come back to you. Use it for a
        self-contained part of the question."""
        parent = self.parent()
        definition = self._definition(arguments, parent.tools)
        budget = _smaller(Budget(definition.max_steps, definition.max_tokens), parent.left())
        if budget.max_steps < 1 or budget.max_tokens < 1:
            raise ToolFailed(
                "create_agent: the session's budget is spent; answer with what you have", "budget"
            )
        journal = self.record.journal
        existing = next(
            (
                run
                for run in journal.child_runs(self.record.session_id)
                if run.config.get("parent_call") == context.call_id
            ),
            None,
        )
        if existing is not None:
            sub = SessionJournal.open(journal, existing.id)
        else:
            config = {
                **self.record.config,
                "parent": self.record.session_id,
                "parent_call": context.call_id,
                "agent": definition.model_dump(),
            }
            sub = SessionJournal.create(journal, arguments.task, config)
        agent = Agent(
            model=JournalledModel(self.model, sub),
            tools=parent.tools.subset(definition.tools),
            context=parent.context,
            budget=budget,
            policy=parent.policy,
            answer=parent.answer,
            recorder=sub,
            instructions=f"You are the sub-agent {definition.name}. {definition.instructions}",
        )
        if existing is not None and existing.status in ("completed", "failed"):
            state = sub.load()
            agent.restore(state)
            outcome = _recorded_outcome(sub, state)
        else:
            outcome = agent.resume(sub.load()) if existing is not None else agent.run(arguments.task)
            sub.finish(outcome)
        saved = arguments.save and outcome.status == "answered"
        if saved:
            self.skills.save_agent(definition)
        calls = [SubAgentCall.model_validate(record.model_dump()) for record in outcome.tool_calls]
        return SubAgentResult(
            agent=definition.name,
            session_id=sub.session_id,
            status=outcome.status,
            answer=outcome.answer,
            reason=outcome.reason,
            tool_results=calls,
            usage=agent.usage(),
            saved=saved,
        )

    def _definition(self, arguments: CreateAgentArguments, tools: ToolRegistry) -> AgentDefinition:
        """The definition asked for, completed from a saved one of that name; its tools checked."""
        if not SKILL_NAME.match(arguments.name):
            raise ToolArgumentsError(f"create_agent: name {arguments.name!r} must be lower_snake_case")
        saved = self.skills.agent(arguments.name)
        instructions = arguments.instructions or (saved.instructions if saved else None)
        names = arguments.tools if arguments.tools is not None else (saved.tools if saved else None)
        if not instructions or not names:
            raise ToolArgumentsError(
                f"create_agent: no saved agent {arguments.name}: give its instructions and tools"
            )
        refused = sorted(set(names) & _NEVER_DELEGATED)
        unknown = sorted(name for name in names if name not in tools)
        if refused or unknown:
            problem = f"{', '.join(unknown)} are not tools of this session" if unknown else ""
            if refused:
                problem = (problem + "; " if problem else "") + "a sub-agent cannot make sub-agents"
            raise ToolArgumentsError(f"create_agent: {problem}")
        return AgentDefinition(
            name=arguments.name,
            instructions=instructions,
            tools=list(dict.fromkeys(names)),
            max_steps=arguments.max_steps,
            max_tokens=arguments.max_tokens,
        )


def _smaller(asked: Budget, left: Budget) -> Budget:
    return Budget(
        max_steps=min(asked.max_steps, left.max_steps),
        max_tokens=min(asked.max_tokens, left.max_tokens),
        wall_time_s=min(asked.wall_time_s, left.wall_time_s),
        max_simulated_ns=min(asked.max_simulated_ns, left.max_simulated_ns),
    )


def _recorded_outcome(sub: SessionJournal, state: Resumption) -> SessionOutcome:
    """A finished sub-agent's outcome, rebuilt from its journal (a resumed parent asks again)."""
    run = sub.journal.get_run(sub.session_id)
    said = [m for m in state.messages if m["role"] == "assistant" and not m.get("tool_calls")]
    answered = run.status == "completed"
    return SessionOutcome(
        status="answered" if answered else "failed",
        answer=(said[-1].get("content") or "") if said and answered else "",
        reason=run.error,
        tool_calls=state.records,
        steps=state.steps,
        tokens=state.tokens,
    )
