"""Approval requests as journal events, answered by whoever can: this terminal or another process.

A call the policy (``sciagent.tools.approval``) says must ask becomes an ``approval_request`` event of
the run it belongs to, with everything the person must see. Then the desk waits for the first answer:
a line typed at this process's terminal (if it has one), or an ``approval_answer`` event that
``sciagent approve RUN`` (a second terminal, later the web UI) wrote into the same journal. Without a
terminal the desk waits ``wait_s`` for another front end (0 by default: the call is refused at once
and the model told why); the refusal is an answer event too, so the journal holds every request and
what became of it.

Only ``y``/``yes`` approves: Enter, end of input and anything else decline, because what asks is
spending an allocation, destroying or running model-written code.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sciagent.agent.journal import Journal
from sciagent.errors import UserError
from sciagent.tools.approval import ApprovalRequest, Verdict

REQUEST = "approval_request"
ANSWER = "approval_answer"
POLL_S = 0.25


class Terminal(Protocol):
    """A person at this process's terminal: shown a request, then polled for their line."""

    def show(self, request_id: str, request: ApprovalRequest) -> None:
        """Print what the request concerns and the prompt."""

    def poll(self, timeout_s: float) -> str | None:
        """The line typed within ``timeout_s`` (``""`` at end of input), or None if none yet."""

    def withdraw(self, verdict: Verdict) -> None:
        """Say the request was answered elsewhere (the typed line, if any, no longer counts)."""


@dataclass
class ApprovalDesk:
    """The ``Answerer`` of one run: requests go to the journal, answers come from the first to give one.

    Args:
        journal: the workspace journal.
        run_id: the run (session, study or MCP server) whose requests these are.
        terminal: a person here who can answer; None where there is none (a batch job, ``nohup``).
        wait_s: without a terminal, how long to wait for ``sciagent approve`` before refusing.
    """

    journal: Journal
    run_id: str
    terminal: Terminal | None = None
    wait_s: float = 0.0
    clock: Callable[[], float] = time.monotonic

    def __call__(self, request: ApprovalRequest) -> Verdict:
        request_id = f"a-{uuid.uuid4().hex[:8]}"
        data = {"kind": REQUEST, "request": request_id, **request.to_json()}
        self.journal.add_event(self.run_id, "warning", f"approval asked: {request.preview.summary}", data)
        if self.terminal is not None:
            self.terminal.show(request_id, request)
        deadline = self.clock() + self.wait_s
        while True:
            elsewhere = answer_of(self.journal, self.run_id, request_id)
            if elsewhere is not None:  # another front end answered (and recorded it)
                if self.terminal is not None:
                    self.terminal.withdraw(elsewhere)
                return elsewhere
            verdict = self._here(deadline)
            if verdict is not None:
                answer_request(self.journal, self.run_id, request_id, verdict)
                return verdict

    def _here(self, deadline: float) -> Verdict | None:
        """This process's answer: the line typed at the terminal, or no one's once ``wait_s`` is over."""
        if self.terminal is not None:
            line = self.terminal.poll(POLL_S)
            return None if line is None else _typed(line)
        if self.clock() >= deadline:
            return Verdict(False, "no one", _NO_ONE.format(wait=self.wait_s))
        time.sleep(POLL_S)
        return None


_NO_ONE = (
    "no one could approve it here (no terminal; waited {wait:g} s for `sciagent approve`): "
    "an [[approval.rules]] entry or --approve-all allows it, --wait-for-approval waits for an answer"
)


def _typed(line: str) -> Verdict:
    if line.strip().lower() in {"y", "yes"}:
        return Verdict(True, "terminal")
    return Verdict(False, "terminal", "the user declined it at the terminal")


def journalled_approval(journal: Journal, run_id: str, question: str, ask: Callable[[str], bool]) -> bool:
    """A yes/no question that is not a tool call (a study's next batch), asked and journalled like one."""
    request_id = f"a-{uuid.uuid4().hex[:8]}"
    data = {"kind": REQUEST, "request": request_id, "summary": question, "effects": [], "reason": "--approve"}
    journal.add_event(run_id, "warning", f"approval asked: {question}", data)
    approved = ask(question)
    verdict = Verdict(approved, "terminal", "" if approved else "declined at the terminal")
    answer_request(journal, run_id, request_id, verdict)
    return verdict.approved


def pending_requests(journal: Journal, run_id: str) -> list[dict[str, Any]]:
    """The run's requests no one has answered yet, oldest first."""
    events = [event.data for event in journal.events(run_id, kinds=(REQUEST, ANSWER))]
    answered = {data.get("request") for data in events if data.get("kind") == ANSWER}
    return [data for data in events if data.get("kind") == REQUEST and data.get("request") not in answered]


def answer_request(journal: Journal, run_id: str, request_id: str, verdict: Verdict) -> int:
    """Record ``verdict`` for the request (the first answer counts; later ones are kept but ignored);
    returns the answer event's id.

    Raises:
        UserError: the run has no such request.
    """
    if not any(
        event.data.get("kind") == REQUEST and event.data.get("request") == request_id
        for event in journal.events(run_id)
    ):
        raise UserError(f"run {run_id} has no approval request {request_id}: see `sciagent approve {run_id}`")
    word = "approved" if verdict.approved else "declined"
    data = {"kind": ANSWER, "request": request_id, "approved": verdict.approved, "by": verdict.by,
            "reason": verdict.reason}  # fmt: skip
    return journal.add_event(run_id, "info", f"approval {word} by {verdict.by}", data)


def answerer_here() -> str:
    """Who answers from this process, as the journal names them: user, host and pid."""
    return f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()}, sciagent approve)"


def answer_of(journal: Journal, run_id: str, request_id: str) -> Verdict | None:
    """The first answer recorded for the request (the one that counts), or None if it waits still."""
    for event in journal.events(run_id, kinds=(ANSWER,)):
        if event.data.get("kind") == ANSWER and event.data.get("request") == request_id:
            data = event.data
            return Verdict(bool(data.get("approved")), str(data.get("by")), str(data.get("reason") or ""))
    return None
