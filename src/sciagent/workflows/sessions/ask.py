"""``sciagent ask``, ``chat`` and ``resume SESSION``: the agent loop over the catalogue, kept in the journal.

A session is a run of the workspace journal (``sciagent.agent.session``) with a directory of its own
(``sessions/<id>``): the file tools are confined to it, simulations write their runs there, and after
each answer it holds ``results.json`` (the whole outcome: answer, every tool call with its arguments
and result, unattributed numbers) and ``report.md`` / ``report.html`` (the same, for people).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sciagent.agent.approvals import ApprovalDesk, Terminal
from sciagent.agent.journal import Journal
from sciagent.agent.loop import Agent
from sciagent.agent.ownership import owning
from sciagent.agent.session import JournalledModel, SessionJournal, record_task_states
from sciagent.agent.steps import Budget, SessionOutcome
from sciagent.config import Settings
from sciagent.errors import Terminated, UserError
from sciagent.llm.base import ChatModel
from sciagent.llm.profiles import make_model
from sciagent.mcp.client import check_names
from sciagent.sandbox import Sandbox
from sciagent.science.spec import MDSpec
from sciagent.tools.approval import ApprovalPolicy
from sciagent.tools.codegen import CODEGEN_TOOLS
from sciagent.tools.registry import Tool, ToolContext, ToolRegistry
from sciagent.tools.skills import SkillLibrary
from sciagent.tools.tasks import BoardTask, TaskBoard
from sciagent.workflows.catalogue import add_skills, full_catalogue
from sciagent.workflows.dialects import recall_dialect, remember_dialect
from sciagent.workflows.sessions.mcp_tools import session_mcp_tools
from sciagent.workflows.sessions.report import write_session_report
from sciagent.workflows.sessions.subagent import SubAgents


@dataclass(frozen=True)
class AskOptions:
    """What ``sciagent ask``/``chat``/``resume`` were given besides the question.

    ``llm`` and ``site`` left None take the profile default (a new session) or what the session was
    started with (a resumed one).
    """

    llm: str | None = None
    site: str | None = None
    budget: Budget = field(default_factory=Budget)
    approve_all: bool = False  # every call that would ask for approval runs (--approve-all)
    terminal: Terminal | None = None  # who answers approval requests here; None: no one at a terminal
    wait_for_approval_s: float = 0.0  # without a terminal, how long to wait for `sciagent approve`
    ask_user: Callable[[str], str] | None = None
    mcp: tuple[str, ...] = ()  # [mcp.NAME] servers whose tools join the catalogue (NAME.tool)
    allow_unsandboxed_code: bool = False  # run model-written code even where bubblewrap is missing
    takeover: bool = False  # resume though the owner recorded on another host never released it
    on_session: Callable[[str], None] | None = None  # told the session's id once it exists (to name it)
    queued_id: str | None = None  # a new session queued by `sciagent submit --ask`: started under this id


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

    @property
    def report_html(self) -> Path:
        return self.session_dir / "report.html"


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
    provenance: dict[str, Any]

    def answer(self, outcome: SessionOutcome) -> AskResult:
        """Close the turn: the journal's status, the dialect the endpoint answered in, the reports."""
        self.record.finish(outcome)
        remember_dialect(self.record.journal, self.model)
        session_id, model_id = self.record.session_id, self.model.model_id
        write_session_report(
            self.session_dir, session_id=session_id, question=self.question, model_id=model_id,
            outcome=outcome, provenance=self.provenance,
        )  # fmt: skip
        return AskResult(session_id, self.session_dir, model_id, self.question, outcome)

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
    the executors are shut down and an interrupted session is marked so on the way out. This process
    owns the session meanwhile (``sciagent.agent.ownership``): a second one is refused before anything.
    """
    workspace = settings.workspace.resolve()
    with Journal.in_workspace(workspace) as journal, ExitStack() as owned:
        if session_id is not None:
            record = SessionJournal.open(journal, session_id)
            config = record.config
            if config.get("parent"):
                raise UserError(
                    f"{record.session_id} is a sub-agent of session {config['parent']}: resume that "
                    "session, which takes its sub-agents up again"
                )
            owned.enter_context(owning(journal, record.session_id, what="session", takeover=options.takeover))
            llm, site = options.llm or config.get("llm"), options.site or config.get("site", "local")
            servers = options.mcp or tuple(config.get("mcp", ()))  # the session's own, unless told others
        else:
            llm, site = options.llm or settings.default_llm, options.site or "local"
            servers = options.mcp
        # Before the session exists: a bad profile leaves nothing.
        model = make_model(llm, settings.llm, workspace=workspace)
        check_names(servers, settings.mcp)  # and so does an unknown --mcp
        recall_dialect(journal, model)
        if session_id is None:
            config = {"llm": llm, "site": site, "mcp": list(servers)}
            if options.queued_id is not None:
                record = _take_queued(journal, options.queued_id, config)
            else:
                record = SessionJournal.create(journal, question or "", config)
            owned.enter_context(owning(journal, record.session_id, what="session"))
        if options.on_session is not None:
            options.on_session(record.session_id)
        session_dir = workspace / "sessions" / record.session_id
        session_dir.mkdir(parents=True, exist_ok=True)
        board = TaskBoard(
            session_dir, settings.sites, default_site=site, on_submit=journal_task(record),
            on_poll=record.on_poll,
        )  # fmt: skip
        try:
            for task in journal.tasks(record.session_id):
                board.reattach(task.key, task.executor, MDSpec.model_validate(task.spec["spec"]))
            # The session's own profile is the one a workflow tool (a whole study) asks too.
            own = settings.model_copy(update={"default_llm": llm})
            skills = SkillLibrary.of_workspace(workspace)
            with session_mcp_tools(settings, servers, record) as external:
                catalogue = session_catalogue(skills, external)
                context = ToolContext(
                    session_dir,
                    tasks=board,
                    ask_user=options.ask_user,
                    settings=own,
                    sandbox=Sandbox(allow_unsandboxed=options.allow_unsandboxed_code),
                    skills=skills,
                    catalogue=catalogue,
                    model_id=model.model_id,
                    session_id=record.session_id,
                )
                agent = Agent(
                    model=JournalledModel(model, record),
                    tools=catalogue,
                    context=context,
                    budget=options.budget,
                    policy=ApprovalPolicy.from_settings(settings, approve_all=options.approve_all),
                    answer=ApprovalDesk(
                        journal, record.session_id, options.terminal, options.wait_for_approval_s
                    ),
                    recorder=record,
                )
                catalogue.add(SubAgents(record, model, skills, parent=lambda: agent).tool())
                provenance = {"profile": llm, "site": site, "budget": asdict(options.budget)}
                asked = question or journal.get_run(record.session_id).goal
                yield OpenSession(record, agent, session_dir, model, asked, provenance)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (a batch job's limit) with its reason
            why = exc.reason if isinstance(exc, Terminated) else "stopped by the user (Ctrl-C)"
            journal.set_run_status(record.session_id, "interrupted", why)
            raise
        except Exception as exc:  # whatever ended it, the session is not left `running`
            journal.set_run_status(record.session_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            try:
                record_task_states(journal, record.session_id, board)
            finally:
                board.close()


def _take_queued(journal: Journal, session_id: str, config: dict[str, object]) -> SessionJournal:
    record = SessionJournal.open(journal, session_id)
    run = journal.get_run(record.session_id)
    if run.status != "queued" or journal.steps(run.id):
        raise UserError(f"session {run.id} is {run.status}: `sciagent resume {run.id}` continues it")
    journal.update_run_config(run.id, {**run.config, **config})
    journal.set_run_status(run.id, "running")
    return record


def session_catalogue(skills: SkillLibrary, external: list[Tool]) -> ToolRegistry:
    """A session's tools: the catalogue, ``create_tool``, the external MCP servers' tools and the
    workspace's skills."""
    return add_skills(ToolRegistry.of([*full_catalogue(), *CODEGEN_TOOLS, *external]), skills)


def journal_task(record: SessionJournal) -> Callable[[BoardTask], None]:
    def submitted(task: BoardTask) -> None:
        spec = task.spec.model_dump(mode="json") if task.spec else {}
        row = record.journal.add_task(record.session_id, task.task_id, {"spec": spec}, task.site)
        record.journal.update_task(row, status="running", attempts=1)

    return submitted
