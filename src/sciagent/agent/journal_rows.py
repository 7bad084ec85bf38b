"""The journal's rows: typed, immutable records, and the SQL tables that hold them.

The agent builds a ``ModelCall`` in memory, the journal stores it, and ``sciagent show`` reads it back as
a ``ModelCallRow``: one set of types from the loop to the terminal (smolagents keeps its transcript the
same way). Each row can describe itself in one line, which is what the timeline shows. The tables are
defined next to the dataclasses so that the two are changed together (and ``SCHEMA_VERSION`` with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sciagent.llm.base import ChatResponse

# queued: waiting for its batch job (`sciagent submit`, or a continuation)
RunStatus = Literal["queued", "running", "completed", "failed", "interrupted"]
StepStatus = Literal["running", "completed", "failed", "skipped"]
TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
CallOutcome = Literal["valid", "invalid", "fallback", "error"]
EventLevel = Literal["debug", "info", "warning", "error"]

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
STEP_STATUSES: tuple[str, ...] = get_args(StepStatus)
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
CALL_OUTCOMES: tuple[str, ...] = get_args(CallOutcome)
EVENT_LEVELS: tuple[str, ...] = get_args(EventLevel)

# Bump with every change to SCHEMA, and add the statements that bring the previous version's files up
# to it to MIGRATIONS.
SCHEMA_VERSION = 5

# Lines longer than this are cut in one-line descriptions; the full text stays in the journal.
_DESCRIPTION_LIMIT = 160


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming the allowed values, before SQLite's CHECK gives a vaguer one."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def one_line(text: str, limit: int = _DESCRIPTION_LIMIT) -> str:
    """Collapse whitespace (tracebacks, multi-line replies) so a description fits one table row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def seconds_between(start: str, end: str | None) -> float | None:
    """Seconds from one journal timestamp to another, or None while the row is unfinished."""
    if end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@dataclass(frozen=True)
class RunRow:
    """One agentic run: what it was asked to do, with which settings, and how it ended."""

    id: str
    goal: str
    config: dict[str, Any]
    status: RunStatus
    error: str | None
    created_at: str
    updated_at: str
    finished_at: str | None

    @property
    def duration_s(self) -> float | None:
        return seconds_between(self.created_at, self.finished_at)


@dataclass(frozen=True)
class StepRow:
    """A phase of a workflow (plan, guardrails, simulate, evaluate, adapt, report ...)."""

    id: int
    run_id: str
    kind: str
    status: StepStatus
    summary: str
    data: dict[str, Any]
    started_at: str
    finished_at: str | None

    @property
    def duration_s(self) -> float | None:
        return seconds_between(self.started_at, self.finished_at)

    def describe(self) -> str:
        text = f"{self.kind}: {self.summary}" if self.summary else self.kind
        if self.duration_s is not None:
            text += f" ({self.duration_s:.1f} s)"
        return one_line(text)


@dataclass(frozen=True)
class ModelCall:
    """One request to a language model and what became of its answer.

    Attributes:
        purpose: why the model was asked (``plan``, ``adjust``, ``interpret`` ...).
        model_id: the model name the endpoint reported (or was asked for, if it never answered).
        prompt_digest: sha256 of the messages (``digest_messages``): identical prompts are recognisable
            without storing them, so the journal does not grow with every repeated context.
        latency_s: wall time of the request, retries of the transport included; None when no response
            came back (a failed request, a fallback), so an unknown time is never shown as 0 s.
        prompt_tokens: tokens the endpoint counted in the prompt (None if it did not say or never answered).
        completion_tokens: tokens in the reply (None if it did not say or never answered).
        raw_reply: the reply exactly as received, so a bad answer can be inspected later.
        outcome: ``valid`` (validated and used), ``invalid`` (failed validation; the model was re-asked),
            ``fallback`` (the documented fallback was used instead), ``error`` (the request itself failed).
        error: the validation or request error, for ``invalid`` and ``error``.
        attempt: 1 for the first ask, 2 for the first re-ask, and so on.
    """

    purpose: str
    model_id: str
    prompt_digest: str
    latency_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    raw_reply: str
    outcome: CallOutcome
    error: str | None = None
    attempt: int = 1

    @classmethod
    def of(
        cls, purpose: str, model_id: str, prompt_digest: str, response: ChatResponse | None, *,
        raw_reply: str, outcome: str, error: str | None = None, attempt: int = 1,
    ) -> ModelCall:
        """The call as a response (or none: a fallback, a failed request) tells it; with no response,
        time and tokens are unknown, not zero."""
        return cls(
            purpose=purpose,
            model_id=model_id,
            prompt_digest=prompt_digest,
            latency_s=response.latency_s if response else None,
            prompt_tokens=response.usage.prompt_tokens if response else None,
            completion_tokens=response.usage.completion_tokens if response else None,
            raw_reply=raw_reply,
            outcome=outcome,  # type: ignore[arg-type]  # checked in __post_init__
            error=error,
            attempt=attempt,
        )

    def __post_init__(self) -> None:
        check_choice("ModelCall.outcome", self.outcome, CALL_OUTCOMES)
        if self.attempt < 1:
            raise ValueError(f"ModelCall.attempt counts from 1, not {self.attempt}")
        if self.latency_s is not None and self.latency_s < 0:
            raise ValueError(f"ModelCall.latency_s cannot be negative ({self.latency_s})")


@dataclass(frozen=True)
class ModelCallRow:
    """A stored ``ModelCall``, with where and when it happened."""

    id: int
    run_id: str
    step_id: int | None
    created_at: str
    call: ModelCall

    def describe(self) -> str:
        """One line: purpose, model, latency, tokens and attempt; unknown values say so, never 0."""
        call = self.call
        if call.outcome == "fallback":
            text = f"{call.purpose} · fallback: no model call"
        else:
            latency = "latency unknown" if call.latency_s is None else f"{call.latency_s:.2f} s"
            text = f"{call.purpose} · {call.model_id} · {latency} · {_tokens(call)} · attempt {call.attempt}"
        if call.error:
            text += f" · {call.error}"
        return one_line(text)


def _tokens(call: ModelCall) -> str:
    """``120+30 tokens``; ``?`` for a count the endpoint did not give; ``tokens unknown`` for neither."""
    if call.prompt_tokens is None and call.completion_tokens is None:
        return "tokens unknown"
    counts = ("?" if n is None else str(n) for n in (call.prompt_tokens, call.completion_tokens))
    return "+".join(counts) + " tokens"


@dataclass(frozen=True)
class TaskRow:
    """A unit of work (a simulation) sent to an executor; ``key`` identifies it within its run."""

    id: int
    run_id: str
    key: str
    spec: dict[str, Any]
    executor: str
    status: TaskStatus
    attempts: int
    result_path: str | None
    error: str | None
    remote_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str

    @property
    def duration_s(self) -> float | None:
        return seconds_between(self.started_at, self.finished_at) if self.started_at else None

    def describe(self) -> str:
        text = f"{self.key} on {self.executor} · {self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.duration_s is not None:
            text += f" · {self.duration_s:.1f} s"
        if self.error:
            text += f" · {self.error}"
        elif self.result_path:
            text += f" · {self.result_path}"
        return one_line(text)


@dataclass(frozen=True)
class EventRow:
    """Something worth remembering that is not a step, call or task (a retry, a guardrail, a warning)."""

    id: int
    run_id: str
    level: EventLevel
    message: str
    data: dict[str, Any]
    created_at: str

    def describe(self) -> str:
        return one_line(self.message)


@dataclass(frozen=True)
class ArtifactRow:
    """A file the run produced (trajectory, plot, report), by kind and path."""

    id: int
    run_id: str
    kind: str
    path: str
    created_at: str


@dataclass(frozen=True)
class Change:
    """One numbered write of the change feed: which row of which table, and that row as it is now.

    ``row`` is None when the row is gone (an artifact recorded again replaces its old row).
    """

    seq: int
    run_id: str
    table: str
    row_id: str
    row: RunRow | StepRow | ModelCallRow | TaskRow | EventRow | ArtifactRow | None


@dataclass(frozen=True)
class TimelineEntry:
    """One line of ``sciagent show``: when, what sort of row, its status, and a one-line description."""

    time: str
    kind: Literal["step", "model", "task", "event"]
    status: str
    description: str
    row_id: int


def _model_calls_table(name: str) -> str:
    """The model-call table's definition, under ``name`` (a migration builds it beside the old one)."""
    return f"""
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    step_id INTEGER REFERENCES steps(id),
    purpose TEXT NOT NULL,
    model_id TEXT NOT NULL,
    prompt_digest TEXT NOT NULL,
    latency_s REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    raw_reply TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('valid', 'invalid', 'fallback', 'error')),
    error TEXT,
    attempt INTEGER NOT NULL,
    created_at TEXT NOT NULL
)"""


# The structured-output style each endpoint answered in, so the next session asks it that way first.
_ENDPOINT_DIALECTS_TABLE = """
CREATE TABLE endpoint_dialects (
    base_url TEXT NOT NULL,
    model_id TEXT NOT NULL,
    style TEXT NOT NULL CHECK (style IN ('json_schema', 'json_object', 'prompt')),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (base_url, model_id)
)"""


def _runs_table(name: str) -> str:
    statuses = ", ".join(f"'{status}'" for status in RUN_STATUSES)
    return f"""CREATE TABLE {name} (
    id TEXT PRIMARY KEY,
    goal TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({statuses})),
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
)"""


# A new file: these tables, then CHANGE_FEED (its triggers hold ";", so they are kept apart).
SCHEMA = f"""
{_runs_table("runs")};
CREATE TABLE steps (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'skipped')),
    summary TEXT NOT NULL,
    data TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
{_model_calls_table("model_calls")};
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    executor TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    result_path TEXT,
    error TEXT,
    remote_id TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (run_id, key)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    level TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, path)
);
{_ENDPOINT_DIALECTS_TABLE};
CREATE INDEX runs_by_time ON runs (created_at);
CREATE INDEX steps_by_run ON steps (run_id);
CREATE INDEX model_calls_by_run ON model_calls (run_id);
CREATE INDEX events_by_run ON events (run_id);
CREATE INDEX artifacts_by_run ON artifacts (run_id);
"""

# The change feed (version 5): every insert into or update of these tables (each named with the column
# that holds its run's id) is numbered in `changes` by a trigger, in the one order SQLite commits writers
# in, across processes. A reader streams "every write after N" from it (the web UI's event ids), in-place
# updates included, which the tables' own ids cannot give. A migration that rebuilds one of these tables
# must create its triggers again.
CHANGE_TABLES: dict[str, str] = {
    "runs": "id",
    "steps": "run_id",
    "model_calls": "run_id",
    "tasks": "run_id",
    "events": "run_id",
    "artifacts": "run_id",
}
CHANGE_FEED: tuple[str, ...] = (
    """CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    tbl TEXT NOT NULL,
    row_id TEXT NOT NULL
)""",
    "CREATE INDEX changes_by_run ON changes (run_id, seq)",
    *(
        f"CREATE TRIGGER {table}_{event.lower()}_change AFTER {event} ON {table} BEGIN"
        f" INSERT INTO changes (run_id, tbl, row_id) VALUES (NEW.{run_column}, '{table}', NEW.id); END"
        for table, run_column in CHANGE_TABLES.items()
        for event in ("INSERT", "UPDATE")
    ),
)

# Statements that bring a file of schema version N (the key) to N + 1, run in one transaction.
# 1 -> 2: model_calls.latency_s may be NULL (no response, so no latency). SQLite cannot drop a NOT NULL
# constraint in place, so the table is rebuilt; the rows that version 1 wrote as 0 s and 0+0 tokens for
# calls that never reached the model (fallbacks and failed requests) become unknown, as now written.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        _model_calls_table("model_calls_v2"),
        "INSERT INTO model_calls_v2 SELECT * FROM model_calls",
        "UPDATE model_calls_v2 SET latency_s = NULL, prompt_tokens = NULL, completion_tokens = NULL"
        " WHERE outcome IN ('fallback', 'error') AND latency_s = 0",
        "DROP TABLE model_calls",
        "ALTER TABLE model_calls_v2 RENAME TO model_calls",
        "CREATE INDEX model_calls_by_run ON model_calls (run_id)",
    ),
    # 2 -> 3: the endpoint_dialects table.
    2: (_ENDPOINT_DIALECTS_TABLE,),
    # 3 -> 4: a run may be 'queued' (waiting for its batch job). A CHECK cannot change in place: the runs
    # table is rebuilt (with foreign keys off for the migration: the other tables reference it by name).
    3: (
        _runs_table("runs_v4"),
        "INSERT INTO runs_v4 SELECT * FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v4 RENAME TO runs",
        "CREATE INDEX runs_by_time ON runs (created_at)",
    ),
    # 4 -> 5: the change feed (rows written before it have no change: a reader starts from the tables).
    4: CHANGE_FEED,
}
