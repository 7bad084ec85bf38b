"""``sciagent ask``, ``chat`` and ``resume SESSION``: the agent loop over the catalogue, kept in the journal.

A session is a run of the workspace journal (``sciagent.agent.session``) with a directory of its own
(``sessions/<id>``): the file tools are confined to it, simulations write their runs there, and after
each answer it holds ``results.json`` (the whole outcome: answer, every tool call with its arguments
and result, unattributed numbers) and ``report.md`` (the same, for people).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.agent.loop import Agent, Approve, Budget, SessionOutcome
from sciagent.agent.session import JournalledModel, SessionJournal
from sciagent.atomic import write_atomic
from sciagent.config import Settings
from sciagent.llm.base import ChatModel
from sciagent.llm.profiles import make_model
from sciagent.science.spec import MDSpec
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolContext
from sciagent.tools.tasks import BoardTask, TaskBoard
from sciagent.workflows.dialects import recall_dialect, remember_dialect


@dataclass(frozen=True)
class AskOptions:
    """What ``sciagent ask``/``chat``/``resume`` were given besides the question.

    ``llm`` and ``site`` left None take the profile default (a new session) or what the session was
    started with (a resumed one).
    """

    llm: str | None = None
    site: str | None = None
    budget: Budget = field(default_factory=Budget)
    approve: Approve | None = None
    ask_user: Callable[[str], str] | None = None


@dataclass(frozen=True)
class AskResult:
    session_id: str
    session_dir: Path
    model_id: str
    question: str
    outcome: SessionOutcome

    @property
    def results_json(self) -> Path:
        return self.session_dir / "results.json"

    @property
    def report_md(self) -> Path:
        return self.session_dir / "report.md"


def ask(question: str, options: AskOptions, settings: Settings) -> AskResult:
    """Answer ``question`` with the catalogue's tools in a new session; its files are written either way.

    Raises:
        ConfigError, ModelError: the profile cannot be used (before any tool ran).
    """
    with open_session(settings, options, question=question) as session:
        return session.answer(session.agent.run(question))


def resume(session_id: str, options: AskOptions, settings: Settings) -> AskResult:
    """Go on with a session a kill or a crash stopped: no finished tool call runs again, its simulations
    are taken up where their checkpoints are.

    Raises:
        UserError: no such session, or the id is a study's.
    """
    with open_session(settings, options, session_id=session_id) as session:
        return session.answer(session.agent.resume(session.record.load()))


def tell(session_id: str, text: str, settings: Settings) -> str:
    """Leave ``text`` for a session to read before its next model call; returns the session's full id."""
    with Journal.in_workspace(settings.workspace.resolve()) as journal:
        session = SessionJournal.open(journal, session_id)
        session.tell(text)
        return session.session_id


@dataclass
class OpenSession:
    """A session being worked on: its journal record, its agent and where its files go."""

    record: SessionJournal
    agent: Agent
    session_dir: Path
    model: ChatModel
    question: str

    def answer(self, outcome: SessionOutcome) -> AskResult:
        """Close the turn: the journal's status, the dialect the endpoint answered in, the files."""
        self.record.finish(outcome)
        remember_dialect(self.record.journal, self.model)
        result = AskResult(
            self.record.session_id, self.session_dir, self.model.model_id, self.question, outcome
        )
        write_atomic(result.results_json, outcome.model_dump_json(indent=2))
        write_atomic(result.report_md, _report(result))
        return result

    def follow_up(self, text: str) -> AskResult:
        """The next question of a chat, in the same session."""
        self.record.journal.set_run_status(self.record.session_id, "running")
        self.question = text
        return self.answer(self.agent.follow_up(text))


@contextmanager
def open_session(
    settings: Settings, options: AskOptions, *, question: str | None = None, session_id: str | None = None
) -> Iterator[OpenSession]:
    """A new session (``question``) or a recorded one (``session_id``), with its tasks taken up again;
    the executors are shut down and an interrupted session is marked so on the way out."""
    workspace = settings.workspace.resolve()
    with Journal.in_workspace(workspace) as journal:
        if session_id is not None:
            record = SessionJournal.open(journal, session_id)
            config = record.config
            llm, site = options.llm or config.get("llm"), options.site or config.get("site", "local")
        else:
            llm, site = options.llm or settings.default_llm, options.site or "local"
        model = make_model(llm, settings.llm)  # before the session exists: a bad profile leaves nothing
        recall_dialect(journal, model)
        if session_id is None:
            record = SessionJournal.create(journal, question or "", {"llm": llm, "site": site})
        session_dir = workspace / "sessions" / record.session_id
        session_dir.mkdir(parents=True, exist_ok=True)
        board = TaskBoard(session_dir, settings.sites, default_site=site, on_submit=_journal_task(record))
        try:
            for task in journal.tasks(record.session_id):
                board.reattach(task.key, task.executor, MDSpec.model_validate(task.spec["spec"]))
            agent = Agent(
                model=JournalledModel(model, record),
                tools=builtin_tools(),
                context=ToolContext(session_dir=session_dir, tasks=board, ask_user=options.ask_user),
                budget=options.budget,
                approve=options.approve,
                recorder=record,
            )
            yield OpenSession(
                record, agent, session_dir, model, question or journal.get_run(record.session_id).goal
            )
        except KeyboardInterrupt:
            journal.set_run_status(record.session_id, "interrupted", "stopped by the user (Ctrl-C)")
            raise
        finally:
            board.close()


def _journal_task(record: SessionJournal) -> Callable[[BoardTask], None]:
    def submitted(task: BoardTask) -> None:
        spec = task.spec.model_dump(mode="json") if task.spec else {}
        row = record.journal.add_task(record.session_id, task.task_id, {"spec": spec}, task.site)
        record.journal.update_task(row, status="running", attempts=1)

    return submitted


def _report(result: AskResult) -> str:
    outcome = result.outcome
    lines = [
        f"# sciagent session {result.session_id}",
        "",
        f"**Question.** {result.question}",
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
