"""Rich tables for ``sciagent runs`` and ``sciagent show RUN``, read from the journal; the CLI prints them."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table
from rich.text import Text

from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import one_line
from sciagent.agent.ownership import owner_note
from sciagent.agent.session import run_kind
from sciagent.workflows.jobs.records import jobs_of

# Colour by outcome so a failure stands out in a long timeline.
_STATUS_STYLES = {
    "completed": "green",
    "valid": "green",
    "running": "yellow",
    "pending": "yellow",
    "invalid": "yellow",
    "fallback": "yellow",
    "warning": "yellow",
    "skipped": "dim",
    "debug": "dim",
    "failed": "red",
    "error": "red",
    "interrupted": "red",
    "cancelled": "red",
}


def _status(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _clock(timestamp: str, with_date: bool = False) -> str:
    """A journal timestamp (UTC) shortened for a table cell."""
    moment = datetime.fromisoformat(timestamp)
    return f"{moment:%Y-%m-%d %H:%M:%S}" if with_date else f"{moment:%H:%M:%S}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def runs_table(journal: Journal, limit: int = 50) -> Table:
    """The newest runs in the workspace: id, start, status (a running one's owner), duration, tasks done,
    goal."""
    table = Table(title=f"Runs and sessions in {journal.path.parent}")
    for column in ("run", "kind", "started (UTC)", "status", "duration", "tasks", "goal or question"):
        table.add_column(column, overflow="fold" if column.startswith("goal") else "ellipsis")
    for run in journal.list_runs(limit):
        counts = journal.task_counts(run.id)
        tasks = f"{counts.get('completed', 0)}/{sum(counts.values())}" if counts else ""
        if counts.get("failed"):
            tasks += f" ({counts['failed']} failed)"
        started = _clock(run.created_at, with_date=True)
        status, duration = _status(run.status), _duration(run.duration_s)
        if run.status == "running":
            status.append(f" ({owner_note(journal, run)})", style="dim")
        kind = "sub-agent" if run.config.get("parent") else run_kind(run.config)
        table.add_row(run.id, kind, started, status, duration, tasks, run.goal)
    return table


def timeline_table(journal: Journal, run_id: str) -> Table:
    """One run, step by step: time, kind, status and a one-line description of each row.

    ``run_id`` may be a unique prefix; an unknown one raises the journal's one-line ``UserError``.
    """
    run = journal.get_run(run_id)
    caption = f"status {run.status}" + (f": {one_line(run.error)}" if run.error else "")
    table = Table(title=f"Run {run.id}: {run.goal}", caption=caption)
    table.add_column("time (UTC)")
    table.add_column("kind")
    table.add_column("status")
    table.add_column("description", overflow="fold")
    for entry in journal.timeline(run.id):
        table.add_row(_clock(entry.time), entry.kind, _status(entry.status), entry.description)
    return table


def jobs_table(journal: Journal, run_id: str) -> Table | None:
    """The batch jobs that carried a run (``sciagent submit`` and its continuations); None if it had none."""
    jobs = jobs_of(journal, run_id)
    if not jobs:
        return None
    table = Table(title=f"Batch jobs of run {run_id}")
    for column in ("job", "id", "submitted", "started", "ended", "host", "why it ended", "allocation"):
        table.add_column(column, overflow="fold" if column in ("why it ended", "allocation") else "ellipsis")
    for job in jobs:
        moments = (job.submitted_at, job.started_at, job.ended_at)
        times = [_clock(moment) if moment else "" for moment in moments]
        spent = ", ".join(f"{key} {value}" for key, value in (job.allocation or {}).items() if _scalar(value))
        reason = job.end_reason or ""
        table.add_row(str(job.index), job.job_id, *times, job.host or "", reason, one_line(spent))
    return table


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def transcript_table(journal: Journal, session_id: str) -> Table:
    """An ask/chat session as it went: each message in full, each tool call with its arguments, status
    and result or error, and the messages told to it (``sciagent tell``)."""
    run = journal.get_run(session_id)
    caption = f"status {run.status}" + (f": {one_line(run.error)}" if run.error else "")
    table = Table(title=f"Session {run.id}: {one_line(run.goal)}", caption=caption)
    table.add_column("time (UTC)")
    table.add_column("who")
    table.add_column("status")
    table.add_column("what", overflow="fold")
    for step in journal.steps(run.id):
        if step.kind == "message":
            message = step.data["message"]
            if message["role"] in ("system", "tool") or step.data.get("result_of"):
                continue  # the prompt, and results: shown with their calls below
            text = message.get("content") or ""
            if step.data.get("calls"):
                text = (
                    (text + " " if text else "")
                    + "asks for "
                    + ", ".join(call["tool"] for call in step.data["calls"])
                )
            who = "told" if "told" in step.data else message["role"]
            table.add_row(_clock(step.started_at), who, _status(step.status), text)
        elif step.kind == "tool_call":
            record = step.data.get("record") or {}
            call = step.data.get("call") or {}
            tool = record.get("tool") or call.get("tool", "?")
            arguments = record.get("arguments") or call.get("raw") or {}
            shown = ", ".join(f"{k}={v}" for k, v in arguments.items()) if isinstance(arguments, dict) else ""
            outcome = record.get("error") or one_line(str(record.get("result", "")), 240)
            status = record.get("status") or step.status
            table.add_row(_clock(step.started_at), "tool", _status(status), f"{tool}({shown}) → {outcome}")
    return table
