"""What ``sciagent mcp serve`` serves: the whole catalogue over one durable session of the workspace.

Why one journal run (kind ``mcp``) per workspace, continued by every server process, rather than one
per process: an MCP client often starts a server per conversation (stdio) or restarts it, while a
simulation outlives both. A task id handed out by one process (``sim-3``) must name the same
simulation for the next. So each process opens the workspace's ``mcp`` run, takes up its journalled
simulations as ``sciagent resume`` does (a finished one reports again, an unfinished one continues
from its checkpoint) and numbers new ones after them; ``sciagent show RUN`` lists them all. Two
processes at once would number from the same point, so one server holds the workspace at a time: it
owns the ``mcp`` run as ``sciagent resume`` owns a session (``sciagent.agent.ownership``), and a second
server is refused with a one-line error naming the first.

Every served call is a ``tool_call`` step of the run, and on the way out each task's state is written
to its journal row, so ``sciagent show`` says what finished while no client was looking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from mcp.server import Server

from sciagent.agent.approvals import ApprovalDesk
from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import one_line
from sciagent.agent.ownership import RunOwned, owning
from sciagent.agent.session import MCP_KIND, SessionJournal, record_task_states, run_kind
from sciagent.config import Settings
from sciagent.errors import UserError
from sciagent.mcp.server import ServedApprovals, ServedCall, catalogue_server
from sciagent.sandbox import Sandbox
from sciagent.science.spec import MDSpec
from sciagent.tools.approval import ApprovalPolicy
from sciagent.tools.registry import ToolContext
from sciagent.tools.skills import SkillLibrary
from sciagent.tools.tasks import TaskBoard
from sciagent.workflows.catalogue import add_skills, full_catalogue
from sciagent.workflows.sessions.ask import journal_task

MCP_DIR = "mcp"  # in the workspace: the run's directory (its simulations' runs/)
_RUNS_SCANNED = 100_000  # how far back the workspace's ``mcp`` run is looked for


@dataclass(frozen=True)
class ServeOptions:
    """What ``sciagent mcp serve`` was told besides the workspace.

    ``allowed_tools`` are served even if they spend, destroy or run model-written code, and their calls
    that would ask are approved (the operator approved them by naming them); ``wait_for_approval_s`` is
    how long any other call that must ask waits for ``sciagent approve`` before it is refused.
    """

    site: str = "local"
    allow_unsandboxed_code: bool = False
    allowed_tools: tuple[str, ...] = ()
    wait_for_approval_s: float = 0.0
    takeover: bool = False  # serve though the server recorded on another host never released the run


@contextmanager
def served_catalogue(settings: Settings, options: ServeOptions | None = None) -> Iterator[tuple[Server, str]]:
    """The MCP server for ``settings.workspace`` and the id of the run it continues.

    Raises:
        UserError: another server holds the workspace, or an allowed tool does not exist.
    """
    options = options or ServeOptions()
    site = options.site
    workspace = settings.workspace.resolve()
    with Journal.in_workspace(workspace) as journal, ExitStack() as owned:
        run_id = _mcp_run(journal)
        try:
            owned.enter_context(owning(journal, run_id, what="MCP run", takeover=options.takeover))
        except RunOwned as refused:
            if refused.owner is not None and not refused.owner.on_this_host:
                raise  # its own line names the host and --takeover
            holder = refused.owner.describe() if refused.owner else "another process"
            raise UserError(
                f"{holder} is serving this workspace already ({workspace}): use it, stop it, or serve "
                "another --workspace"
            ) from None
        journal.set_run_status(run_id, "running")
        record = SessionJournal(journal, run_id)  # its task rows are a session's: same journalling
        session_dir = workspace / MCP_DIR / run_id
        session_dir.mkdir(parents=True, exist_ok=True)
        board = TaskBoard(session_dir, settings.sites, default_site=site, on_submit=journal_task(record))
        try:
            for task in journal.tasks(run_id):
                board.reattach(task.key, task.executor, MDSpec.model_validate(task.spec["spec"]))
            # Skills (model-written tools that passed their tests) are served like built-ins, and run
            # in the sandbox like everywhere else.
            skills = SkillLibrary.of_workspace(workspace)
            catalogue = add_skills(full_catalogue(), skills)
            unknown = [name for name in options.allowed_tools if name not in catalogue]
            if unknown:
                raise UserError(f"--allow-tool {', '.join(unknown)}: no such tool (see `sciagent tools`)")
            sandbox = Sandbox(allow_unsandboxed=options.allow_unsandboxed_code)
            context = ToolContext(session_dir, tasks=board, settings=settings, sandbox=sandbox, skills=skills)
            approvals = ServedApprovals(
                policy=ApprovalPolicy.from_settings(settings),
                answer=ApprovalDesk(journal, run_id, wait_s=options.wait_for_approval_s),
                preapproved=frozenset(options.allowed_tools),
            )
            on_call = _journal_call(journal, run_id)
            yield catalogue_server(catalogue, context, on_call=on_call, approvals=approvals), run_id
        finally:
            try:
                _journal_states(journal, run_id, board)
            finally:
                board.close()


def _mcp_run(journal: Journal) -> str:
    """The workspace's ``mcp`` run, or a new one: looked up and made in one transaction, so that two
    servers starting at once find the same run (and one of them is refused by its owner)."""
    with journal.transaction():
        for run in journal.list_runs(limit=_RUNS_SCANNED):
            if run_kind(run.config) == MCP_KIND:
                return run.id
        return journal.create_run("tools served over MCP (sciagent mcp serve)", {"kind": MCP_KIND})


def _journal_call(journal: Journal, run_id: str) -> Callable[[ServedCall], None]:
    def record(call: ServedCall) -> None:
        summary = f"{call.tool}: {call.status}" + (f" · {call.error}" if call.error else "")
        data = {"tool": call.tool, "arguments": call.arguments, "status": call.status}
        data |= {"result": call.result} if call.error is None else {"error": call.error}
        journal.record_step(run_id, "tool_call", one_line(summary), data)

    return record


def _journal_states(journal: Journal, run_id: str, board: TaskBoard) -> None:
    """Each task's state into its journal row, and the run's: interrupted if a simulation is unfinished."""
    unfinished = record_task_states(journal, run_id, board)
    if unfinished:
        note = f"the server stopped with {unfinished} simulation(s) unfinished: the next one continues them"
        journal.set_run_status(run_id, "interrupted", note)
    else:
        journal.set_run_status(run_id, "completed")
