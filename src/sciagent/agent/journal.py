"""The durable journal of agentic runs: one SQLite file per workspace.

Every run, workflow step, model call, simulation task, event and artifact is a row, so a run can be
inspected while it goes (``sciagent show``), explained afterwards, and resumed after a crash (tasks are
found again by key). Durability choices, and why:

- WAL mode: readers (``sciagent show``) never block the writer, and a killed writer leaves only a WAL
  tail that SQLite ignores or replays on the next open. WAL needs all processes on one host: do not
  open one journal from two nodes over a network filesystem.
- ``synchronous=FULL``: each commit is fsynced. The journal sees a few writes per step, not per MD step,
  so the cost is negligible, and it keeps the last commits through a node crash or power loss (NORMAL
  only protects against a crashed process), which matters when a resume relies on "task submitted".
- Write transactions start with ``BEGIN IMMEDIATE``: a deferred transaction that upgrades from read to
  write can fail with "database is locked" at once, ignoring the busy timeout.
- ``foreign_keys=ON`` and CHECK constraints: a row can never point at a missing run or hold a bad status.

Secrets: nothing written here may contain an API key or token. ``redact`` replaces the values of
dictionary keys named like a credential (``api_key``, ``*token``, ``authorization``, ``*secret``,
``password``) and every credential registered with ``sciagent.redaction`` (where each is handed out;
``Journal.register_secret`` adds one), in all text and JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sciagent.agent.journal_rows import (
    CHANGE_FEED,
    EVENT_LEVELS,
    MIGRATIONS,
    RUN_STATUSES,
    SCHEMA,
    SCHEMA_VERSION,
    TASK_STATUSES,
    ArtifactRow,
    Change,
    EventLevel,
    EventRow,
    ModelCall,
    ModelCallRow,
    RunRow,
    RunStatus,
    StepRow,
    StepStatus,
    TaskRow,
    TaskStatus,
    TimelineEntry,
    check_choice,
)
from sciagent.errors import UserError
from sciagent.redaction import REDACTED, register_secret, registered

JOURNAL_FILENAME = "journal.sqlite"
BUSY_TIMEOUT_S = 30.0

# Key names (case-insensitive, matched at the end of the key) whose values are never stored.
# ``max_tokens`` and ``prompt_tokens`` do not match (plural); ``api_key_env`` (an env var's name) neither.
_SECRET_KEY = re.compile(r"(api[_\-]?key|token|authorization|secret|password|passwd)$", re.IGNORECASE)

_TERMINAL_TASK = ("completed", "failed", "cancelled")
_TERMINAL_RUN = ("completed", "failed", "interrupted")


def redact(obj: Any, secret_values: Iterable[str] = ()) -> Any:
    """A copy of ``obj`` safe to store: credential-named keys and registered secret strings replaced.

    Dicts, lists and tuples are walked; a value under a key like ``api_key`` or ``Authorization`` becomes
    ``"[redacted]"`` whatever it was; every string (dict keys included) has each of ``secret_values``
    replaced. Other values are returned as they are.
    """
    values = sorted((s for s in secret_values if s), key=len, reverse=True)
    return _redact(obj, values)


def _redact(obj: Any, values: list[str]) -> Any:
    if isinstance(obj, str):
        for value in values:
            obj = obj.replace(value, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {
            _redact(k, values): REDACTED
            if isinstance(k, str) and _SECRET_KEY.search(k)
            else _redact(v, values)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [_redact(item, values) for item in obj]
    return obj


def digest_messages(messages: list[dict[str, Any]]) -> str:
    """sha256 of a chat's messages, as canonical JSON: equal prompts give equal digests."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Journal:
    """One workspace's journal. Safe to share between threads; several processes may open the file.

    Each method is one transaction; group several with ``with journal.transaction():`` so that they are
    all kept or all lost together (a task and the event announcing it, for instance).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._last_time = datetime.min.replace(tzinfo=timezone.utc)
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves (see the module docstring).
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._ensure_schema()
        except sqlite3.OperationalError:  # locked, unreadable...: SQLite's own message says it best
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:  # "file is not a database" and kin
            self._conn.close()
            raise UserError(
                f"{self.path} is not a sciagent journal ({exc}): move it away or pick another workspace"
            ) from exc
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def in_workspace(cls, workspace: Path) -> Journal:
        """The journal of a workspace directory (``<workspace>/journal.sqlite``), created if missing."""
        return cls(Path(workspace) / JOURNAL_FILENAME)

    def _ensure_schema(self) -> None:
        """Create the tables in a new file, or migrate an older file's schema to ``SCHEMA_VERSION``."""
        # Read first without the write lock, so `sciagent show` opens without waiting on a busy run.
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            # A migration may rebuild a table that others reference: foreign keys are checked again after
            # it (and the pragma is a no-op inside a transaction, so it is set around it).
            self._conn.execute("PRAGMA foreign_keys=OFF")
            try:
                self._migrate()
            finally:
                self._conn.execute("PRAGMA foreign_keys=ON")
        elif version > SCHEMA_VERSION:
            raise UserError(
                f"{self.path} has journal schema v{version}, this sciagent reads up to"
                f" v{SCHEMA_VERSION}: upgrade sciagent"
            )

    def _migrate(self) -> None:
        with self.transaction():  # two processes may race to create it: re-read under the lock
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            # One statement at a time: executescript() would COMMIT and leave our transaction.
            if version == 0:
                statements: list[str] = [*(s for s in SCHEMA.split(";") if s.strip()), *CHANGE_FEED]
            else:
                statements = [s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]]
            for statement in statements:
                self._conn.execute(statement)
            violations = self._conn.execute("PRAGMA foreign_key_check").fetchall()
            if violations:  # rolled back by the transaction: the file stays as it was
                raise sqlite3.IntegrityError(f"the journal's migration broke {len(violations)} reference(s)")
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them are committed at the end, or none if an exception escapes.

        A nested block is a savepoint: an exception it lets out undoes its own writes, and the outer
        block may catch it and go on.
        """
        with self._lock:
            outer = not self._conn.in_transaction
            self._conn.execute("BEGIN IMMEDIATE" if outer else "SAVEPOINT nested")
            try:
                yield
                self._conn.execute("COMMIT" if outer else "RELEASE nested")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
                    self._conn.execute("ROLLBACK" if outer else "ROLLBACK TO nested")
                    if not outer:
                        self._conn.execute("RELEASE nested")
                raise

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Read several things as of one moment: a page's snapshot and the change cursor it streams from.

        A deferred read transaction: in WAL mode it neither blocks a writer nor waits for one, and every
        read inside it sees the journal as it was at its first read. Other threads wait for it to end.
        """
        with self._lock:
            if self._conn.in_transaction:  # already inside one: that one's view holds
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def register_secret(self, value: str) -> None:
        """Never write ``value`` (an API key, a token) again: it becomes ``[redacted]`` in all text.

        Process-wide (``sciagent.redaction``): logs and reports drop it too. Empty values are ignored,
        so ``register_secret(os.environ.get("KEY", ""))`` is harmless.
        """
        register_secret(value)

    # -- helpers -----------------------------------------------------------------------------------

    def _now(self) -> str:
        """UTC now, ISO-8601 with microseconds, strictly increasing within this Journal.

        Strictly increasing so that rows written one after another sort in that order in the timeline
        even when the clock has not ticked between them.
        """
        with self._lock:
            now = max(datetime.now(timezone.utc), self._last_time + timedelta(microseconds=1))
            self._last_time = now
            return now.isoformat(timespec="microseconds")

    def _store(self, value: Any) -> Any:
        """The value as written: strings redacted, dicts as redacted, key-sorted JSON text."""
        if isinstance(value, dict):
            return json.dumps(redact(value, registered()), sort_keys=True, default=str)
        return redact(value, registered()) if isinstance(value, str) else value

    def _insert(self, table: str, **values: Any) -> int:
        """Insert one row (everything through ``_store``) and return its id."""
        sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"
        with self.transaction():
            return int(self._conn.execute(sql, [self._store(v) for v in values.values()]).lastrowid or 0)

    def _update(self, table: str, row_id: int | str, **values: Any) -> bool:
        """Set columns of one row (everything through ``_store``); False if there is no such row."""
        sql = f"UPDATE {table} SET {', '.join(f'{column} = ?' for column in values)} WHERE id = ?"
        with self.transaction():
            return self._conn.execute(sql, [*map(self._store, values.values()), row_id]).rowcount > 0

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _no_run(self, run_id: str) -> UserError:
        return UserError(f"no run {run_id} in {self.path}: run `sciagent runs` to list them")

    # -- runs --------------------------------------------------------------------------------------

    def create_run(self, goal: str, config: dict[str, Any]) -> str:
        """Start a run (status ``running``); its id sorts by creation time, e.g. ``20261126-134501-ab12``."""
        while True:
            now = self._now()
            run_id = f"{datetime.fromisoformat(now):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
            try:
                self._insert(
                    "runs",
                    id=run_id,
                    goal=goal,
                    config=config,
                    status="running",
                    created_at=now,
                    updated_at=now,
                )
            except sqlite3.IntegrityError:
                continue  # the same id in the same second: draw again
            return run_id

    def set_run_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """Set a run's status and error; terminal statuses stamp ``finished_at``, ``running`` clears it."""
        check_choice("run status", status, RUN_STATUSES)
        now = self._now()
        finished = now if status in _TERMINAL_RUN else None
        if not self._update("runs", run_id, status=status, error=error, updated_at=now, finished_at=finished):
            raise self._no_run(run_id)

    def update_run_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Replace a run's recorded settings (e.g. after the plan fixed what was left open)."""
        if not self._update("runs", run_id, config=config, updated_at=self._now()):
            raise self._no_run(run_id)

    def get_run(self, run_id: str) -> RunRow:
        """The run with this id, or with this unique id prefix (as people type them)."""
        if not run_id:
            raise self._no_run("''")
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,)) or self._rows(
            "SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 6", (len(run_id), run_id)
        )
        if not rows:
            raise self._no_run(run_id)
        if len(rows) > 1:
            ids = ", ".join(row["id"] for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise UserError(
                f"run prefix {run_id} matches several runs in {self.path} ({ids}): give more of it"
            )
        return _run_row(rows[0])

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        """The newest ``limit`` runs, newest first."""
        rows = self._rows("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
        return [_run_row(row) for row in rows]

    def child_runs(self, parent_id: str) -> list[RunRow]:
        """The runs whose config names ``parent_id`` as their parent (its sub-agents), oldest first."""
        sql = "SELECT * FROM runs WHERE json_extract(config, '$.parent') = ? ORDER BY created_at, id"
        rows = self._rows(sql, (parent_id,))
        return [_run_row(row) for row in rows]

    # -- steps -------------------------------------------------------------------------------------

    def start_step(
        self, run_id: str, kind: str, summary: str = "", data: dict[str, Any] | None = None
    ) -> int:
        """Open a step (status ``running``) and return its id."""
        return self._insert(
            "steps", run_id=run_id, kind=kind, status="running", summary=summary, data=data or {},
            started_at=self._now(),
        )  # fmt: skip

    def record_step(self, run_id: str, kind: str, summary: str, data: dict[str, Any]) -> int:
        """A step that is over as soon as it is written (a message of a session): one insert."""
        now = self._now()
        return self._insert(
            "steps", run_id=run_id, kind=kind, status="completed", summary=summary, data=data,
            started_at=now, finished_at=now,
        )  # fmt: skip

    def finish_step(
        self, step_id: int, status: StepStatus, summary: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        """Close a step. ``data`` is merged over the data given at the start, so the step keeps both its
        inputs and its outcome; ``summary``, if given, replaces the first one."""
        check_choice("step status", status, ("completed", "failed", "skipped"))
        with self.transaction():
            rows = self._rows("SELECT summary, data FROM steps WHERE id = ?", (step_id,))
            if not rows:
                raise ValueError(f"no step {step_id} in {self.path}")
            merged = {**json.loads(rows[0]["data"]), **(data or {})}
            summary = rows[0]["summary"] if summary is None else summary
            self._update(
                "steps", step_id, status=status, summary=summary, data=merged, finished_at=self._now()
            )

    def close_open_steps(self, run_id: str, summary: str) -> int:
        """Fail the steps a killed process left ``running``; how many. Only as the run's owner (ownership)."""
        with self.transaction():
            rows = self._rows("SELECT id FROM steps WHERE run_id = ? AND status = 'running'", (run_id,))
            for row in rows:
                self._update("steps", row["id"], status="failed", summary=summary, finished_at=self._now())
        return len(rows)

    def steps(self, run_id: str) -> list[StepRow]:
        rows = self._rows("SELECT * FROM steps WHERE run_id = ? ORDER BY started_at, id", (run_id,))
        return [_step_row(row) for row in rows]

    # -- model calls -------------------------------------------------------------------------------

    def record_model_call(self, run_id: str, step_id: int | None, call: ModelCall) -> int:
        """Store one model request and what became of it; returns the row id."""
        fields = {name: getattr(call, name) for name in ModelCall.__dataclass_fields__}
        return self._insert("model_calls", run_id=run_id, step_id=step_id, created_at=self._now(), **fields)

    def model_calls(self, run_id: str) -> list[ModelCallRow]:
        rows = self._rows("SELECT * FROM model_calls WHERE run_id = ? ORDER BY created_at, id", (run_id,))
        return [_model_call_row(row) for row in rows]

    # -- tasks -------------------------------------------------------------------------------------

    def add_task(self, run_id: str, key: str, spec: dict[str, Any], executor: str) -> int:
        """Record a task (status ``pending``); ``key`` must be new within the run (``find_task`` first)."""
        now = self._now()
        try:
            return self._insert(
                "tasks", run_id=run_id, key=key, spec=spec, executor=executor, status="pending",
                created_at=now, updated_at=now,
            )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            if self.find_task(run_id, key) is not None:
                raise ValueError(
                    f"run {run_id} already has a task {key!r}: use find_task to resume it"
                ) from exc
            raise

    def update_task(
        self,
        task_id: int,
        *,
        status: TaskStatus,
        attempts: int | None = None,
        result_path: str | None = None,
        error: str | None = None,
        remote_id: str | None = None,
    ) -> None:
        """Move a task on. Fields left as None keep their value.

        ``started_at`` is stamped the first time the task runs and kept across retries; ``finished_at``
        is stamped on ``completed``/``failed``/``cancelled`` and cleared if the task runs again.
        """
        check_choice("task status", status, TASK_STATUSES)
        now = self._now()
        given = {"attempts": attempts, "result_path": result_path, "error": error, "remote_id": remote_id}
        changes = {name: value for name, value in given.items() if value is not None}
        changes |= {
            "status": status,
            "updated_at": now,
            "finished_at": now if status in _TERMINAL_TASK else None,
        }
        with self.transaction():
            rows = self._rows("SELECT started_at FROM tasks WHERE id = ?", (task_id,))
            if not rows:
                raise ValueError(f"no task {task_id} in {self.path}")
            if status == "running" and rows[0]["started_at"] is None:
                changes["started_at"] = now
            self._update("tasks", task_id, **changes)

    def find_task(self, run_id: str, key: str) -> TaskRow | None:
        """The task with this key in the run, if any: how a resumed run skips work already done."""
        rows = self._rows("SELECT * FROM tasks WHERE run_id = ? AND key = ?", (run_id, self._store(key)))
        return _task_row(rows[0]) if rows else None

    def tasks(self, run_id: str) -> list[TaskRow]:
        rows = self._rows("SELECT * FROM tasks WHERE run_id = ? ORDER BY created_at, id", (run_id,))
        return [_task_row(row) for row in rows]

    def task_counts(self, run_id: str) -> dict[str, int]:
        """How many of the run's tasks are in each status (statuses with none are left out)."""
        rows = self._rows("SELECT status, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY status", (run_id,))
        return {status: count for status, count in rows}

    # -- events and artifacts ----------------------------------------------------------------------

    def add_event(
        self, run_id: str, level: EventLevel, message: str, data: dict[str, Any] | None = None
    ) -> int:
        """Remember something that is not a step, call or task: a retry, a guardrail's verdict, a warning.

        Returns the event's id (what the web UI answers an action with).
        """
        check_choice("event level", level, EVENT_LEVELS)
        return self._insert(
            "events", run_id=run_id, level=level, message=message, data=data or {}, created_at=self._now()
        )

    def events(self, run_id: str, kinds: tuple[str, ...] | None = None) -> list[EventRow]:
        """The run's events in time order; with ``kinds``, only those whose ``data.kind`` is one of them
        (filtered by SQLite: a run with thousands of events is not decoded to find its few approvals)."""
        sql = "SELECT * FROM events WHERE run_id = ?"
        if kinds is not None:
            sql += f" AND json_extract(data, '$.kind') IN ({', '.join('?' * len(kinds))})"
        rows = self._rows(sql + " ORDER BY created_at, id", (run_id, *(kinds or ())))
        return [_event_row(row) for row in rows]

    def add_artifact(self, run_id: str, kind: str, path: str) -> None:
        """Record a file the run produced. Adding a path again (a resumed run rewrote it) updates it."""
        with self.transaction():
            self._conn.execute(
                "DELETE FROM artifacts WHERE run_id = ? AND path = ?", (run_id, self._store(str(path)))
            )
            self._insert("artifacts", run_id=run_id, kind=kind, path=str(path), created_at=self._now())

    def artifacts(self, run_id: str) -> list[ArtifactRow]:
        rows = self._rows("SELECT * FROM artifacts WHERE run_id = ? ORDER BY created_at, id", (run_id,))
        return [ArtifactRow(**dict(row)) for row in rows]

    # -- the change feed ---------------------------------------------------------------------------

    def latest_change(self) -> int:
        """The newest change's number (0 for none): where a page that has read everything streams from."""
        return int(self._rows("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])

    def changes_after(self, seq: int, run_id: str | None = None, limit: int = 500) -> list[Change]:
        """The first ``limit`` changes numbered after ``seq`` (of one run, or all), oldest first, each with
        its row as it is now. One query per table for the rows, however many changes there are."""
        where, params = ("seq > ?", (seq,)) if run_id is None else ("run_id = ? AND seq > ?", (run_id, seq))
        with self.reading():
            changes = self._rows(
                f"SELECT seq, run_id, tbl, row_id FROM changes WHERE {where} ORDER BY seq LIMIT ?",
                (*params, limit),
            )
            wanted: dict[str, set[str]] = {}
            for change in changes:
                wanted.setdefault(change["tbl"], set()).add(change["row_id"])
            rows = {
                (table, str(row["id"])): _ROW_READERS[table](row)
                for table, ids in wanted.items()
                for row in self._rows(
                    f"SELECT * FROM {table} WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids)
                )
            }
        return [
            Change(c["seq"], c["run_id"], c["tbl"], c["row_id"], rows.get((c["tbl"], c["row_id"])))
            for c in changes
        ]

    def changed_runs_after(self, seq: int) -> list[tuple[str, int]]:
        """The runs changed after ``seq``, each with its newest change's number, in that order."""
        rows = self._rows(
            "SELECT run_id, MAX(seq) AS last FROM changes WHERE seq > ? GROUP BY run_id ORDER BY last", (seq,)
        )
        return [(row["run_id"], int(row["last"])) for row in rows]

    # -- reading a run back ------------------------------------------------------------------------

    def remember_dialect(self, base_url: str, model_id: str, style: str) -> None:
        """Record the structured-output style ``base_url`` answered ``model_id``'s requests in."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO endpoint_dialects (base_url, model_id, style, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (base_url, model_id) DO UPDATE SET style = excluded.style,"
                " updated_at = excluded.updated_at",
                (base_url, model_id, style, self._now()),
            )

    def known_dialect(self, base_url: str, model_id: str) -> str | None:
        """The style last recorded for this endpoint and model; None if it was never asked here."""
        rows = self._rows(
            "SELECT style FROM endpoint_dialects WHERE base_url = ? AND model_id = ?", (base_url, model_id)
        )
        return str(rows[0]["style"]) if rows else None

    def timeline(self, run_id: str) -> list[TimelineEntry]:
        """Steps, model calls, tasks and events of a run in time order (steps and tasks by start)."""
        entries = [
            TimelineEntry(s.started_at, "step", s.status, s.describe(), s.id) for s in self.steps(run_id)
        ]
        entries += [
            TimelineEntry(c.created_at, "model", c.call.outcome, c.describe(), c.id)
            for c in self.model_calls(run_id)
        ]
        entries += [
            TimelineEntry(t.created_at, "task", t.status, t.describe(), t.id) for t in self.tasks(run_id)
        ]
        entries += [
            TimelineEntry(e.created_at, "event", e.level, e.describe(), e.id) for e in self.events(run_id)
        ]
        return sorted(entries, key=lambda entry: entry.time)


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(**{**dict(row), "config": json.loads(row["config"])})


def _task_row(row: sqlite3.Row) -> TaskRow:
    return TaskRow(**{**dict(row), "spec": json.loads(row["spec"])})


def _step_row(row: sqlite3.Row) -> StepRow:
    return StepRow(**{**dict(row), "data": json.loads(row["data"])})


def _event_row(row: sqlite3.Row) -> EventRow:
    return EventRow(**{**dict(row), "data": json.loads(row["data"])})


def _model_call_row(row: sqlite3.Row) -> ModelCallRow:
    fields = dict(row)
    ids = {name: fields.pop(name) for name in ("id", "run_id", "step_id", "created_at")}
    return ModelCallRow(**ids, call=ModelCall(**fields))


_ROW_READERS: dict[str, Callable[[sqlite3.Row], Any]] = {
    "runs": _run_row,
    "steps": _step_row,
    "model_calls": _model_call_row,
    "tasks": _task_row,
    "events": _event_row,
    "artifacts": lambda row: ArtifactRow(**dict(row)),
}
