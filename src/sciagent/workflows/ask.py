"""``sciagent ask``: one question, the agent loop over the catalogue, and the session's files.

A session gets a directory of its own in the workspace (``sessions/<id>``): the file tools are
confined to it, simulations write their runs there, and it ends with ``results.json`` (the whole
outcome: answer, every tool call with its arguments and result, unattributed numbers) and
``report.md`` (the same, for people).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sciagent.agent.loop import Agent, Approve, Budget, SessionOutcome
from sciagent.atomic import write_atomic
from sciagent.config import Settings
from sciagent.llm.profiles import make_model
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolContext
from sciagent.tools.tasks import TaskBoard


@dataclass(frozen=True)
class AskOptions:
    """What ``sciagent ask`` was given besides the question."""

    llm: str | None = None
    site: str = "local"
    budget: Budget = field(default_factory=Budget)
    approve: Approve | None = None
    ask_user: Callable[[str], str] | None = None


@dataclass(frozen=True)
class AskResult:
    session_id: str
    session_dir: Path
    model_id: str
    outcome: SessionOutcome

    @property
    def results_json(self) -> Path:
        return self.session_dir / "results.json"

    @property
    def report_md(self) -> Path:
        return self.session_dir / "report.md"


def ask(question: str, options: AskOptions, settings: Settings) -> AskResult:
    """Answer ``question`` with the catalogue's tools; the session's files are written either way.

    Raises:
        ConfigError, ModelError: the profile cannot be used (before any tool ran).
    """
    session_id = time.strftime("ask-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    session_dir = settings.workspace.resolve() / "sessions" / session_id
    session_dir.mkdir(parents=True)
    model = make_model(options.llm or settings.default_llm, settings.llm)
    board = TaskBoard(session_dir, settings.sites, default_site=options.site)
    try:
        agent = Agent(
            model=model,
            tools=builtin_tools(),
            context=ToolContext(session_dir=session_dir, tasks=board, ask_user=options.ask_user),
            budget=options.budget,
            approve=options.approve,
        )
        outcome = agent.run(question)
    finally:
        board.close()
    result = AskResult(session_id, session_dir, model.model_id, outcome)
    write_atomic(result.results_json, outcome.model_dump_json(indent=2))
    write_atomic(result.report_md, _report(question, result))
    return result


def _report(question: str, result: AskResult) -> str:
    outcome = result.outcome
    lines = [
        f"# sciagent session {result.session_id}",
        "",
        f"**Question.** {question}",
        "",
        f"**Answer** ({outcome.status}; model {result.model_id}). {outcome.answer or outcome.reason or ''}",
        "",
    ]
    if outcome.unattributed_numbers:
        listed = ", ".join(outcome.unattributed_numbers)
        lines += [f"**Unattributed numbers** (in no tool result of this session): {listed}", ""]
    lines += ["## Tool calls", "", "| step | tool | arguments | status |", "|---|---|---|---|"]
    for call in outcome.tool_calls:
        arguments = ", ".join(f"{k}={v}" for k, v in call.arguments.items())
        status = call.status if call.error is None else f"{call.status}: {call.error[:120]}"
        lines.append(f"| {call.step} | {call.tool} | {arguments} | {status} |")
    lines += ["", f"{outcome.steps} steps, {outcome.tokens:,} tokens, {outcome.wall_time_s:.1f} s.", ""]
    return "\n".join(lines)
