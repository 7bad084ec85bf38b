"""Approvals at a terminal: the one prompt ``run`` and ``ask`` share, and ``sciagent approve RUN``.

The prompt shows what a call would do (the job script, the generated code) and takes only ``y`` or
``yes``: Enter, end of input and anything else decline. While it waits it keeps looking at the
journal, so an answer given from another terminal (``sciagent approve``) ends it.
"""

from __future__ import annotations

import select
import sys
from pathlib import Path
from typing import Annotated

import typer

from sciagent.agent.approvals import answer_request, answerer_here, pending_requests
from sciagent.agent.journal import Journal
from sciagent.cli.common import exits_on_error, fail, settings_for
from sciagent.console import err_console, out_console
from sciagent.tools.approval import ApprovalRequest, Verdict

PROMPT = "approve? [y/N] "
DETAIL_LINES = 60  # of a job script or generated code; the rest is in the journal (sciagent approve)


class TerminalApprover:
    """The ``Terminal`` of an approval desk: this process's stdin and stderr."""

    def show(self, request_id: str, request: ApprovalRequest) -> None:
        _print_request(request_id, request.to_json())
        err_console.print(PROMPT, end="", highlight=False, markup=False)

    def poll(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
        return sys.stdin.readline() if ready else None

    def withdraw(self, verdict: Verdict) -> None:
        word = "approved" if verdict.approved else "declined"
        err_console.print(f"\n(answered elsewhere: {word} by {verdict.by})", highlight=False, markup=False)


def terminal_or_none() -> TerminalApprover | None:
    """A terminal approver when stdin is a terminal; None in a batch job, under nohup, in a pipe."""
    return TerminalApprover() if sys.stdin.isatty() else None


def confirm_on_terminal(question: str) -> bool:
    """The same prompt for a question that is not a tool call (a study's batch of simulations)."""
    if question:
        err_console.print(question, highlight=False, markup=False, soft_wrap=True)
    err_console.print(PROMPT, end="", highlight=False, markup=False)
    return sys.stdin.readline().strip().lower() in {"y", "yes"}


def approve_command(
    run_id: Annotated[str, typer.Argument(help="the run or session waiting for an approval")],
    request_id: Annotated[str | None, typer.Argument(help="which request (default: the only one)")] = None,
    deny: Annotated[bool, typer.Option("--deny", help="decline it instead")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="approve without a prompt here (no terminal)")] = False,
    workspace: Annotated[Path | None, typer.Option("--workspace", help="where runs live")] = None,
) -> None:
    """Answer a running session's approval request from another terminal: shows what it concerns first.

    Without REQUEST_ID, lists what is pending; with one pending request (or REQUEST_ID), answers it.
    """
    settings = settings_for(workspace)
    with Journal.in_workspace(settings.workspace.resolve()) as journal, exits_on_error():
        full_id = journal.get_run(run_id).id
        pending = pending_requests(journal, full_id)
        chosen = _chosen(pending, request_id, full_id)
        _print_request(chosen["request"], chosen)
        if deny:
            verdict = Verdict(False, answerer_here(), f"declined by {answerer_here()}")
        elif yes or (sys.stdin.isatty() and confirm_on_terminal("")):
            verdict = Verdict(True, answerer_here())
        elif not sys.stdin.isatty():
            fail("no terminal to confirm on: add --yes to approve or --deny to decline")
        else:
            verdict = Verdict(False, answerer_here(), f"declined by {answerer_here()}")
        answer_request(journal, full_id, chosen["request"], verdict)
    word = "approved" if verdict.approved else "declined"
    out_console.print(f"{word} {chosen['request']} of run {full_id}", highlight=False, markup=False)


def _chosen(pending: list[dict], request_id: str | None, run_id: str) -> dict:
    if request_id is not None:
        for request in pending:
            if request["request"] == request_id:
                return request
        fail(f"run {run_id} has no pending approval request {request_id}: run `sciagent approve {run_id}`")
    if not pending:
        fail(f"run {run_id} has no pending approval request")
    if len(pending) > 1:
        listed = "; ".join(f"{request['request']}: {request['summary']}" for request in pending)
        fail(f"run {run_id} has {len(pending)} pending requests ({listed}): name one")
    return pending[0]


def _print_request(request_id: str, request: dict) -> None:
    """What an approval concerns: the tool, its effects, why it asks, what it would do in full."""
    effects = ", ".join(request["effects"])
    err_console.print(
        f"approval {request_id}: {request['summary']}\n  does: {effects}\n  why asked: {request['reason']}",
        highlight=False, markup=False, soft_wrap=True,
    )  # fmt: skip
    detail = str(request.get("detail") or "").splitlines()
    for line in detail[:DETAIL_LINES]:
        err_console.print(f"  | {line}", highlight=False, markup=False, soft_wrap=True)
    if len(detail) > DETAIL_LINES:
        err_console.print(f"  | ... {len(detail) - DETAIL_LINES} more lines", highlight=False, markup=False)

