"""What ``sciagent mcp serve`` serves: the whole catalogue over one durable session of the workspace.

Why one journal run (kind ``mcp``) per workspace, continued by every server process, rather than one
per process: an MCP client often starts a server per conversation (stdio) or restarts it, while a
simulation outlives both. A task id handed out by one process (``sim-3``) must name the same
simulation for the next. So each process opens the workspace's ``mcp`` run, takes up its journalled
simulations as ``sciagent resume`` does (a finished one reports again, an unfinished one continues
from its checkpoint) and numbers new ones after them; ``sciagent show RUN`` lists them all. Two
processes at once would number from the same point, so one server holds the workspace at a time (a
lock file; a second one is refused with a one-line error).

Every served call is a ``tool_call`` step of the run, and on the way out each task's state is written
to its journal row, so ``sciagent show`` says what finished while no client was looking.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp.server import Server

from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import one_line
from sciagent.agent.session import MCP_KIND, SessionJournal, run_kind
from sciagent.config import Settings
from sciagent.errors import UserError
from sciagent.mcp.server import ServedCall, catalogue_server
from sciagent.sandbox import Sandbox
from sciagent.science.spec import MDSpec
from sciagent.tools.registry import ToolContext
from sciagent.tools.skills import SkillLibrary
from sciagent.tools.tasks import TaskBoard
from sciagent.workflows.ask import journal_task
from sciagent.workflows.catalogue import add_skills, full_catalogue

MCP_DIR = "mcp"  # in the workspace: the lock file and the run's directory (its simulations' runs/)
_RUNS_SCANNED = 100_000  # how far back the workspace's ``mcp`` run is looked for


@contextmanager
def served_catalogue(
    settings: Settings, site: str = "local", allow_unsandboxed_code: bool = False
) -> Iterator[tuple[Server, str]]:
    """The MCP server for ``settings.workspace`` and the id of the run it continues.

    Raises:
        UserError: another server holds the workspace.
    """
    workspace = settings.workspace.resolve()
    with _held(workspace / MCP_DIR), Journal.in_workspace(workspace) as journal:
        run_id = _mcp_run(journal)
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
            sandbox = Sandbox(allow_unsandboxed=allow_unsandboxed_code)
            context = ToolContext(session_dir, tasks=board, settings=settings, sandbox=sandbox, skills=skills)
            yield catalogue_server(catalogue, context, on_call=_journal_call(journal, run_id)), run_id
        finally:
            try:
                _journal_states(journal, run_id, board)
            finally:
                board.close()


def _mcp_run(journal: Journal) -> str:
    """The workspace's ``mcp`` run, marked running again, or a new one."""
    for run in journal.list_runs(limit=_RUNS_SCANNED):
        if run_kind(run.config) == MCP_KIND:
            journal.set_run_status(run.id, "running")
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
    unfinished = 0
    for task in board.tasks():
        state = board.state(task)
        unfinished += not state.done
        row = journal.find_task(run_id, task.task_id)
        if row is not None and state.done:
            journal.update_task(row.id, status=state.value)
    if unfinished:
        note = f"the server stopped with {unfinished} simulation(s) unfinished: the next one continues them"
        journal.set_run_status(run_id, "interrupted", note)
    else:
        journal.set_run_status(run_id, "completed")


@contextmanager
def _held(directory: Path) -> Iterator[None]:
    """This process alone serves the workspace while the block runs (an exclusive lock on a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "serve.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise UserError(
                f"{holder} is serving this workspace already ({directory.parent}): use it, stop it, or "
                "serve another --workspace"
            ) from None
        lock.truncate(0)
        lock.write(f"sciagent mcp serve (pid {os.getpid()})")
        lock.flush()
        yield
