"""``sciagent ask | chat | tell`` and the session side of ``resume`` and ``show``: the open-ended agent."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer
from rich.padding import Padding

from sciagent.agent.journal import Journal
from sciagent.agent.steps import Budget, with_structure
from sciagent.cli.approval import terminal_or_none
from sciagent.cli.common import (
    EXIT_FAILED,
    UnsandboxedOption,
    duration_flag,
    exit_code_for,
    exits_on_error,
    fail,
    settings_for,
)
from sciagent.cli.runs import transcript_table
from sciagent.cli.signals import StopOnSigterm
from sciagent.config import Settings
from sciagent.console import err_console, out_console
from sciagent.errors import ConfigError, SciagentError, Terminated
from sciagent.llm.profiles import resolve_profile
from sciagent.progress import RunProgress
from sciagent.redaction import scrub
from sciagent.workflows.sessions.ask import AskOptions, AskResult, ask, open_session, resume, tell

LlmOption = Annotated[str | None, typer.Option("--llm", help="model profile (sciagent llm profiles)")]
SiteOption = Annotated[str | None, typer.Option("--site", help="where simulations run (default: here)")]
BudgetOption = Annotated[str, typer.Option("--budget", help="wall time for the session, e.g. 10m")]
MaxStepsOption = Annotated[int, typer.Option("--max-steps", min=1, help="model turns at most")]
ApproveAllOption = Annotated[
    bool,
    typer.Option(
        "--approve-all",
        help="run every call that would ask first without asking: batch jobs on your allocation, cancels "
        "and model-written code included",
    ),
]
WaitApprovalOption = Annotated[
    str | None,
    typer.Option(
        "--wait-for-approval",
        metavar="DURATION",
        help="without a terminal, wait this long for `sciagent approve` before refusing a call (e.g. 10m)",
    ),
]
WorkspaceOption = Annotated[Path | None, typer.Option("--workspace", help="where sessions live")]
JsonOption = Annotated[bool, typer.Option("--json", help="print exactly one JSON object at the end")]
StructureOption = Annotated[str | None, typer.Option("--structure", help="name, PDB id or file")]
McpOption = Annotated[
    list[str] | None,
    typer.Option("--mcp", help="add the tools of the [mcp.NAME] server in sciagent.toml (repeatable)"),
]


def ask_command(
    question: Annotated[str, typer.Argument(help="what you want to know or have done")],
    structure: StructureOption = None,
    llm: LlmOption = None,
    site: SiteOption = None,
    budget: BudgetOption = "30m",
    max_steps: MaxStepsOption = 20,
    approve_all: ApproveAllOption = False,
    wait_for_approval: WaitApprovalOption = None,
    mcp: McpOption = None,
    allow_unsandboxed_code: UnsandboxedOption = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question by letting the model call sciagent's tools; every number is checked."""
    settings = settings_for(workspace)
    approvals = Approvals(approve_all, wait_for_approval)
    progress = RunProgress(settings.workspace)
    ask_user = _terminal_or_none()
    options = _options(
        llm, site, budget, max_steps, approvals, ask_user, progress, mcp, allow_unsandboxed_code
    )
    _small_model_notice(llm, settings)
    _end(lambda opts: ask(with_structure(question, structure), opts, settings), options, as_json, progress)


def resume_session(
    session_id: str,
    llm: str | None,
    site: str | None,
    budget: str,
    max_steps: int,
    approvals: Approvals,
    allow_unsandboxed_code: bool,
    workspace: Path | None,
    as_json: bool,
    takeover: bool = False,
) -> None:
    """``sciagent resume`` of an ask/chat session (``app.resume`` decides which kind an id is)."""
    settings = settings_for(workspace)
    progress = RunProgress(settings.workspace)
    ask_user = _terminal_or_none()
    options = _options(
        llm, site, budget, max_steps, approvals, ask_user, progress, None, allow_unsandboxed_code
    )
    options = replace(options, takeover=takeover)
    _end(lambda opts: resume(session_id, opts, settings), options, as_json, progress)


def chat_command(
    structure: StructureOption = None,
    llm: LlmOption = None,
    site: SiteOption = None,
    budget: BudgetOption = "2h",
    max_steps: MaxStepsOption = 50,
    approve_all: ApproveAllOption = False,
    wait_for_approval: WaitApprovalOption = None,
    mcp: McpOption = None,
    allow_unsandboxed_code: UnsandboxedOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """A conversation with the agent: one question a line (an empty line or end of input ends it).

    The agent's own questions (ask_user) are answered on the next line, like any message.
    """
    settings = settings_for(workspace)
    prompt = "you> " if sys.stdin.isatty() else ""
    first = _read_line(prompt)
    if not first:
        return
    approvals = Approvals(approve_all, wait_for_approval)
    progress = RunProgress(settings.workspace)
    options = _options(
        llm, site, budget, max_steps, approvals, _answer_line, progress, mcp, allow_unsandboxed_code
    )
    _small_model_notice(llm, settings)
    with (
        exits_on_error(),
        open_session(settings, options, question=with_structure(first, structure)) as session,
    ):
        err_console.print(f"session {session.record.session_id}", highlight=False)
        progress.follow(session.record.session_id)
        with progress:  # a turn: the status is drawn while the agent works, not while you type
            result = session.answer(session.agent.run(session.question))
        while True:
            _print(result, as_json=False)
            text = _read_line(prompt)
            if not text:
                break
            with progress:
                result = session.follow_up(text)


def _small_model_notice(llm: str | None, settings: Settings) -> None:
    """One line on stderr when an in-process model answers (the offline default): a small model's
    answers are limited, and the user should know where better ones come from."""
    name = llm or settings.default_llm
    try:
        profile = resolve_profile(name, settings.llm)[1]
    except ConfigError:
        return  # the session itself reports an unknown profile
    if profile.kind == "embedded":
        err_console.print(
            f"note: a small offline model answers ({name}); for better answers, point --llm at a capable "
            "endpoint: `sciagent llm profiles` lists them (e.g. --llm alcf, or an [llm.NAME] you add)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _answer_line(question: str) -> str:
    """The agent's own question (ask_user) in a chat, answered on the next line."""
    return _read_line(f"agent asks: {question}\n> ")


def tell_command(
    session_id: Annotated[
        str, typer.Argument(help="the session id (or a unique prefix), see `sciagent runs`")
    ],
    message: Annotated[str, typer.Argument(help="what the session should read before its next step")],
    workspace: WorkspaceOption = None,
) -> None:
    """Send a message to a running session (from another terminal or a login node)."""
    with exits_on_error():
        full_id = tell(session_id, message, settings_for(workspace))
    out_console.print(f"told session {full_id}; it reads the message before its next model call")


def show_session(session_id: str, settings: Settings) -> None:
    """``sciagent show`` of a session: its transcript, and its sub-agents' nested under it."""
    with Journal.in_workspace(settings.workspace.resolve()) as journal, exits_on_error():
        out_console.print(transcript_table(journal, session_id))
        _show_sub_agents(journal, journal.get_run(session_id).id, depth=1)


def _show_sub_agents(journal: Journal, session_id: str, depth: int) -> None:
    """Each sub-agent's transcript under its parent's, indented by its depth."""
    for child in journal.child_runs(session_id):
        name = (child.config.get("agent") or {}).get("name", "?")
        heading = f"sub-agent {name} ({child.id}), called by {session_id}"
        out_console.print(Padding(heading, (1, 0, 0, 4 * depth)))
        out_console.print(Padding(transcript_table(journal, child.id), (0, 0, 0, 4 * depth)))
        _show_sub_agents(journal, child.id, depth + 1)


def _options(
    llm: str | None,
    site: str | None,
    budget: str,
    max_steps: int,
    approvals: Approvals,
    ask_user: Callable[[str], str] | None,
    progress: RunProgress,
    mcp: list[str] | None = None,
    allow_unsandboxed: bool = False,
) -> AskOptions:
    """The session's options; its prompts (approvals, the agent's questions) pause ``progress``."""
    return AskOptions(
        llm=llm,
        site=site,
        budget=Budget(max_steps=max_steps, wall_time_s=duration_flag("--budget", budget)),
        approve_all=approvals.approve_all,
        terminal=progress.pausing(terminal_or_none()),
        wait_for_approval_s=duration_flag("--wait-for-approval", approvals.wait) if approvals.wait else 0.0,
        ask_user=progress.asking(ask_user),
        mcp=tuple(mcp or ()),
        allow_unsandboxed_code=allow_unsandboxed,
    )


def _end(
    work: Callable[[AskOptions], AskResult], options: AskOptions, as_json: bool, progress: RunProgress
) -> None:
    """Run the session, its progress on stderr meanwhile; 0 when it answered, 1 when it did not (budget,
    model failure) or was stopped, 2 for bad input. SIGTERM stops it at once (nothing in a session waits
    for a stop request), marked ``interrupted`` with the reason, and the line printed names the command
    that resumes it."""
    opened: list[str] = []

    def started(session_id: str) -> None:
        opened.append(session_id)
        progress.follow(session_id)

    try:
        with StopOnSigterm(), progress:
            result = work(replace(options, on_session=started))
    except SciagentError as exc:
        if as_json:
            typer.echo(json.dumps({"status": "failed", "error": str(exc), "exit_code": exit_code_for(exc)}))
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt as exc:
        reason = exc.reason if isinstance(exc, Terminated) else "interrupted"
        if not opened:
            fail(f"{reason}: no session was started", EXIT_FAILED)
        fail(f"{reason}: `sciagent resume {opened[0]}` continues it", EXIT_FAILED)
    _print(result, as_json)
    if result.outcome.status != "answered":
        fail(f"no answer: {result.outcome.reason} (see {result.report_md})", EXIT_FAILED)


@dataclass(frozen=True)
class Approvals:
    """What the command line said about approvals: ``--approve-all``, ``--wait-for-approval``."""

    approve_all: bool = False
    wait: str | None = None


def _terminal_or_none() -> Callable[[str], str] | None:
    """Questions from the agent go to the person at the terminal; without one, no one can answer."""
    return _question_on_terminal if sys.stdin.isatty() else None


def _question_on_terminal(question: str) -> str:
    return typer.prompt(f"the agent asks: {question}", err=True)


def _read_line(prompt: str) -> str:
    """One line of input (the prompt on stderr); empty at the end of input."""
    if prompt:
        err_console.print(prompt, end="", highlight=False, markup=False)
    line = sys.stdin.readline()
    return line.strip()


def _print(result: AskResult, as_json: bool) -> None:
    outcome = result.outcome
    if as_json:
        summary = {
            "session_id": result.session_id,
            "status": outcome.status,
            "answer": outcome.answer,
            "reason": outcome.reason,
            "tool_calls": [call.model_dump(mode="json") for call in outcome.tool_calls],
            "unattributed_numbers": outcome.unattributed_numbers,
            "steps": outcome.steps,
            "tokens": outcome.tokens,
            "results_json": str(result.results_json),
            "report_md": str(result.report_md),
            "report_html": str(result.report_html),
        }
        typer.echo(scrub(json.dumps(summary)))  # a model may echo a key: never printed
        return
    answer = scrub(outcome.answer or f"(no answer: {outcome.reason})")
    out_console.print(answer, highlight=False, markup=False, soft_wrap=True)
    if outcome.unattributed_numbers:
        out_console.print(
            f"unattributed numbers (in no tool result): {', '.join(outcome.unattributed_numbers)}",
            highlight=False,
            markup=False,
        )
    out_console.print(f"session {result.session_id}: {result.session_dir}", highlight=False, markup=False,
                      soft_wrap=True)  # fmt: skip
