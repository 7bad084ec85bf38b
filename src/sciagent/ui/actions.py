"""What the web UI can do to a run: each action is one journal event, as from the terminal.

The UI is another process, like ``sciagent approve`` or ``sciagent tell``: it never touches a running
session's memory, it leaves a record that the process doing the work reads. An approval answer and a
told message are the events those commands write; a cancel is a ``cancel_request`` event that the
session honours before its next model call and while a tool waits on tasks (``SessionJournal.
honour_cancels``), because only the process holding the task board can cancel its tasks; a stop is the
study's stop file (``workflows/study/stopping.py``) plus an event saying who asked. Each refuses, with one
line, what would have no effect: an answered request, a finished run, a finished task.
"""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

from sciagent.agent.approvals import answer_of, answer_request
from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import RunRow
from sciagent.agent.session import CANCEL_REQUEST, SESSION_KIND, SessionJournal, run_kind, unanswered_cancels
from sciagent.errors import UserError
from sciagent.tools.approval import Verdict
from sciagent.ui.telemetry import simulation_outcome
from sciagent.workflows.study.stopping import request_stop, stop_reason

MAX_TELL_CHARS = 4000  # a message is read by the model before its next call: a note, not a document
STOP_REQUEST = "stop_request"
_FINISHED = ("completed", "failed")
_STUDY = "study"


def web_actor() -> str:
    """Who acts through this UI server, as the journal names them."""
    return f"web UI ({getpass.getuser()}@{socket.gethostname()})"


def approve(
    journal: Journal, run_id: str, request_id: str, *, approve: bool, reason: str = "", by: str
) -> int:
    """Answer a pending approval request of ``run_id``; the answer event's id.

    Raises:
        UserError: no such run or request, the request was answered already, or the run has finished.
    """
    run = journal.get_run(run_id)
    earlier = answer_of(journal, run.id, request_id)
    if earlier is not None:
        word = "approved" if earlier.approved else "declined"
        raise UserError(f"request {request_id} of run {run.id} was already {word} by {earlier.by}")
    _refuse_finished(run, f"no one waits for the answer to {request_id}")
    why = "" if approve else (reason.strip() or f"declined by {by}")
    return answer_request(journal, run.id, request_id, Verdict(approve, by, why))


def tell(journal: Journal, run_id: str, text: str, *, by: str) -> int:
    """Leave ``text`` for a running session to read before its next model call (``sciagent tell``).

    Raises:
        UserError: the run is not a session, has finished, or the text is empty or too long.
    """
    run = _session(journal, run_id, "told")
    text = text.strip()
    if not text:
        raise UserError("the message is empty: write what the session should read before its next step")
    if len(text) > MAX_TELL_CHARS:
        raise UserError(f"the message has {len(text):,} characters, over {MAX_TELL_CHARS:,}: shorten it")
    return SessionJournal.open(journal, run.id).tell(text, by=by)


def cancel_task(journal: Journal, workspace: Path, run_id: str, key: str, *, by: str) -> int:
    """Ask a running session to cancel its task ``key``; the ``cancel_request`` event's id.

    The session acts on it within a second while a tool waits on tasks, else before its next model call,
    and answers with a ``task_cancelled`` event.

    Raises:
        UserError: the run is a study (its simulations stop together: Stop run), not a session, has
            finished; the task is unknown, has finished, or its cancel was already asked for.
    """
    run = journal.get_run(run_id)
    if run_kind(run.config) == _STUDY:
        raise UserError(
            f"run {run.id} is a study: its simulations are stopped together with Stop run (resumable)"
        )
    run = _session(journal, run_id, "cancelled")
    task = journal.find_task(run.id, key)
    if task is None:
        known = ", ".join(row.key for row in journal.tasks(run.id)) or "none"
        raise UserError(f"session {run.id} has no task {key!r} (its tasks: {known})")
    outcome = simulation_outcome(workspace / "sessions" / run.id / "runs" / key)
    if task.status in ("completed", "failed", "cancelled") or outcome is not None:
        status = task.status if outcome is None else outcome.get("status", "finished")
        raise UserError(f"task {key} of session {run.id} has already ended ({status}): nothing to cancel")
    for event in unanswered_cancels(journal, run.id):
        if event.data.get("task") == key:
            raise UserError(
                f"a cancel of task {key} was already asked by {event.data.get('by')}: "
                "the session acts on it at its next check"
            )
    data = {"kind": CANCEL_REQUEST, "task": key, "by": by}
    return journal.add_event(run.id, "warning", f"cancel of task {key} asked by {by}", data)


def stop_run(journal: Journal, workspace: Path, run_id: str, *, reason: str, by: str) -> int:
    """Ask a running study to stop: it checkpoints its simulations and ends ``interrupted``, resumable.

    Raises:
        UserError: the run is not a study, is not running, or a stop was already asked for.
    """
    run = journal.get_run(run_id)
    kind = run_kind(run.config)
    if kind != _STUDY:
        raise UserError(
            f"run {run.id} is a {kind} run, not a study: Stop run stops a study (cancel a session's tasks)"
        )
    if run.status != "running":
        raise UserError(f"study {run.id} is {run.status}, not running: there is nothing to stop")
    run_dir = workspace / run.id
    asked = stop_reason(run_dir)
    if asked is not None:
        raise UserError(f"study {run.id} was already asked to stop ({asked}): it stops at its next check")
    why = reason.strip() or f"stopped from the web UI by {by}"
    request_stop(run_dir, why)
    data = {"kind": STOP_REQUEST, "reason": why, "by": by}
    return journal.add_event(run.id, "warning", f"stop asked by {by}: {why}", data)


def _session(journal: Journal, run_id: str, verb: str) -> RunRow:
    """The run if it is a session that has not finished; a one-line ``UserError`` if not."""
    run = journal.get_run(run_id)
    kind = run_kind(run.config)
    if kind != SESSION_KIND:
        raise UserError(f"run {run.id} is a {kind} run, not an ask/chat session: it cannot be {verb}")
    _refuse_finished(run, f"it cannot be {verb}")
    return run


def _refuse_finished(run: RunRow, consequence: str) -> None:
    if run.status in _FINISHED:
        raise UserError(f"run {run.id} has {run.status}: {consequence}")
