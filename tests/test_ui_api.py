"""The web UI's JSON API and files, through Starlette's test client, behind the real token gate.

A workspace is written with the real journal (a study with a failed task and its log, a session waiting
for an approval, its sub-agent, a chem run); the app under test is ``create_app`` itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import ModelCall
from sciagent.ui.app import create_app

TOKEN = "t" * 43


@dataclass
class Workspace:
    path: Path
    study: str
    session: str
    child: str
    chem: str


def client_of(workspace: Path) -> TestClient:
    """A client of the app as a browser on this host reaches it: a loopback Host, the token header."""
    app = create_app(workspace, token=TOKEN)
    return TestClient(app, base_url="http://127.0.0.1", headers={"X-Sciagent-Token": TOKEN})


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = tmp_path / "sciagent-runs"
    with Journal.in_workspace(ws) as journal:
        study = journal.create_run("stability of villin at 300 K", {})
        plan = journal.start_step(study, "plan", "choose temperatures")
        call = ModelCall("plan", "m", "d", 0.5, 120, 30, "{}", "valid")
        journal.record_model_call(study, plan, call)
        journal.finish_step(plan, "completed", "2 temperatures")
        workdir = ws / study / "conditions" / "T300" / "run1"
        workdir.mkdir(parents=True)
        (workdir / "result.json").write_text(json.dumps({"status": "failed", "failure_class": "instability"}))
        (workdir / "md.log").write_text("".join(f"log line {n}\n" for n in range(50)))
        ok = journal.add_task(study, "T280/run1/attempt1", {}, "local")
        journal.update_task(ok, status="completed", result_path=str(workdir.parent.parent / "T280"))
        bad = journal.add_task(study, "T300/run1/attempt1", {}, "local")
        journal.update_task(bad, status="running", attempts=1)
        journal.update_task(bad, status="failed", result_path=str(workdir), error="energy is NaN at step 400")
        (ws / study / "report.html").write_text("<html><script>alert(1)</script></html>")
        (ws / study / "report.md").write_text("# report")
        journal.add_artifact(study, "report", str(ws / study / "report.html"))
        journal.set_run_status(study, "failed", "1 of 2 conditions failed")

        session = journal.create_run("what is the boiling point of water?", {"kind": "session"})
        journal.record_step(session, "message", "user asked", {"text": "hi"})
        request = {
            "kind": "approval_request",
            "request": "a-1",
            "summary": "submit a job",
            "effects": ["spends"],
        }
        journal.add_event(session, "warning", "approval asked: submit a job", request)
        answered = {"kind": "approval_request", "request": "a-0", "summary": "read a file", "effects": []}
        journal.add_event(session, "warning", "approval asked: read a file", answered)
        journal.add_event(
            session, "info", "approval approved by x", {"kind": "approval_answer", "request": "a-0"}
        )
        child = journal.create_run("sub-question", {"kind": "session", "parent": session})
        chem = journal.create_run("energy of benzene", {"kind": "chem"})
        journal.set_run_status(chem, "completed")
    (ws / "sessions" / session).mkdir(parents=True)
    (ws / "sessions" / session / "notes.txt").write_text("notes")
    return Workspace(ws, study, session, child, chem)


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    with client_of(workspace.path) as client:
        yield client


def test_the_runs_list_gives_kinds_counts_and_filters(client: TestClient, workspace: Workspace) -> None:
    listed = client.get("/api/runs").json()
    kinds = {run["id"]: run["kind"] for run in listed["runs"]}
    assert kinds == {
        workspace.study: "study", workspace.session: "session", workspace.child: "sub-agent",
        workspace.chem: "chem",
    }  # fmt: skip
    assert listed["counts"] == {"queued": 0, "running": 2, "completed": 1, "failed": 1, "interrupted": 0}
    by_id = {run["id"]: run for run in listed["runs"]}
    assert by_id[workspace.study]["tasks"] == {"completed": 1, "failed": 1}
    assert by_id[workspace.session]["pending_approvals"] == 1  # a-0 was answered
    assert by_id[workspace.child]["parent"] == workspace.session
    assert by_id[workspace.chem]["duration_s"] is not None and by_id[workspace.study]["age_s"] >= 0
    assert listed["cursor"] > 0
    assert [r["id"] for r in client.get("/api/runs?status=failed").json()["runs"]] == [workspace.study]
    assert [r["id"] for r in client.get("/api/runs?kind=sub-agent").json()["runs"]] == [workspace.child]
    found = client.get("/api/runs", params={"q": "BENZENE"}).json()
    assert [r["id"] for r in found["runs"]] == [workspace.chem] and found["counts"]["completed"] == 1
    refused = client.get("/api/runs?status=done")
    assert refused.status_code == 400 and "status must be one of" in refused.json()["error"]


def test_a_study_page_has_its_rows_in_time_order_its_failure_with_the_log_tail_and_its_files(
    client: TestClient, workspace: Workspace
) -> None:
    page = client.get(f"/api/runs/{workspace.study}").json()
    assert page["run"]["status"] == "failed" and page["run"]["kind"] == "study"
    tables = [item["table"] for item in page["items"]]
    assert tables == ["step", "model_call", "task", "task", "artifact"]
    assert [item["time"] for item in page["items"]] == sorted(item["time"] for item in page["items"])
    step, call = page["items"][0], page["items"][1]
    assert step["status"] == "completed" and step["summary"] == "2 temperatures" and step["duration_s"] >= 0
    assert (call["latency_s"], call["prompt_tokens"], call["outcome"], call["step_id"]) == (
        0.5,
        120,
        "valid",
        1,
    )
    assert [t["key"] for t in page["tasks"]] == ["T280/run1/attempt1", "T300/run1/attempt1"]
    failure = page["failure"]
    assert failure["run_error"] == "1 of 2 conditions failed"
    [task] = failure["tasks"]
    assert (task["key"], task["failure_class"], task["message"]) == (
        "T300/run1/attempt1", "instability", "energy is NaN at step 400",
    )  # fmt: skip
    assert task["log_tail"] == [f"log line {n}" for n in range(20, 50)]
    assert task["log_path"] == "conditions/T300/run1/md.log"
    paths = [f["path"] for f in page["files"]]
    assert paths[:2] == ["report.html", "report.md"]  # reports first
    assert "conditions/T300/run1/md.log" in paths
    report = page["files"][0]
    assert report["kind"] == "report" and report["url"] == f"/files/{workspace.study}/report.html"
    assert page["approvals"] == [] and page["jobs"] == [] and page["children"] == []
    assert page["cursor"] == client.get("/api/runs").json()["cursor"]


def test_a_session_page_shows_its_pending_approval_and_its_sub_agent(
    client: TestClient, workspace: Workspace
) -> None:
    page = client.get(f"/api/runs/{workspace.session}").json()
    [approval] = page["approvals"]
    assert approval["request"] == "a-1" and approval["summary"] == "submit a job"
    assert approval["effects"] == ["spends"]
    event = next(i for i in page["items"] if i["table"] == "event" and i["data"].get("request") == "a-1")
    assert approval["event_id"] == event["id"]
    assert [child["id"] for child in page["children"]] == [workspace.child]
    assert page["failure"] is None
    assert [f["path"] for f in page["files"]] == ["notes.txt"]  # the session's directory
    child = client.get(f"/api/runs/{workspace.child}").json()
    assert [f["path"] for f in child["files"]] == ["notes.txt"]  # a sub-agent shares its parent's


def test_a_finished_study_shows_its_findings_first_but_never_through_a_link(
    client: TestClient, workspace: Workspace, tmp_path: Path
) -> None:
    """The findings come from the run's results.json. The attack: results.json is a link to a file
    outside the run (a session's code could plant one); the control shows that file has findings."""
    findings = ["At 300 K (T300-r1) the verdict was stable (the fold held)."]
    with Journal.in_workspace(workspace.path) as journal:
        study = journal.create_run("stability of villin", {})
        journal.set_run_status(study, "completed")
    (workspace.path / study).mkdir()
    results = workspace.path / study / "results.json"
    results.write_text(json.dumps({"findings": findings}))
    outcome = client.get(f"/api/runs/{study}").json()["outcome"]
    assert outcome == {"title": "Findings", "lines": findings}
    assert client.get(f"/api/runs/{workspace.study}").json()["outcome"] is None  # failed: its failure instead
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"findings": ["planted"]}))
    results.unlink()
    results.symlink_to(elsewhere)
    assert json.loads(results.read_text())["findings"] == ["planted"]  # control: the link leads to findings
    assert client.get(f"/api/runs/{study}").json()["outcome"] is None


def test_jobs_of_a_batch_run_come_with_their_state_and_walltime_left(tmp_path: Path) -> None:
    from sciagent.workflows.jobs.records import record_started, record_submitted

    ws = tmp_path / "ws"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --time=01:00:00\n")
    with Journal.in_workspace(ws) as journal:
        run = journal.create_run("queued study", {"job": {"site": "cluster", "walltime_s": 3600}})
        record_submitted(journal, run, "101", 0, script)
        record_started(journal, run, "101", 0, "node1", ends_at=time.time() + 1800)
        record_submitted(journal, run, "102", 1, script)
    with client_of(ws) as client:
        jobs = client.get(f"/api/runs/{run}").json()["jobs"]
    assert [(j["job_id"], j["state"], j["site"], j["scheduler"]) for j in jobs] == [
        ("101", "running", "cluster", "slurm"), ("102", "queued", "cluster", "slurm"),
    ]  # fmt: skip
    assert 1700 < jobs[0]["walltime_left_s"] <= 1800 and jobs[1]["walltime_left_s"] is None
    assert jobs[0]["walltime_s"] == 3600


def test_unknown_runs_and_routes_are_404_with_a_one_line_error(
    client: TestClient, workspace: Workspace
) -> None:
    unknown = ("/api/runs/no-such-run", "/api/runs/no-such-run/telemetry", "/api/runs/no-such-run/stream")
    prefix = f"/api/runs/{workspace.study[:8]}"  # a page names a run by its whole id
    for url in (*unknown, prefix, "/files/no-such-run/report.html", "/api/nothing"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert answer.json()["error"] and "\n" not in answer.json()["error"]


def test_the_page_carries_the_token_and_the_static_files_are_not_cached(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert f'<meta name="sciagent-token" content="{TOKEN}">' in page.text
    script = client.get("/static/app.js")
    assert script.headers["cache-control"] == "no-cache" and "javascript" in script.headers["content-type"]
    assert client.get("/static/missing.js").status_code == 404


def test_without_the_token_nothing_is_served(workspace: Workspace) -> None:
    with TestClient(create_app(workspace.path, token=TOKEN), base_url="http://127.0.0.1") as anonymous:
        assert anonymous.get("/api/runs").status_code == 403
        assert anonymous.get(f"/files/{workspace.study}/report.html").status_code == 403


# -- files: only the run's own, never scripting the page --------------------------------------------


def test_a_report_is_served_sandboxed_so_its_script_cannot_reach_the_ui(
    client: TestClient, workspace: Workspace
) -> None:
    report = client.get(f"/files/{workspace.study}/report.html")
    assert report.status_code == 200 and "<script>" in report.text
    assert report.headers["content-security-policy"] == "sandbox"  # no scripts, an origin of its own
    assert "text/html" in report.headers["content-type"]
    assert client.get("/").headers["content-security-policy"].startswith("default-src 'self'")  # the page's


def test_paths_out_of_the_run_directory_are_refused(
    client: TestClient, workspace: Workspace, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's")
    run_dir = workspace.path / workspace.study
    os.symlink(secret, run_dir / "link.txt")  # a link a run's code could have left
    (run_dir / "inner.txt").symlink_to(run_dir / "report.md")  # a link inside is fine
    relative = os.path.relpath(secret, run_dir)
    attacks = {
        f"/files/{workspace.study}/%2e%2e/%2e%2e/secret.txt": "../ encoded, so no client removes it",
        f"/files/{workspace.study}/{relative.replace('..', '%2e%2e')}": "../ to the file exactly",
        f"/files/{workspace.study}/{secret}": "an absolute path",
        f"/files/{workspace.study}/link.txt": "a symlink out of the run directory",
        f"/files/{workspace.study}/conditions/%2e%2e/%2e%2e/%2e%2e/secret.txt": "../ from a subfolder",
    }
    for url, attack in attacks.items():
        answer = client.get(url)
        assert answer.status_code == 404 and "not the run's" not in answer.text, attack
    assert client.get(f"/files/{workspace.study}/inner.txt").text == "# report"
    # Control: the file exists and plain path joining, what a naive route does, would have served each.
    for path in (f"../../{secret.name}", relative, str(secret), "link.txt", "conditions/../../../secret.txt"):
        assert (run_dir / path).read_text() == "not the run's", path


# -- actions: one journal event each; what cannot apply is refused in one line -----------------------


def test_answering_an_approval_writes_the_answer_event_and_a_second_answer_is_refused(
    client: TestClient, workspace: Workspace
) -> None:
    url = f"/api/runs/{workspace.session}/approvals/a-1"
    answered = client.post(url, json={"approve": False, "reason": "not on this allocation"})
    assert answered.status_code == 200 and answered.json()["ok"] is True
    with Journal.in_workspace(workspace.path) as journal:
        [event] = [e for e in journal.events(workspace.session) if e.id == answered.json()["event"]]
    assert event.data["kind"] == "approval_answer" and event.data["approved"] is False
    assert event.data["reason"] == "not on this allocation"
    assert client.get(f"/api/runs/{workspace.session}").json()["approvals"] == []
    again = client.post(url, json={"approve": True})
    assert again.status_code == 409 and "already declined" in again.json()["error"]
    for body in ({"approve": "yes"}, {}):
        bad = client.post(url, json=body)
        assert bad.status_code == 400 and '"approve"' in bad.json()["error"], body
    assert client.post(url, json=[1]).json()["error"] == "the body must be a JSON object"
    assert client.post(url, content=b"{not json").status_code == 400
    assert client.post("/api/runs/no-such-run/approvals/a-1", json={"approve": True}).status_code == 404


def test_tell_cancel_and_stop_answer_with_their_event_or_a_one_line_refusal(
    client: TestClient, workspace: Workspace
) -> None:
    told = client.post(f"/api/runs/{workspace.session}/tell", json={"text": "use 2 replicas"})
    assert told.status_code == 200 and isinstance(told.json()["event"], int)
    assert client.post(f"/api/runs/{workspace.session}/tell", json={"text": " "}).status_code == 400
    missing = client.post(f"/api/runs/{workspace.session}/tasks/T300/run1/cancel", json={})
    assert missing.status_code == 409 and "no task 'T300/run1'" in missing.json()["error"]  # a key with "/"
    stopped = client.post(f"/api/runs/{workspace.study}/stop", json={})
    assert stopped.status_code == 409 and "not running" in stopped.json()["error"]


def test_a_post_from_another_origin_is_refused(client: TestClient, workspace: Workspace) -> None:
    url = f"/api/runs/{workspace.session}/tell"
    forged = client.post(url, json={"text": "hi"}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403
    assert client.post(url, json={"text": "hi"}, headers={"Origin": "http://127.0.0.1"}).status_code == 200
