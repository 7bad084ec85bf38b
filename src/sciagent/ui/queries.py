"""What the web UI shows, as JSON-able dicts read from the journal: the runs list and a run's page.

The shapes are the UI's API (RunSummary, Item, Approval, Job, Failure, File; see ``ui/app.py``);
the page's timeline and the change feed use the same ``item_of``, so a row looks the same whether it
came with the page or on the stream. Each page is read in one read transaction with the change
cursor, so the stream that follows it misses nothing and repeats nothing that the page already had.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sciagent.agent.approvals import REQUEST, pending_requests
from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import (
    RUN_STATUSES,
    ArtifactRow,
    Change,
    EventRow,
    ModelCallRow,
    RunRow,
    StepRow,
    TaskRow,
    one_line,
)
from sciagent.agent.session import run_kind
from sciagent.errors import UserError
from sciagent.sandbox.rundir import ScratchFileError, read_back
from sciagent.ui.rundir import list_files, log_of, run_dir, tail
from sciagent.ui.telemetry import telemetry_of
from sciagent.workflows.jobs.records import JobRecord, jobs_of

RUNS_LISTED = 200  # the newest runs the list shows (the counts cover every run read)
_RUNS_READ = 5000
_RESULT_BYTES = 1 << 20  # a task's result.json is read only up to this size

Row = RunRow | StepRow | ModelCallRow | TaskRow | EventRow | ArtifactRow


def kind_of(run: RunRow) -> str:
    """``sub-agent`` for a run with a parent, else what the run's config says (``session``, ``study`` ...)."""
    return "sub-agent" if run.config.get("parent") else run_kind(run.config)


def run_summary(journal: Journal, run: RunRow, now: float | None = None) -> dict[str, Any]:
    """A RunSummary: the run's row with its kind, age, task counts and pending approvals."""
    now = time.time() if now is None else now
    return {
        "id": run.id, "kind": kind_of(run), "goal": run.goal, "status": run.status, "error": run.error,
        "created_at": run.created_at, "updated_at": run.updated_at, "finished_at": run.finished_at,
        "age_s": round(now - datetime.fromisoformat(run.created_at).timestamp(), 3),
        "duration_s": run.duration_s, "parent": run.config.get("parent"),
        "tasks": journal.task_counts(run.id), "pending_approvals": len(pending_requests(journal, run.id)),
    }  # fmt: skip


def runs_list(
    journal: Journal, *, kind: str | None = None, status: str | None = None, q: str | None = None
) -> dict[str, Any]:
    """The runs (newest first) of ``kind`` and ``status`` whose id or goal holds ``q``, with counts.

    ``counts`` has every run status, counted over the runs of ``kind`` and ``q`` whatever their status,
    so the status filters show how many each would list.
    """
    if status and status not in RUN_STATUSES:
        raise UserError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    needle = (q or "").casefold()
    with journal.reading():
        cursor = journal.latest_change()
        runs = [
            run for run in journal.list_runs(limit=_RUNS_READ)
            if (not kind or kind_of(run) == kind)
            and (not needle or needle in run.id.casefold() or needle in run.goal.casefold())
        ]  # fmt: skip
        counts = {name: sum(run.status == name for run in runs) for name in RUN_STATUSES}
        shown = [run for run in runs if not status or run.status == status][:RUNS_LISTED]
        now = time.time()
        summaries = [run_summary(journal, run, now) for run in shown]
    return {"runs": summaries, "counts": counts, "cursor": cursor}


def run_detail(journal: Journal, workspace: Path, run_id: str) -> dict[str, Any]:
    """A run's page: its rows in time order, what waits for an answer, its jobs, failure, files.

    Raises:
        UserError: no run has this id (or several start with it).
    """
    with journal.reading():
        cursor = journal.latest_change()
        run = journal.get_run(run_id)
        steps, calls = journal.steps(run.id), journal.model_calls(run.id)
        tasks, events, artifacts = journal.tasks(run.id), journal.events(run.id), journal.artifacts(run.id)
        summary = run_summary(journal, run)
        approvals = _approvals(journal, run.id, events)
        jobs = [_job(job, run) for job in jobs_of(journal, run.id)]
        children = [run_summary(journal, child) for child in journal.child_runs(run.id)]
    items = [item_of(row) for row in (*steps, *calls, *tasks, *events, *artifacts)]
    items.sort(key=lambda item: item["time"])
    directory = run_dir(workspace, run)
    return {
        "run": summary,
        "items": items,
        "approvals": approvals,
        "tasks": [item_of(task) for task in tasks],
        "jobs": jobs,
        "failure": _failure(run, tasks, directory),
        "outcome": _outcome(run, steps, directory),
        "files": [f.as_dict(run.id) for f in list_files(directory)] if directory else [],
        "telemetry": run_telemetry(directory),
        "children": children,
        "cursor": cursor,
    }


def _outcome(run: RunRow, steps: list[StepRow], directory: Path | None) -> dict[str, Any] | None:
    """What a finished run found, first on its page: a study's findings, a session's answer, a chemistry
    run's result line; None while it runs or where it recorded none."""
    if run.status != "completed":
        return None
    kind = kind_of(run)
    if kind == "chem":
        lines = [step.summary for step in steps if step.kind == "chem_energy" and step.status == "completed"]
        return {"title": "Result", "lines": lines} if lines else None
    results = _results(directory)
    if kind == "study" and isinstance(results.get("findings"), list):
        return {"title": "Findings", "lines": [str(line) for line in results["findings"]]}
    if kind in ("session", "sub-agent") and isinstance(results.get("answer"), str):
        return {"title": "Answer", "lines": [results["answer"]]}
    return None


def _results(directory: Path | None) -> dict[str, Any]:
    """The run's results.json (read as any file in a run directory is: no link followed, size capped)."""
    if directory is None:
        return {}
    try:
        results = json.loads(read_back(directory, "results.json", _RESULT_BYTES))
    except (ScratchFileError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def run_telemetry(directory: Path | None) -> list[dict[str, Any]]:
    """The telemetry of every simulation in the run's directory (none before it has one)."""
    return telemetry_of(directory) if directory else []


def item_of(row: Row) -> dict[str, Any]:
    """An Item: ``table``, ``id``, ``time``, ``status`` and a one-line ``text``, then the row's own fields."""
    if isinstance(row, RunRow):
        text = one_line(row.goal + (f" · {row.error}" if row.error else ""))
        return _item("run", row.id, row.updated_at, row.status, text, kind=kind_of(row), goal=row.goal,
                     error=row.error, created_at=row.created_at, finished_at=row.finished_at)  # fmt: skip
    if isinstance(row, StepRow):
        return _item("step", row.id, row.started_at, row.status, row.describe(), kind=row.kind,
                     summary=row.summary, data=row.data, started_at=row.started_at,
                     finished_at=row.finished_at, duration_s=row.duration_s)  # fmt: skip
    if isinstance(row, ModelCallRow):
        c = row.call
        return _item("model_call", row.id, row.created_at, c.outcome, row.describe(), purpose=c.purpose,
                     model_id=c.model_id, latency_s=c.latency_s, prompt_tokens=c.prompt_tokens,
                     completion_tokens=c.completion_tokens, outcome=c.outcome, error=c.error,
                     attempt=c.attempt, step_id=row.step_id)  # fmt: skip
    if isinstance(row, TaskRow):
        return _item("task", row.id, row.created_at, row.status, row.describe(), key=row.key,
                     executor=row.executor, attempts=row.attempts, error=row.error,
                     result_path=row.result_path, remote_id=row.remote_id, started_at=row.started_at,
                     finished_at=row.finished_at)  # fmt: skip
    if isinstance(row, EventRow):
        return _item("event", row.id, row.created_at, row.level, row.describe(), level=row.level,
                     message=row.message, data=row.data)  # fmt: skip
    text = one_line(row.path)
    return _item("artifact", row.id, row.created_at, row.kind, text, kind=row.kind, path=row.path)


def change_item(change: Change) -> dict[str, Any] | None:
    """The Item of a change, with its ``seq``; None if its row is gone (an artifact recorded again)."""
    return None if change.row is None else {"seq": change.seq, **item_of(change.row)}


def _item(table: str, row_id: int | str, at: str, status: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"table": table, "id": row_id, "time": at, "status": status, "text": text, **fields}


def _approvals(journal: Journal, run_id: str, events: list[EventRow]) -> list[dict[str, Any]]:
    """The pending requests (``pending_requests`` decides which), each with its event's id."""
    event_ids = {e.data.get("request"): e.id for e in events if e.data.get("kind") == REQUEST}
    pending = pending_requests(journal, run_id)
    return [{**data, "event_id": event_ids.get(data.get("request"))} for data in pending]


def _job(job: JobRecord, run: RunRow) -> dict[str, Any]:
    """A Job from a ``JobRecord``; the walltime asked is the run's job spec's, the time left the
    scheduler's own end time (as the job read it) less now, while the job runs."""
    spec = run.config.get("job") or {}
    state = "ended" if job.ended_at else "running" if job.started_at else "queued"
    left = max(0.0, job.ends_at - time.time()) if state == "running" and job.ends_at else None
    return {
        "job_id": job.job_id, "index": job.index, "site": spec.get("site"),
        "scheduler": _scheduler(job.script), "state": state, "walltime_s": spec.get("walltime_s"),
        "walltime_left_s": left,
        "submitted_at": job.submitted_at, "started_at": job.started_at, "ended_at": job.ended_at,
        "host": job.host, "end_reason": job.end_reason,
    }  # fmt: skip


def _scheduler(script: str | None) -> str | None:
    """Which scheduler a job script was written for, from its directives."""
    if not script:
        return None
    path = Path(script)
    try:
        head = read_back(path.parent, path.name, 1 << 20).decode("utf-8", errors="replace")
    except ScratchFileError:
        return None
    return "slurm" if "#SBATCH" in head else "pbs" if "#PBS" in head else None


def _failure(run: RunRow, tasks: list[TaskRow], directory: Path | None) -> dict[str, Any] | None:
    """Why the run or its tasks failed: the run's error, each failed task's class, message and log tail."""
    failed = [task for task in tasks if task.status == "failed"]
    if run.status != "failed" and not failed:
        return None
    return {"run_error": run.error, "tasks": [_task_failure(task, directory) for task in failed]}


def _task_failure(task: TaskRow, directory: Path | None) -> dict[str, Any]:
    """A failed task: its class (from the ``result.json`` in its work directory), message and log."""
    workdir = Path(task.result_path) if task.result_path else None
    if workdir is not None and not workdir.is_dir():
        workdir = workdir.parent
    failure_class, log = None, None
    if workdir is not None:
        try:
            failure_class = json.loads(read_back(workdir, "result.json", _RESULT_BYTES)).get("failure_class")
        except (ScratchFileError, ValueError, AttributeError):
            failure_class = None
        log = log_of(workdir)
    shown = None
    if log is not None:
        inside = directory is not None and log.is_relative_to(directory)
        shown = log.relative_to(directory).as_posix() if inside and directory else str(log)
    return {
        "key": task.key, "failure_class": failure_class, "message": task.error,
        "log_tail": tail(log) if log else [], "log_path": shown,
    }  # fmt: skip
