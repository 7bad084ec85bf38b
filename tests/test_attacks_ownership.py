"""One owner per run (issue 20, item 8): attacks on a run that a live process works on, each with its control.

Everything runs as real ``sciagent`` processes against the scripted OpenAI-protocol server
(tests/openai_server.py). A process is kept "live" inside a tool call by the model: the session calls
``create_agent`` and the sub-agent's model request is held open by the server until the test lets it
go, so the parent's ``create_agent`` step is ``running`` in the journal for as long as the test needs,
with no simulation to wait for. The same holds a study inside its ``plan`` step.

Attacks and outcomes:
- a second ``sciagent resume`` of a live session: refused in one line naming the owner's pid and host,
  exit 2, nothing written (every journal row as it was), no model request; ``tell`` still works and
  ``sciagent runs`` names the owner. Control: what a resume does first, without taking ownership
  (``SessionJournal.load``), closes the live process's step as interrupted.
- a second ``sciagent resume`` of a live study: refused the same way. Control: ``close_open_steps`` from a
  second process closes the live ``plan`` step.
- an owner killed with SIGKILL (its unreleased record still in the journal) does not block the next
  resume, which takes over and resumes the sub-agent that the dead process had started.
- an owner recorded on another host that never released the run (flock cannot be trusted across nodes):
  refused naming that host; ``--takeover`` goes on. Control: this host's lock is free, so the lock alone
  would have let the second resume in.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from openai_server import OpenAIServer, RecordedRequest, Reply, text_reply, tool_call_reply
from scripted_plans import villin_plan

pytestmark = pytest.mark.timeout(300)
SUB_AGENT = {
    "name": "describer",
    "task": "Describe villin in one sentence.",
    "instructions": "Answer in one sentence.",
    "tools": ["structure_info"],
}
TOLD = "Keep the answer short."
JOURNAL_TABLES = ("runs", "steps", "tasks", "events", "model_calls")


def _workspace(tmp_path: Path, url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\ntimeout_s = 300\n'
    )
    return tmp_path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sciagent", *args]


def _sciagent(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args), cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _command(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def _rows(cwd: Path, sql: str) -> list[tuple]:
    path = cwd / "sciagent-runs" / "journal.sqlite"
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(path)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []


def _journal(cwd: Path) -> dict[str, list[tuple]]:
    """Every row of every table that a run's work writes."""
    return {table: _rows(cwd, f"SELECT * FROM {table} ORDER BY 1") for table in JOURNAL_TABLES}


def _steps(cwd: Path, kind: str) -> list[tuple[str, str, str]]:
    """(status, summary, data) of the run steps of ``kind``, oldest first."""
    return _rows(cwd, f"SELECT status, summary, data FROM steps WHERE kind = '{kind}' ORDER BY id")


def _live_call(cwd: Path, tool: str) -> bool:
    return any(
        status == "running" and json.loads(data).get("call", {}).get("tool") == tool
        for status, _, data in _steps(cwd, "tool_call")
    )


def _wait_for(probe: Callable[[], object], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if probe():
            return
        assert process.poll() is None, f"it ended before {what}: {process.communicate()}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} in time")


def _sub_agent_waits(cwd: Path, server: OpenAIServer) -> Callable[[], bool]:
    """Whether the parent's create_agent step is live and its sub-agent's request is held at the server."""

    def probe() -> bool:
        held = any(_is_sub_agent(request) for request in server.chat_requests())
        return held and _live_call(cwd, "create_agent")

    return probe


def _is_sub_agent(request: RecordedRequest) -> bool:
    return "You are the sub-agent" in str(request.body["messages"][0]["content"])


def _holding_the_sub_agent(release: threading.Event) -> Callable[[RecordedRequest], Reply]:
    """The model: the sub-agent's request waits until ``release`` (the parent's create_agent step stays
    live meanwhile), then every request is answered in words."""

    def reply(request: RecordedRequest) -> Reply:
        if _is_sub_agent(request):
            release.wait(120)
            return text_reply("Villin is a small protein.")
        return text_reply("Villin is a small protein, as the sub-agent found.")

    return reply


def _one_line(completed: subprocess.CompletedProcess[str]) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr
    return lines[0]


def test_a_second_resume_of_a_live_session_is_refused_before_it_touches_anything(tmp_path: Path) -> None:
    """The first resume is inside its create_agent call; the second is refused and writes nothing;
    ``runs`` names the owner; ``tell`` reaches the owner, which answers with its call never closed."""
    release = threading.Event()
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.script(text_reply("Villin is a small protein."))
        asked = _sciagent(cwd, "ask", "Describe villin.", "--llm", "scripted", "--json")
        session = json.loads(asked.stdout.splitlines()[-1])["session_id"]
        server.script(tool_call_reply("create_agent", SUB_AGENT))
        server.respond(_holding_the_sub_agent(release))
        first = _start(cwd, "resume", session, "--llm", "scripted", "--approve-all", "--json")
        try:
            _wait_for(_sub_agent_waits(cwd, server), first, "the live create_agent call")
            before, requests = _journal(cwd), len(server.chat_requests())
            second = _sciagent(cwd, "resume", session, "--llm", "scripted", "--approve-all")
            after, asked_meanwhile = _journal(cwd), len(server.chat_requests())
            listed = _sciagent(cwd, "runs")
            told = _sciagent(cwd, "tell", session, TOLD)  # tell needs no ownership
            assert first.poll() is None
            release.set()
            stdout, stderr = first.communicate(timeout=120)
        finally:
            release.set()
            first.kill()
    line = _one_line(second)
    assert second.returncode == 2
    assert line.startswith(f"error: session {session} is running in process {first.pid} on host ")
    assert socket.gethostname() in line and line.endswith("wait for it or stop it")
    assert after == before  # no step closed, no status changed, no event added
    assert asked_meanwhile == requests  # and it asked the model nothing
    assert "(pid" in listed.stdout and str(first.pid) in listed.stdout, listed.stdout  # rich may wrap it
    assert told.returncode == 0, told.stderr

    assert first.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["status"] == "answered"
    assert [status for status, _, _ in _steps(cwd, "tool_call")] == ["completed"]  # its call, never closed
    last = server.chat_requests()[-1].body["messages"]
    assert last[-1] == {"role": "user", "content": f"A message from the user while you work: {TOLD}"}
    assert _owners(cwd, session)[-2:] == [("owner", first.pid), ("released", first.pid)]


def _owners(cwd: Path, run_id: str) -> list[tuple[str, int]]:
    """The run's ownership events: (owner or released, pid), oldest first."""
    rows = _rows(cwd, f"SELECT data FROM events WHERE run_id = '{run_id}'")
    events = [json.loads(data) for (data,) in rows]
    return [(e["kind"], e["pid"]) for e in events if e.get("kind") in ("owner", "released")]


def _top_session(cwd: Path) -> str:
    (run_id,) = _rows(cwd, "SELECT id FROM runs WHERE json_extract(config, '$.parent') IS NULL")[0]
    return run_id


# What `sciagent resume` does once it owns a session (and the study's resume once it owns the study):
# the lower-level primitive, run from a second process without taking ownership.
LOAD_WITHOUT_OWNING = """
import sys
from sciagent.agent.journal import Journal
from sciagent.agent.session import SessionJournal
with Journal.in_workspace(sys.argv[1]) as journal:
    SessionJournal.open(journal, sys.argv[2]).load()
"""
CLOSE_WITHOUT_OWNING = """
import sys
from sciagent.agent.journal import Journal
with Journal.in_workspace(sys.argv[1]) as journal:
    journal.close_open_steps(sys.argv[2], "interrupted: the process stopped before this step finished")
"""


def _without_owning(script: str, cwd: Path, run_id: str) -> None:
    done = subprocess.run([sys.executable, "-c", script, str(cwd / "sciagent-runs"), run_id],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_control_a_resume_without_ownership_closes_the_live_sessions_step(tmp_path: Path) -> None:
    release = threading.Event()
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.script(tool_call_reply("create_agent", SUB_AGENT))
        server.respond(_holding_the_sub_agent(release))
        live = _start(cwd, "ask", "Describe villin.", "--llm", "scripted", "--approve-all", "--json")
        try:
            _wait_for(_sub_agent_waits(cwd, server), live, "the live create_agent call")
            _without_owning(LOAD_WITHOUT_OWNING, cwd, _top_session(cwd))
            closed = _steps(cwd, "tool_call")
            alive = live.poll() is None
        finally:
            live.kill()
            release.set()
    assert alive  # the process was still working on that call ...
    assert [(status, summary) for status, summary, _ in closed] == [
        ("failed", "interrupted: the process ended before this call finished (resume runs it again)")
    ]  # ... and a second process closed it under its feet


def test_an_owner_killed_with_sigkill_does_not_block_the_next_resume(tmp_path: Path) -> None:
    """The dead owner's record was never released (and its lock file is still there); the next resume
    takes over and resumes the sub-agent the dead process had started, in its own process."""
    release = threading.Event()
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.script(tool_call_reply("create_agent", SUB_AGENT))
        server.respond(_holding_the_sub_agent(release))
        killed = _start(cwd, "ask", "Describe villin.", "--llm", "scripted", "--approve-all", "--json")
        try:
            _wait_for(_sub_agent_waits(cwd, server), killed, "the live create_agent call")
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
        finally:
            killed.kill()
            release.set()
        session = _top_session(cwd)
        stale = _owners(cwd, session)
        resumed = _sciagent(cwd, "resume", session, "--llm", "scripted", "--approve-all", "--json")
    assert stale == [("owner", killed.pid)]  # never released: taken at its word, it would block
    assert (cwd / "sciagent-runs" / "locks" / f"{session}.lock").exists()
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1])["status"] == "answered"
    kinds = [kind for kind, _ in _owners(cwd, session)]
    assert kinds == ["owner", "owner", "released"]
    messages = [m for (m,) in _rows(cwd, f"SELECT message FROM events WHERE run_id = '{session}'")]
    assert any(f"taken over from process {killed.pid}" in message for message in messages), messages
    children = _rows(cwd, f"SELECT status FROM runs WHERE json_extract(config, '$.parent') = '{session}'")
    assert children == [("completed",)]  # the same sub-agent, resumed by its parent's new owner


PLAN = villin_plan(rationale="A cheap plan.")


def test_a_second_resume_of_a_live_study_is_refused_and_without_ownership_its_step_is_closed(
    tmp_path: Path,
) -> None:
    """A study killed while the model plans it; resumed, and held in its plan step; a second resume is
    refused. Control: closing open steps from a second process closes the live plan step."""
    release = threading.Event()

    def plan(request: RecordedRequest) -> Reply:
        release.wait(120)
        return text_reply(json.dumps(PLAN))

    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.respond(plan)
        killed = _start(cwd, "run", "--llm", "scripted", "--budget", "60s", "--json")
        try:
            _wait_for(lambda: server.chat_requests(), killed, "the plan request")
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
        finally:
            killed.kill()
        (run_id,) = _rows(cwd, "SELECT id FROM runs")[0]
        first = _start(cwd, "resume", run_id, "--json")
        try:
            _wait_for(lambda: len(server.chat_requests()) == 2, first, "the resumed plan request")
            before = _journal(cwd)
            second = _sciagent(cwd, "resume", run_id)
            after, asked = _journal(cwd), len(server.chat_requests())
            live_plan = [status for status, _, _ in _steps(cwd, "plan")]
            _without_owning(CLOSE_WITHOUT_OWNING, cwd, run_id)
            closed_plan = [status for status, _, _ in _steps(cwd, "plan")]
            alive = first.poll() is None
        finally:
            first.kill()
            release.set()
    line = _one_line(second)
    assert second.returncode == 2
    assert line.startswith(f"error: study {run_id} is running in process {first.pid} on host ")
    assert after == before and asked == 2  # nothing written, nothing asked
    assert live_plan == ["failed", "running"]  # the killed run's plan step, and the first resume's, live
    assert alive and closed_plan == ["failed", "failed"]  # control: without ownership, closed while it runs


def _on_another_host(*args: str) -> list[str]:
    """``sciagent ARGS`` as a process of host ``login2``: its own UTS namespace, as another login node."""
    for unshare in (["unshare", "--uts"], ["unshare", "-r", "--uts"]):
        probe = subprocess.run([*unshare, "true"], capture_output=True)
        if probe.returncode == 0:
            return [*unshare, "sh", "-c", 'hostname login2 && exec "$0" "$@"', *_command(*args)]
    pytest.skip("no UTS namespace here (unshare --uts) to stand for another host")


def test_an_owner_on_another_host_is_refused_by_name_unless_taken_over(tmp_path: Path) -> None:
    release = threading.Event()

    def reply(request: RecordedRequest) -> Reply:
        release.wait(120)
        return text_reply("Villin is a small protein.")

    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url)
        server.respond(reply)
        command = _on_another_host("ask", "Describe villin.", "--llm", "scripted", "--json")
        elsewhere = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)  # fmt: skip
        try:
            _wait_for(lambda: server.chat_requests(), elsewhere, "the model request from login2")
            session = _top_session(cwd)
            ((_, pid),) = _owners(cwd, session)
            os.kill(pid, signal.SIGKILL)  # that node went down: its record stays, its lock is gone
            elsewhere.wait(timeout=30)
        finally:
            elsewhere.kill()
            release.set()
        before = _journal(cwd)
        refused = _sciagent(cwd, "resume", session, "--llm", "scripted")
        after = _journal(cwd)
        with open(cwd / "sciagent-runs" / "locks" / f"{session}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # control: the lock alone would let it in
        taken = _sciagent(cwd, "resume", session, "--llm", "scripted", "--takeover", "--json")
    line = _one_line(refused)
    assert refused.returncode == 2 and after == before
    assert f"session {session} is held by process {pid} on host login2" in line
    assert f"this is host {socket.gethostname()}" in line and line.endswith("run this again with --takeover")
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout.splitlines()[-1])["status"] == "answered"
    assert [kind for kind, _ in _owners(cwd, session)] == ["owner", "owner", "released"]
