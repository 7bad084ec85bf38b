"""The journal on real SQLite files: rows in and out, redaction, two connections, and SIGKILL mid-write."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from sciagent.agent.journal import JOURNAL_FILENAME, Journal, digest_messages, redact
from sciagent.agent.journal_rows import SCHEMA, SCHEMA_VERSION, ModelCall
from sciagent.cli.runs import runs_table, timeline_table
from sciagent.errors import UserError

SECRET = "sk-live-THIS-MUST-NOT-BE-STORED-42"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.in_workspace(tmp_path / "ws") as opened:
        yield opened


def _call(purpose: str = "plan", outcome: str = "valid", **fields: object) -> ModelCall:
    values: dict = {
        "purpose": purpose,
        "model_id": "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "prompt_digest": digest_messages([{"role": "user", "content": purpose}]),
        "latency_s": 1.25,
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "raw_reply": '{"temperature_k": 300}',
        "outcome": outcome,
    }
    return ModelCall(**{**values, **fields})


def _render(table: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


# -- runs ------------------------------------------------------------------------------------------


def test_create_get_list_runs(journal: Journal) -> None:
    first = journal.create_run("is villin stable at 300 K?", {"temperature_k": 300})
    second = journal.create_run("and at 350 K?", {"temperature_k": 350})
    assert len(first) == len("20261126-134501-ab12") and first[8] == "-" and first[15] == "-"
    run = journal.get_run(first)
    assert (run.goal, run.config, run.status, run.error, run.finished_at) == (
        "is villin stable at 300 K?", {"temperature_k": 300}, "running", None, None
    )  # fmt: skip
    assert run.created_at.endswith("+00:00")  # UTC, ISO-8601
    assert [r.id for r in journal.list_runs()] == [second, first]  # newest first
    assert [r.id for r in journal.list_runs(limit=1)] == [second]

    journal.set_run_status(first, "failed", error="simulation T300 blew up")
    failed = journal.get_run(first)
    assert (failed.status, failed.error) == ("failed", "simulation T300 blew up")
    assert failed.finished_at is not None and failed.duration_s is not None and failed.duration_s >= 0
    journal.set_run_status(first, "running")  # resumed: unfinished again, error cleared
    assert (journal.get_run(first).finished_at, journal.get_run(first).error) == (None, None)

    journal.update_run_config(first, {"temperature_k": 310, "replicas": 2})
    assert journal.get_run(first).config == {"replicas": 2, "temperature_k": 310}
    with pytest.raises(ValueError, match="run status must be one of"):
        journal.set_run_status(first, "done")  # type: ignore[arg-type]


def test_get_run_by_prefix_and_unknown_ids(journal: Journal) -> None:
    ids = [journal.create_run(f"goal {i}", {}) for i in range(3)]
    for run_id in ids:
        prefix = next(run_id[:n] for n in range(1, 21) if sum(x.startswith(run_id[:n]) for x in ids) == 1)
        assert journal.get_run(prefix).id == run_id
    with pytest.raises(UserError, match="matches several runs") as ambiguous:
        journal.get_run(ids[0][:4])
    assert "\n" not in str(ambiguous.value)
    for unknown in ("19990101-000000-0000", "nope", ""):
        with pytest.raises(UserError) as missing:
            journal.get_run(unknown)
        message = str(missing.value)
        assert message.startswith("no run ") and "\n" not in message
        assert str(journal.path) in message and "`sciagent runs`" in message
    with pytest.raises(UserError, match="no run"):
        journal.set_run_status("nope", "completed")
    with pytest.raises(UserError, match="no run"):
        journal.update_run_config("nope", {})


# -- steps, model calls, tasks, events, artifacts --------------------------------------------------


def test_steps_keep_start_and_finish_data(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    step = journal.start_step(run_id, "plan", "asking the model for a plan", {"max_replicas": 3})
    [row] = journal.steps(run_id)
    assert (row.kind, row.status, row.finished_at, row.data) == ("plan", "running", None, {"max_replicas": 3})
    journal.finish_step(step, "completed", data={"temperatures": [300, 350]})
    [row] = journal.steps(run_id)
    assert row.status == "completed" and row.summary == "asking the model for a plan"  # kept
    assert row.data == {"max_replicas": 3, "temperatures": [300, 350]}  # merged
    assert row.finished_at is not None and row.duration_s is not None
    skipped = journal.start_step(run_id, "adapt")
    journal.finish_step(skipped, "skipped", summary="all replicas stable")
    assert journal.steps(run_id)[1].summary == "all replicas stable"
    with pytest.raises(ValueError, match="no step 999"):
        journal.finish_step(999, "completed")
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are on
        journal.start_step("no-such-run", "plan")


def test_model_calls_round_trip(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    step = journal.start_step(run_id, "plan")
    first = journal.record_model_call(run_id, step, _call(outcome="invalid", error="temperature_k: too low"))
    second = journal.record_model_call(run_id, step, _call(attempt=2, prompt_tokens=None))
    journal.record_model_call(run_id, None, _call("interpret", outcome="error", error="timed out"))
    rows = journal.model_calls(run_id)
    assert [r.id for r in rows[:2]] == [first, second] and rows[0].step_id == step and rows[2].step_id is None
    assert rows[0].call == _call(outcome="invalid", error="temperature_k: too low")  # every field back
    assert rows[1].call.prompt_tokens is None and rows[1].call.attempt == 2
    assert "plan · meta-llama/Meta-Llama-3.1-8B-Instruct · 1.25 s · 120+30 tokens" in rows[0].describe()
    assert "· 1.25 s · ?+30 tokens · attempt 2" in rows[1].describe()  # the count it did not give is "?"
    with pytest.raises(ValueError, match="outcome must be one of"):
        _call(outcome="ok")
    with pytest.raises(ValueError, match="attempt counts from 1"):
        _call(attempt=0)


def test_digest_messages_is_canonical() -> None:
    one = digest_messages([{"role": "user", "content": "hi"}])
    assert one == digest_messages([{"content": "hi", "role": "user"}]) and len(one) == 64
    assert one != digest_messages([{"role": "user", "content": "hi!"}])


def test_tasks_for_resume_and_timestamps(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    spec = {"structure": "villin", "temperature_k": 300, "replica": 1}
    task = journal.add_task(run_id, "T300-r1/a1", spec, "local")
    assert journal.find_task(run_id, "T300-r1/a2") is None
    found = journal.find_task(run_id, "T300-r1/a1")
    assert found is not None and (found.id, found.spec, found.executor, found.status) == (
        task,
        spec,
        "local",
        "pending",
    )
    assert (found.attempts, found.started_at, found.finished_at) == (0, None, None)
    with pytest.raises(ValueError, match="already has a task 'T300-r1/a1': use find_task"):
        journal.add_task(run_id, "T300-r1/a1", spec, "local")

    journal.update_task(task, status="running", attempts=1, remote_id="job-17")
    running = journal.tasks(run_id)[0]
    assert running.started_at is not None and running.finished_at is None and running.remote_id == "job-17"
    journal.update_task(task, status="failed", error="NaN at step 4000")
    failed = journal.tasks(run_id)[0]
    assert failed.finished_at is not None and failed.error == "NaN at step 4000" and failed.attempts == 1
    journal.update_task(task, status="running", attempts=2)  # a retry keeps the first start, reopens
    retried = journal.tasks(run_id)[0]
    assert retried.started_at == running.started_at and retried.finished_at is None
    journal.update_task(task, status="completed", result_path="T300-r1/result.json")
    done = journal.find_task(run_id, "T300-r1/a1")
    assert done is not None and (done.status, done.attempts, done.result_path) == (
        "completed", 2, "T300-r1/result.json"
    )  # fmt: skip
    assert done.started_at < done.finished_at and done.remote_id == "job-17"  # type: ignore[operator]
    assert journal.task_counts(run_id) == {"completed": 1}
    with pytest.raises(ValueError, match="no task 999"):
        journal.update_task(999, status="running")
    with pytest.raises(ValueError, match="task status must be one of"):
        journal.update_task(task, status="done")  # type: ignore[arg-type]


def test_events_and_artifacts(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    journal.add_event(run_id, "warning", "retrying T350 with a 1 fs step", {"attempt": 2})
    [event] = journal.events(run_id)
    assert (event.level, event.message, event.data) == (
        "warning",
        "retrying T350 with a 1 fs step",
        {"attempt": 2},
    )
    with pytest.raises(ValueError, match="event level must be one of"):
        journal.add_event(run_id, "fatal", "x")  # type: ignore[arg-type]
    journal.add_artifact(run_id, "trajectory", "T300-r1/trajectory.dcd")
    journal.add_artifact(run_id, "report", "report.md")
    journal.add_artifact(run_id, "report-md", "report.md")  # rewritten by a resumed run: one row
    assert [(a.kind, a.path) for a in journal.artifacts(run_id)] == [
        ("trajectory", "T300-r1/trajectory.dcd"),
        ("report-md", "report.md"),
    ]


def test_timeline_in_time_order_with_descriptions(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    plan = journal.start_step(run_id, "plan", "choose temperatures")
    journal.record_model_call(run_id, plan, _call())
    journal.finish_step(plan, "completed")
    task = journal.add_task(run_id, "T300-r1/a1", {}, "local")
    journal.update_task(task, status="failed", attempts=1, error="Particle coordinate is NaN\n  at step 4000")
    journal.add_event(run_id, "error", "T300-r1 failed:\ninstability")
    journal.start_step(run_id, "report")
    entries = journal.timeline(run_id)
    assert [(e.kind, e.status) for e in entries] == [
        ("step", "completed"), ("model", "valid"), ("task", "failed"), ("event", "error"), ("step", "running")
    ]  # fmt: skip
    assert all("\n" not in e.description for e in entries)
    assert entries[2].description.startswith("T300-r1/a1 on local · 1 attempt")
    assert entries[2].description.endswith("· Particle coordinate is NaN at step 4000")  # one line
    assert entries[1].description.startswith("plan · meta-llama")
    assert journal.timeline("no-such-run") == []


# -- secrets ---------------------------------------------------------------------------------------


def test_redact_by_key_name() -> None:
    config = {
        "api_key": "a",
        "llm": {
            "alcf": {"Authorization": "Bearer b", "accessToken": "c", "api_key_env": "ALCF_ACCESS_TOKEN"}
        },
        "clients": [{"client_secret": "d", "password": "e", "X-API-Key": "f"}],
        "max_tokens": 512,
        "prompt_tokens": 3,
        "key": "T300-r1/a1",
    }
    assert redact(config) == {
        "api_key": "[redacted]",
        "llm": {
            "alcf": {
                "Authorization": "[redacted]",
                "accessToken": "[redacted]",
                "api_key_env": "ALCF_ACCESS_TOKEN",
            }
        },
        "clients": [{"client_secret": "[redacted]", "password": "[redacted]", "X-API-Key": "[redacted]"}],
        "max_tokens": 512,
        "prompt_tokens": 3,
        "key": "T300-r1/a1",
    }
    assert redact(["x tok-123 y", ("tok-123",)], ["tok-123", ""]) == ["x [redacted] y", ["[redacted]"]]


def test_registered_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    with Journal(path) as journal:
        journal.register_secret("")  # an unset env var: ignored, not "redact everything"
        journal.register_secret(SECRET)
        run_id = journal.create_run(f"goal with {SECRET}", {"endpoint": {"headers": [f"Bearer {SECRET}"]}})
        step = journal.start_step(run_id, "plan", f"summary {SECRET}", {"note": SECRET})
        journal.finish_step(step, "failed", summary=f"401 for key {SECRET}")
        journal.record_model_call(
            run_id, step, _call(raw_reply=f"echo {SECRET}", outcome="error", error=SECRET)
        )
        task = journal.add_task(run_id, "T300", {"env": {"TOKEN": "x", "OTHER": SECRET}}, "globus")
        journal.update_task(task, status="failed", error=f"auth failed with {SECRET}")
        journal.add_event(run_id, "error", f"the key {SECRET} was refused", {"detail": [SECRET]})
        journal.set_run_status(run_id, "failed", error=f"Authorization: Bearer {SECRET}")
        run = journal.get_run(run_id)
        assert run.goal == "goal with [redacted]" and run.error == "Authorization: Bearer [redacted]"
        assert run.config == {"endpoint": {"headers": ["Bearer [redacted]"]}}
        assert journal.tasks(run_id)[0].spec == {"env": {"OTHER": "[redacted]", "TOKEN": "[redacted]"}}
        assert journal.model_calls(run_id)[0].call.raw_reply == "echo [redacted]"
        assert journal.events(run_id)[0].data == {"detail": ["[redacted]"]}
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in stored and b"[redacted]" in stored


# -- the file: schema, connections, crashes ---------------------------------------------------------


def test_schema_created_once_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ws" / JOURNAL_FILENAME  # parents are created
    with Journal(path) as journal:
        run_id = journal.create_run("goal", {})
    with Journal(path) as journal:  # reopening keeps the rows
        assert journal.get_run(run_id).goal == "goal"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {
        "runs", "steps", "model_calls", "tasks", "events", "artifacts", "endpoint_dialects", "changes",
        "sqlite_sequence",  # the change feed's AUTOINCREMENT keeps its counter there
    }  # fmt: skip
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="upgrade sciagent"):
        Journal(path)


def test_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    path.write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(UserError, match="is not a sciagent journal"):
        Journal(path)


def test_two_connections_see_each_others_commits(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    with Journal(path) as writer, Journal(path) as reader:
        run_id = writer.create_run("goal", {})
        assert reader.get_run(run_id).status == "running"
        task = reader.add_task(run_id, "T300", {}, "local")
        assert writer.find_task(run_id, "T300") is not None

        with writer.transaction():  # holds the write lock
            writer.update_task(task, status="running")
            assert reader.tasks(run_id)[0].status == "pending"  # WAL: readers see the last commit
            errors: list[BaseException] = []

            def add_event() -> None:
                try:
                    reader.add_event(run_id, "info", "waited for the lock")
                except BaseException as exc:
                    errors.append(exc)

            waiter = threading.Thread(target=add_event)
            waiter.start()
            time.sleep(0.3)
            assert waiter.is_alive()  # blocked by the busy timeout, not failed with "database is locked"
        waiter.join(timeout=10)
        assert not errors and not waiter.is_alive()
        assert writer.events(run_id)[0].message == "waited for the lock"
        assert reader.tasks(run_id)[0].status == "running"


def test_transaction_rolls_back_every_write(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    with pytest.raises(RuntimeError), journal.transaction():
        journal.add_task(run_id, "T300", {}, "local")
        journal.add_event(run_id, "info", "submitted T300")
        raise RuntimeError("crash between the writes")
    assert journal.tasks(run_id) == [] and journal.events(run_id) == []

    with journal.transaction():  # a nested block that fails undoes only its own writes
        journal.add_task(run_id, "T300", {}, "local")
        with pytest.raises(ValueError, match="already has a task"), journal.transaction():
            journal.add_event(run_id, "info", "about to submit T300 again")
            journal.add_task(run_id, "T300", {}, "local")
        journal.add_event(run_id, "info", "T300 submitted once")
    assert [t.key for t in journal.tasks(run_id)] == ["T300"]
    assert [e.message for e in journal.events(run_id)] == ["T300 submitted once"]


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sciagent.agent.journal import Journal

    journal = Journal(Path(sys.argv[1]))
    run_id = journal.create_run("crash test", {"replicas": 10_000})
    i = 0
    while True:
        with journal.transaction():  # a task, its start, its event and its artifact: all or nothing
            key = f"T300-r{i}/a1"
            task = journal.add_task(run_id, key, {"replica": i, "padding": "x" * 2000}, "local")
            journal.update_task(task, status="running", attempts=1)
            journal.add_event(run_id, "info", f"submitted {key}", {"key": key})
            journal.add_artifact(run_id, "checkpoint", f"{key}/checkpoint.chk")
        i += 1
        if i == 20:
            print("ready", flush=True)
    """
)


def test_sigkill_mid_write_leaves_a_consistent_journal(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    for delay in (0.05, 0.13, 0.21):  # three kills at different moments, each recovering the last
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL

    with Journal(path) as journal:
        assert journal._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert journal._conn.execute("PRAGMA foreign_key_check").fetchall() == []
        runs = journal.list_runs()
        assert len(runs) == 3 and all(run.status == "running" for run in runs)
        for run in runs:
            tasks, events, artifacts = (
                journal.tasks(run.id),
                journal.events(run.id),
                journal.artifacts(run.id),
            )
            assert len(tasks) >= 20
            assert len(tasks) == len(events) == len(artifacts)  # no half-written transaction
            assert {t.key for t in tasks} == {e.data["key"] for e in events}
            assert all(t.status == "running" and t.started_at and t.attempts == 1 for t in tasks)
            assert all(t.spec["padding"] == "x" * 2000 for t in tasks)
        journal.set_run_status(runs[0].id, "interrupted")  # and it is writable again
        assert journal.get_run(runs[0].id).status == "interrupted"


# -- tables for the CLI ----------------------------------------------------------------------------


def test_runs_and_timeline_tables(journal: Journal) -> None:
    run_id = journal.create_run("is villin stable at 300 K?", {})
    step = journal.start_step(run_id, "plan", "choose temperatures")
    journal.record_model_call(run_id, step, _call())
    journal.finish_step(step, "completed")
    done = journal.add_task(run_id, "T300-r1/a1", {}, "local")
    journal.update_task(done, status="completed", attempts=1)
    failed = journal.add_task(run_id, "T350-r1/a1", {}, "local")
    journal.update_task(failed, status="failed", attempts=2, error="NaN")
    journal.set_run_status(run_id, "completed")

    runs = _render(runs_table(journal))
    assert run_id in runs and "completed" in runs and "1/2 (1 failed)" in runs and "villin" in runs
    timeline = _render(timeline_table(journal, run_id[:-1]))
    for text in (
        "plan: choose temperatures",
        "120+30 tokens",
        "1.25 s",
        "valid",
        "T350-r1/a1 on local · 2 attempts",
    ):
        assert text in timeline, timeline
    with pytest.raises(UserError, match="no run"):
        timeline_table(journal, "nope")


# -- model calls that never happened -----------------------------------------------------------------


def _unanswered(outcome: str, error: str, attempt: int = 1) -> ModelCall:
    """A call with no response, as the advisor records a fallback or a failed request."""
    return _call(
        outcome=outcome,
        error=error,
        attempt=attempt,
        latency_s=None,
        prompt_tokens=None,
        completion_tokens=None,
        raw_reply="",
    )


def test_unknown_latency_and_tokens_are_stored_as_null_and_shown_as_unknown(journal: Journal) -> None:
    run_id = journal.create_run("goal", {})
    step = journal.start_step(run_id, "plan", "choose temperatures")
    journal.record_model_call(run_id, step, _call(outcome="invalid", error="not JSON"))
    journal.record_model_call(run_id, step, _unanswered("fallback", "no valid answer after 3 attempts", 4))
    journal.record_model_call(run_id, None, _unanswered("error", "the model could not be asked: 401"))
    _, fallback, error = journal.model_calls(run_id)
    assert (fallback.call.latency_s, fallback.call.prompt_tokens, fallback.call.completion_tokens) == (
        None, None, None
    )  # fmt: skip
    with sqlite3.connect(journal.path) as conn:  # NULL in the file, not 0
        stored = conn.execute("SELECT latency_s, prompt_tokens FROM model_calls ORDER BY id").fetchall()
    assert stored == [(1.25, 120), (None, None), (None, None)]
    assert fallback.describe() == "plan · fallback: no model call · no valid answer after 3 attempts"
    assert "latency unknown · tokens unknown · attempt 1 · the model could not be asked" in error.describe()
    timeline = _render(timeline_table(journal, run_id))
    assert "fallback: no model call" in timeline and "latency unknown · tokens unknown" in timeline
    assert "1.25 s · 120+30 tokens" in timeline  # the call that did happen keeps its numbers
    assert "0.00 s" not in timeline and "0+0 tokens" not in timeline
    with pytest.raises(ValueError, match="cannot be negative"):
        _call(latency_s=-1.0)


# The model_calls table as schema version 1 created it (latency_s NOT NULL): files in the wild have it.
_V1_MODEL_CALLS = """
CREATE TABLE model_calls (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    step_id INTEGER REFERENCES steps(id),
    purpose TEXT NOT NULL,
    model_id TEXT NOT NULL,
    prompt_digest TEXT NOT NULL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    raw_reply TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('valid', 'invalid', 'fallback', 'error')),
    error TEXT,
    attempt INTEGER NOT NULL,
    created_at TEXT NOT NULL
)
"""


def _drop_change_feed(conn: sqlite3.Connection) -> None:
    """Take version 5's change feed (its table and triggers) out of a file, as every older file is."""
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE changes")


def _version_1_file(path: Path) -> str:
    """A journal as sciagent wrote it at schema version 1, with a real call and a fallback (0 s, 0+0)."""
    with Journal(path) as journal:
        run_id = journal.create_run("goal", {})
    conn = sqlite3.connect(path)
    _drop_change_feed(conn)
    conn.execute("DROP TABLE model_calls")
    conn.execute(_V1_MODEL_CALLS)
    conn.execute("CREATE INDEX model_calls_by_run ON model_calls (run_id)")
    conn.execute("DROP TABLE endpoint_dialects")  # version 3's
    first, second = "2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00"
    rows = [
        (run_id, "plan", "m", "d", 1.25, 120, 30, "{}", "invalid", "not JSON", 1, first),
        (run_id, "plan", "m", "d", 0.0, 0, 0, "", "fallback", "no valid answer", 2, second),
    ]
    conn.executemany(
        "INSERT INTO model_calls (run_id, purpose, model_id, prompt_digest, latency_s, prompt_tokens,"
        " completion_tokens, raw_reply, outcome, error, attempt, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):  # what the old schema refuses
        conn.execute("UPDATE model_calls SET latency_s = NULL")
    conn.close()
    return run_id


def test_a_version_1_journal_is_migrated_and_takes_unknown_latencies(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    run_id = _version_1_file(path)
    with Journal(path) as journal:
        invalid, fallback = journal.model_calls(run_id)
        assert (invalid.call.latency_s, invalid.call.prompt_tokens) == (1.25, 120)
        assert (fallback.call.latency_s, fallback.call.prompt_tokens) == (None, None)  # never measured
        journal.record_model_call(run_id, None, _unanswered("error", "timed out"))
        assert journal.model_calls(run_id)[-1].call.latency_s is None
        timeline = _render(timeline_table(journal, run_id))
    assert "fallback: no model call" in timeline and "0.00 s" not in timeline
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "model_calls_by_run" in indexes
    conn.close()
    with Journal(path) as journal:  # opening it again migrates nothing twice
        assert len(journal.model_calls(run_id)) == 3
        journal.remember_dialect("http://127.0.0.1:8080/v1", "m", "json_object")  # version 3's table


_V3_RUNS = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    goal TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
)
"""


def test_a_version_3_journal_is_migrated_to_take_queued_runs_keeping_every_reference(tmp_path: Path) -> None:
    """Version 3's runs table refuses 'queued'; the migration rebuilds it under the rows that point at it."""
    path = tmp_path / JOURNAL_FILENAME
    with Journal(path) as journal:
        run_id = journal.create_run("goal", {"k": 1})
        journal.add_event(run_id, "info", "before the migration")
        journal.record_step(run_id, "plan", "planned", {})
    conn = sqlite3.connect(path)
    _drop_change_feed(conn)
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA legacy_alter_table=ON")  # the other tables go on naming `runs`
    conn.execute("ALTER TABLE runs RENAME TO runs_new")  # keep the rows, then put version 3's table back
    conn.execute(_V3_RUNS)
    conn.execute("INSERT INTO runs SELECT * FROM runs_new")
    conn.execute("DROP TABLE runs_new")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # what version 3 refuses
        conn.execute("UPDATE runs SET status = 'queued'")
    conn.close()
    with Journal(path) as journal:
        journal.set_run_status(run_id, "queued")
        assert journal.get_run(run_id).status == "queued" and journal.get_run(run_id).config == {"k": 1}
        assert [e.message for e in journal.events(run_id)] == ["before the migration"]
        assert [s.kind for s in journal.steps(run_id)] == ["plan"]
        journal.add_event(run_id, "info", "after")  # the references resolve to the rebuilt table
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # and still guard
            journal.add_event("no-such-run", "info", "orphan")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "runs_by_time" in {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()


def test_a_version_4_journal_gains_the_change_feed_keeping_every_row(tmp_path: Path) -> None:
    """A file made with version 4's tables (version 5 added only the feed) and rows written with plain SQL."""
    path = tmp_path / JOURNAL_FILENAME
    conn = sqlite3.connect(path)
    for statement in (s for s in SCHEMA.split(";") if s.strip()):  # the tables, as version 4 made them
        conn.execute(statement)
    at = "2026-01-01T00:00:00+00:00"
    conn.execute("INSERT INTO runs VALUES ('r4', 'goal', '{}', 'queued', NULL, ?, ?, NULL)", (at, at))
    conn.execute("INSERT INTO steps VALUES (1, 'r4', 'plan', 'completed', 'planned', '{}', ?, ?)", (at, at))
    conn.execute(
        "INSERT INTO tasks (run_id, key, spec, executor, status, created_at, updated_at)"
        " VALUES ('r4', 'T300', '{}', 'local', 'failed', ?, ?)", (at, at),
    )  # fmt: skip
    conn.execute("INSERT INTO events VALUES (1, 'r4', 'info', 'old event', '{\"kind\": \"x\"}', ?)", (at,))
    conn.execute("INSERT INTO artifacts VALUES (1, 'r4', 'report', 'report.html', ?)", (at,))
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    with Journal(path) as journal:
        assert journal.get_run("r4").status == "queued"
        assert [s.summary for s in journal.steps("r4")] == ["planned"]
        assert [(t.key, t.status) for t in journal.tasks("r4")] == [("T300", "failed")]
        assert [e.message for e in journal.events("r4")] == ["old event"]
        assert [a.path for a in journal.artifacts("r4")] == ["report.html"]
        assert journal.latest_change() == 0  # rows older than the feed have no change
        journal.add_event("r4", "info", "new event")
        journal.set_run_status("r4", "running")
        changes = journal.changes_after(0)
        assert [(c.seq, c.table) for c in changes] == [(1, "events"), (2, "runs")]
        assert changes[1].row is not None and changes[1].row.status == "running"  # type: ignore[union-attr]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    triggers = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert len(triggers) == 12  # insert and update, on six tables
    conn.close()


def test_the_change_feed_numbers_every_write_with_the_row_as_it_is_now(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILENAME) as journal:
        run_id = journal.create_run("goal", {})
        other = journal.create_run("other", {})
        step = journal.start_step(run_id, "plan")
        cursor = journal.latest_change()
        journal.finish_step(step, "completed", "planned")  # an update in place is a change too
        task = journal.add_task(run_id, "T300", {}, "local")
        journal.update_task(task, status="running")
        journal.add_event(other, "info", "elsewhere")
        mine = journal.changes_after(cursor, run_id)
        assert [(c.table, c.row_id) for c in mine] == [("steps", str(step)), *[("tasks", str(task))] * 2]
        assert mine[0].row.status == "completed" and mine[1].row.status == "running"  # type: ignore[union-attr]
        assert [c.seq for c in mine] == sorted(c.seq for c in mine) and mine[0].seq == cursor + 1
        assert len(journal.changes_after(cursor)) == 4 and len(journal.changes_after(cursor, limit=2)) == 2
        assert journal.changed_runs_after(cursor) == [(run_id, cursor + 3), (other, cursor + 4)]
        assert journal.latest_change() == cursor + 4


def test_the_style_an_endpoint_answered_in_is_remembered_per_endpoint_and_model(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    url = "http://127.0.0.1:8080/v1"
    with Journal(path) as journal:
        assert journal.known_dialect(url, "m") is None
        journal.remember_dialect(url, "m", "json_object")
        journal.remember_dialect(url, "m", "prompt")  # the newest answer wins
        journal.remember_dialect(url, "other", "json_schema")
    with Journal(path) as journal:  # a later session
        assert journal.known_dialect(url, "m") == "prompt"
        assert journal.known_dialect(url, "other") == "json_schema"
        assert journal.known_dialect("http://elsewhere/v1", "m") is None
        with pytest.raises(sqlite3.IntegrityError):
            journal.remember_dialect(url, "m", "yaml")
