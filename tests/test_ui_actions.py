"""The web UI's actions on real running work: approve, tell, cancel a task, stop a study.

Each action is called as the UI server calls it, against a real ``sciagent ask`` or ``sciagent run``
process that shares the workspace journal; the model is the scripted OpenAI-protocol server
(tests/openai_server.py) and the loop, the task board, the study and OpenMM are the real code. Each
test has its control: the same work without the action, or the lower-level call the action refuses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openai_server import OpenAIServer, slow_reply, text_reply, tool_call_reply
from sciagent.agent.approvals import answer_request
from sciagent.agent.journal import Journal
from sciagent.agent.session import SessionJournal
from sciagent.errors import UserError
from sciagent.tools.approval import Verdict
from sciagent.ui import actions
from scripted_plans import villin_plan

pytestmark = pytest.mark.timeout(300)
BY = "web UI (tester@login1)"
ASK_FIRST = '[[approval.rules]]\ntool = "structure_info"\ndecision = "ask"\n'
SIMULATION = {"structure": "villin", "length_ps": 3, "timestep_fs": 4}  # 75 + 750 steps, a row per 7
LAST_ROW_STEP = 824  # the last report step: 75 + 7 x 107
PLAN = villin_plan(production_ps=10, rationale="300 K against 400 K.")


def _workspace(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\ntimeout_s = 30\n'
        f"[study]\nextensions = 0\n{extra}"
    )
    return tmp_path


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sciagent", *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _journal(cwd: Path) -> Journal:
    return Journal.in_workspace(cwd / "sciagent-runs")


def _until(what: str, ready: Callable[[], object], process: subprocess.Popen[str], timeout_s: float = 90):
    """Poll ``ready()`` until it gives something truthy; fail if the process ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := ready():
            return value
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def _only_run(cwd: Path) -> str | None:
    if not (cwd / "sciagent-runs" / "journal.sqlite").exists():
        return None
    with _journal(cwd) as journal:
        runs = journal.list_runs()
        return runs[0].id if runs else None


def _events(cwd: Path, run_id: str, kind: str) -> list[dict]:
    with _journal(cwd) as journal:
        return [event.data for event in journal.events(run_id) if event.data.get("kind") == kind]


def _finished(process: subprocess.Popen[str], timeout_s: float = 120) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout_s)
    finally:
        process.kill()


def test_approve_from_the_ui_lets_a_waiting_session_go_on(tmp_path: Path, openai_server) -> None:
    """The session waits (no terminal, --wait-for-approval) until the UI answers; approved, the call
    runs; declined with a reason, it is refused with that reason. Answering again is refused, naming
    who answered; the control is the journal's own answer_request, which takes a second answer."""
    openai_server.script(
        tool_call_reply("structure_info", {"structure": "villin"}),
        tool_call_reply("structure_info", {"structure": "1UBQ"}),
        text_reply("Done."),
    )
    cwd = _workspace(tmp_path, openai_server.base_url, ASK_FIRST)
    session = _start(cwd, "ask", "Atoms?", "--llm", "scripted", "--json", "--wait-for-approval", "2m")
    try:
        run_id = _until("a run", lambda: _only_run(cwd), session)
        answers = []
        for n, approve in enumerate((True, False)):
            requests = _until("a request", lambda n=n: _events(cwd, run_id, "approval_request")[n:], session)
            with _journal(cwd) as journal:
                with pytest.raises(UserError, match=f"run {run_id} has no approval request a-nothing"):
                    actions.approve(journal, run_id, "a-nothing", approve=True, by=BY)
                reason = "" if approve else "not this one: 1UBQ is not what I asked about"
                event = actions.approve(
                    journal, run_id, requests[0]["request"], approve=approve, reason=reason, by=BY
                )
                answers.append((requests[0]["request"], event))
        out, err = _finished(session)
    finally:
        session.kill()
    approved, declined = json.loads(out.splitlines()[-1])["tool_calls"]
    assert approved["status"] == "ok" and approved["result"]["total_atoms"] == 582, err
    assert (
        declined["status"] == "refused"
        and "not this one: 1UBQ is not what I asked about" in declined["error"]
    )
    recorded = _events(cwd, run_id, "approval_answer")
    assert [(a["by"], a["approved"]) for a in recorded] == [(BY, True), (BY, False)]
    with _journal(cwd) as journal:
        assert [
            event.id for event in journal.events(run_id) if event.data.get("kind") == "approval_answer"
        ] == [event for _, event in answers]
        first = answers[0][0]
        with pytest.raises(
            UserError, match=f"request {first} of run {run_id} was already approved by {re.escape(BY)}"
        ):
            actions.approve(journal, run_id, first, approve=False, by="web UI (someone@else)")
        # control: the journal itself keeps a second answer (ignored), so the refusal is the UI's
        answer_request(journal, run_id, first, Verdict(False, "someone@else"))
    assert len(_events(cwd, run_id, "approval_answer")) == 3


def test_tell_from_the_ui_reaches_the_next_model_call(tmp_path: Path, openai_server) -> None:
    """Told while the session's first model call is answered: the next request carries the message.
    A finished session, an empty or over-long message are refused; the control is the session
    journal's own tell, which would write the same message to the finished session."""
    told = "Use pH 5 for everything from now on."
    openai_server.script(slow_reply(4, tool_call_reply("structure_info", {"structure": "villin"})))
    openai_server.respond(lambda request: text_reply("Done at pH 5."))
    cwd = _workspace(tmp_path, openai_server.base_url)
    session = _start(cwd, "ask", "Atoms?", "--llm", "scripted", "--json")
    try:
        run_id = _until(
            "the first model call", lambda: openai_server.chat_requests() and _only_run(cwd), session
        )
        with _journal(cwd) as journal:
            for text, problem in (
                ("  ", "the message is empty"),
                ("x" * 4001, "4,001 characters, over 4,000"),
            ):
                with pytest.raises(UserError, match=problem):
                    actions.tell(journal, run_id, text, by=BY)
            event = actions.tell(journal, run_id, told, by=BY)
        _, err = _finished(session)
    finally:
        session.kill()
    assert session.returncode == 0, err
    first, second = openai_server.chat_requests()
    assert f"A message from the user while you work: {told}" not in json.dumps(first.body)
    assert {"role": "user", "content": f"A message from the user while you work: {told}"} in second.body[
        "messages"
    ]
    with _journal(cwd) as journal:
        (tell,) = [e for e in journal.events(run_id) if e.data.get("kind") == "tell"]
        assert tell.id == event and tell.data == {"kind": "tell", "text": told, "by": BY}
        with pytest.raises(UserError, match=f"run {run_id} has completed: it cannot be told"):
            actions.tell(journal, run_id, "one more thing", by=BY)
        SessionJournal.open(journal, run_id).tell("one more thing")  # control: nothing below refuses it
    assert len(_events(cwd, run_id, "tell")) == 2


def _simulating_session(
    tmp_path: Path, server: OpenAIServer, answer_after_s: float = 0
) -> tuple[Path, subprocess.Popen[str]]:
    """A session that starts a short real simulation, waits for it (up to 120 s), then answers."""
    server.script(
        tool_call_reply("simulate", SIMULATION),
        tool_call_reply("wait_for_task", {"task_id": "sim-1", "timeout_s": 120}),
    )
    server.respond(lambda request: slow_reply(answer_after_s, text_reply("Done.")))
    cwd = _workspace(tmp_path, server.base_url)
    return cwd, _start(cwd, "ask", "Simulate villin.", "--llm", "scripted", "--json", "--approve-all")


def _rows(cwd: Path) -> list[str]:
    found = list((cwd / "sciagent-runs" / "sessions").glob("*/runs/sim-1/state.csv"))
    return found[0].read_text().splitlines()[1:] if found else []


def test_cancel_from_the_ui_ends_a_running_session_task(tmp_path: Path, openai_server) -> None:
    """The session honours the cancel_request event while wait_for_task waits: the simulation stops
    mid-run, the task row is cancelled, a task_cancelled event answers, and the model sees it."""
    cwd, session = _simulating_session(tmp_path, openai_server)
    try:
        run_id = _until("a simulation row", lambda: _rows(cwd) and _only_run(cwd), session)
        workspace = cwd / "sciagent-runs"
        with _journal(cwd) as journal:
            with pytest.raises(
                UserError, match=f"session {run_id} has no task 'sim-9' \\(its tasks: sim-1\\)"
            ):
                actions.cancel_task(journal, workspace, run_id, "sim-9", by=BY)
            event = actions.cancel_task(journal, workspace, run_id, "sim-1", by=BY)
            with pytest.raises(
                UserError, match=f"a cancel of task sim-1 was already asked by {re.escape(BY)}"
            ):
                actions.cancel_task(journal, workspace, run_id, "sim-1", by=BY)
        asked = time.monotonic()
        out, err = _finished(session)
        took = time.monotonic() - asked
    finally:
        session.kill()
    assert session.returncode == 0, err
    _, wait = json.loads(out.splitlines()[-1])["tool_calls"]
    assert wait["status"] == "ok" and wait["result"]["state"] == "cancelled" and took < 30
    last_step = int(_rows(cwd)[-1].split(",")[1])
    assert last_step < LAST_ROW_STEP  # stopped mid-run
    (answer,) = _events(cwd, run_id, "task_cancelled")
    assert answer == {"kind": "task_cancelled", "request": event, "task": "sim-1", "cancelled": True}
    with _journal(cwd) as journal:
        (task,) = journal.tasks(run_id)
        assert task.status == "cancelled" and task.error == f"cancelled by {BY}"
        with pytest.raises(UserError, match="has completed"):
            actions.cancel_task(journal, workspace, run_id, "sim-1", by=BY)
    third = openai_server.chat_requests()[2]
    assert '"state": "cancelled"' in third.body["messages"][-1]["content"]


def test_without_a_cancel_the_same_session_task_runs_to_completion(tmp_path: Path, openai_server) -> None:
    """The control of the test above: the same session, no cancel_request event. Its model answers 4 s
    after the task ends: a cancel then is refused, the task having finished."""
    cwd, session = _simulating_session(tmp_path, openai_server, answer_after_s=4)
    try:
        run_id = _until("a simulation row", lambda: _rows(cwd) and _only_run(cwd), session)
        _until("the last model call", lambda: len(openai_server.chat_requests()) == 3, session)
        with (
            _journal(cwd) as journal,
            pytest.raises(UserError, match=r"task sim-1 of session \S+ has already ended \(completed\)"),
        ):
            actions.cancel_task(journal, cwd / "sciagent-runs", run_id, "sim-1", by=BY)
        out, err = _finished(session)
    finally:
        session.kill()
    _, wait = json.loads(out.splitlines()[-1])["tool_calls"]
    assert wait["result"]["state"] == "completed", err
    assert int(_rows(cwd)[-1].split(",")[1]) == LAST_ROW_STEP
    assert _events(cwd, run_id, "task_cancelled") == []


def _study(tmp_path: Path, server: OpenAIServer) -> tuple[Path, subprocess.Popen[str]]:
    """``sciagent run`` whose plan comes back after 4 s: time for the UI to act while it is asked for."""
    server.script(slow_reply(4, text_reply(json.dumps(PLAN))))
    cwd = _workspace(tmp_path, server.base_url)
    return cwd, _start(cwd, "run", "--llm", "scripted", "--budget", "150s")


def _planning(cwd: Path) -> str | None:
    run_id = _only_run(cwd)
    if run_id is None:
        return None
    with _journal(cwd) as journal:
        asked = any(step.kind == "plan" and step.status == "running" for step in journal.steps(run_id))
    return run_id if asked else None


def _phase(cwd: Path, run_id: str) -> dict:
    return json.loads((cwd / "sciagent-runs" / run_id / "state.json").read_text())


def test_stop_from_the_ui_ends_a_study_interrupted_and_resumable(tmp_path: Path, openai_server) -> None:
    """Asked while the model plans: the study stops at its next check, before any simulation, with the
    reason; it is ``interrupted`` (resumable). A session's actions are refused on a study."""
    cwd, study = _study(tmp_path, openai_server)
    try:
        run_id = _until("the plan request", lambda: _planning(cwd), study)
        workspace = cwd / "sciagent-runs"
        with _journal(cwd) as journal:
            with pytest.raises(
                UserError, match="is a study: its simulations are stopped together with Stop run"
            ):
                actions.cancel_task(journal, workspace, run_id, "300K-r1", by=BY)
            with pytest.raises(UserError, match="is a study run, not an ask/chat session"):
                actions.tell(journal, run_id, "faster please", by=BY)
            event = actions.stop_run(journal, workspace, run_id, reason="I have seen enough", by=BY)
            with pytest.raises(UserError, match="was already asked to stop \\(I have seen enough\\)"):
                actions.stop_run(journal, workspace, run_id, reason="again", by=BY)
        _, err = _finished(study)
    finally:
        study.kill()
    assert study.returncode == 1 and "Traceback" not in err
    assert f"error: I have seen enough: `sciagent resume {run_id}` continues the run" in err
    with _journal(cwd) as journal:
        run = journal.get_run(run_id)
        assert (run.status, run.error) == ("interrupted", "I have seen enough")
        (stop,) = [e for e in journal.events(run_id) if e.data.get("kind") == "stop_request"]
        assert stop.id == event and stop.data == {
            "kind": "stop_request",
            "reason": "I have seen enough",
            "by": BY,
        }
        with pytest.raises(UserError, match=f"study {run_id} is interrupted, not running"):
            actions.stop_run(journal, workspace, run_id, reason="", by=BY)
    state = _phase(cwd, run_id)
    assert state["phase"] == "fit" and state["plan"] is not None
    assert state["probe_rounds"] == 0 and state["conditions"] == []  # nothing was simulated


def _simulating(cwd: Path, run_id: str) -> bool:
    return any(c["status"] == "running" for c in _phase(cwd, run_id)["conditions"])


def test_without_a_stop_the_same_study_goes_on_to_its_simulations(tmp_path: Path, openai_server) -> None:
    """The control of the test above: no stop, and the study starts its simulations (its plan is the
    cheapest, so no probe comes first)."""
    cwd, study = _study(tmp_path, openai_server)
    try:
        run_id = _until("the plan request", lambda: _planning(cwd), study)
        _until("a running simulation", lambda: _simulating(cwd, run_id), study)
        with _journal(cwd) as journal:
            assert journal.get_run(run_id).status == "running" and _events(cwd, run_id, "stop_request") == []
        study.terminate()  # SIGTERM: the study checkpoints its simulations and ends interrupted
        _finished(study, timeout_s=60)
    finally:
        study.kill()
