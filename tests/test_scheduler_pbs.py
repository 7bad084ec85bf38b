"""The batch-scheduler tools on a PBS Pro site, called through the tool registry.

``tests/pbs_shim`` stands in for PBS Pro at its command-line boundary (``qsub``, ``qstat``, ``qdel``,
``qhold``, ``qrls``, ``pbsnodes``); everything up to it is sciagent's real code: the tools, the site
policy and the job ledger, the scheduler command seam and psij's own PBS executor. The shim runs
each job's script on this machine, so a job's output is the real output of its script.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sciagent.config import Settings
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolContext, ToolFailed

pytestmark = pytest.mark.timeout(120)
SHIM = Path(__file__).parent / "pbs_shim"
TOOLS = builtin_tools()
QUEUE_S = 3  # how long the shim keeps a job queued: time enough to hold it first


@pytest.fixture
def pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shim's state directory, with the shim first on PATH."""
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    monkeypatch.setenv("PBS_SHIM_QUEUE_S", str(QUEUE_S))
    return tmp_path / "pbs"


def _context(tmp_path: Path, **policy: object) -> ToolContext:
    site = {
        "kind": "parsl", "provider": "pbspro", "account": "MYPROJ", "queue": "debug", "walltime": "00:05:00",
        "policy": {"poll_seconds": 1, **policy},
    }  # fmt: skip
    settings = Settings(workspace=tmp_path / "ws", sites={"pbs": site})
    session = tmp_path / "ws" / "session"
    session.mkdir(parents=True)
    return ToolContext(session_dir=session, settings=settings)


def _call(name: str, arguments: dict, context: ToolContext) -> Any:
    return TOOLS.get(name).call(arguments, context)


def _script(context: ToolContext, name: str, text: str) -> str:
    (context.session_dir / name).write_text(text)
    return name


def _until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


def test_queues_and_nodes_are_read_from_pbs_pro(pbs, tmp_path) -> None:
    context = _context(tmp_path)
    listed = _call("list_queues", {"site": "pbs"}, context).queues
    queues = {q.name: (q.state, q.max_walltime, q.max_nodes, q.jobs) for q in listed}
    assert queues == {
        "workq": ("up", None, None, 0),
        "debug": ("up", "01:00:00", 2, 0),
        "maint": ("down", None, None, 0),
    }
    nodes = _call("list_nodes", {"site": "pbs"}, context)
    assert (nodes.total, nodes.by_state) == (2, {"free": 1, "offline": 1})
    stopped = {"site": "pbs", "structure": "villin", "queue": "maint"}
    generated = _call("generate_job_script", stopped, context)
    with pytest.raises(ToolFailed, match="refused the job: qsub: Queue is not enabled"):
        _call("submit_job", {"script": generated.script}, context)


def test_a_villin_job_is_held_released_run_and_read_back(pbs, tmp_path) -> None:
    context = _context(tmp_path)
    generated = _call(
        "generate_job_script",
        {"site": "pbs", "structure": "villin", "length_ps": 1, "timestep_fs": 4, "name": "villin"},
        context,
    )
    assert (generated.request.queue, generated.request.account) == ("debug", "MYPROJ")
    assert "sciagent simulate villin --steps 250 --timestep 4" in generated.text
    job_id = _call("submit_job", {"script": generated.script}, context).job_id
    assert job_id.endswith(".pbs-shim")

    assert _call("hold_job", {"job_id": job_id}, context).action == "held"
    (listed,) = _call("list_jobs", {"site": "pbs"}, context).jobs
    assert (listed.native_id, listed.state, listed.queue) == (job_id, "HELD", "debug")
    assert listed.submitted_by_sciagent
    assert _call("job_status", {"job_id": job_id}, context).state == "QUEUED"
    assert {q.name: q.jobs for q in _call("list_queues", {"site": "pbs"}, context).queues}["debug"] == 1
    time.sleep(QUEUE_S + 1)  # past its time in the queue: held, it has not started
    assert _call("list_jobs", {"site": "pbs", "state": "HELD"}, context).jobs

    assert _call("release_job", {"job_id": job_id}, context).action == "released"
    done = _call("wait_for_job", {"job_id": job_id, "timeout_s": 90}, context)
    assert (done.state, done.exit_code) == ("COMPLETED", 0)
    output = _call("job_output", {"job_id": job_id, "max_chars": 64_000}, context)
    result = json.loads(output.stdout_tail)["result"]  # sciagent simulate --json, as the job printed it
    assert (result["status"], result["production_steps_completed"]) == ("completed", 250)
    md = context.session_dir / "jobs" / "villin" / "md"
    assert (md / "trajectory.dcd").is_file()
    assert _call("list_jobs", {"site": "pbs"}, context).jobs == []  # finished jobs leave the queue


def test_a_running_job_is_cancelled_and_others_jobs_are_left_alone(pbs, tmp_path) -> None:
    context = _context(tmp_path)
    script = _script(context, "sleep.sh", "sleep 60\n")
    job_id = _call("submit_job", {"script": script, "site": "pbs"}, context).job_id
    _until(lambda: _call("job_status", {"job_id": job_id}, context).state == "ACTIVE")
    assert _call("list_nodes", {"site": "pbs"}, context).by_state == {"job-busy": 1, "offline": 1}
    with pytest.raises(ToolFailed, match="Request invalid for state of job"):  # PBS holds only queued jobs
        _call("hold_job", {"job_id": job_id}, context)
    with pytest.raises(ToolFailed, match=r"job 999\.pbs-shim was not submitted by sciagent"):
        _call("cancel_job", {"job_id": "999.pbs-shim", "site": "pbs"}, context)

    assert _call("cancel_job", {"job_id": job_id}, context).action == "cancelled"
    assert _call("wait_for_job", {"job_id": job_id, "timeout_s": 30}, context).state == "CANCELED"
    record = json.loads((pbs / "jobs" / f"{job_id.split('.')[0]}.json").read_text())
    assert (record["state"], record["Exit_status"]) == ("F", 256 + 15)  # qdel's SIGTERM, as PBS reports it


def test_a_second_submission_too_soon_is_refused(pbs, tmp_path) -> None:
    context = _context(tmp_path, min_seconds_between_submissions=600)
    script = _script(context, "true.sh", "true\n")
    first = _call("submit_job", {"script": script, "site": "pbs"}, context).job_id
    refused = f"one submission every 600 s; job {first} was submitted \\d+ s ago: wait"
    with pytest.raises(ToolFailed, match=refused):
        _call("submit_job", {"script": script, "site": "pbs"}, context)
    assert [path.name for path in (pbs / "jobs").glob("*.json")] == ["1000.json"]  # nothing reached qsub


def test_a_failed_job_is_resubmitted_only_after_a_diagnosis(pbs, tmp_path) -> None:
    context = _context(tmp_path)
    script = _script(context, "fails.sh", "echo 'no input file' >&2\nexit 3\n")
    failed = _call("submit_job", {"script": script, "site": "pbs"}, context).job_id
    seen = _call("wait_for_job", {"job_id": failed, "timeout_s": 30}, context)
    assert (seen.state, seen.exit_code) == ("FAILED", 3)
    assert "no input file" in _call("job_output", {"job_id": failed}, context).stderr_tail
    refused = rf"job {failed} of this script failed \(exit code 3\).*diagnose_job"
    with pytest.raises(ToolFailed, match=refused):
        _call("submit_job", {"script": script, "site": "pbs"}, context)

    diagnosis = "the script exits 3 when its input is missing"
    _call("diagnose_job", {"job_id": failed, "diagnosis": diagnosis}, context)
    again = _call("submit_job", {"script": script, "site": "pbs"}, context).job_id
    assert again != failed


def test_previews_name_the_real_queue_the_resources_and_the_script(pbs, tmp_path) -> None:
    site = {"kind": "parsl", "provider": "pbspro", "account": "MYPROJ", "walltime": "00:20:00"}
    settings = Settings(workspace=tmp_path / "ws", sites={"pbs": site})  # no queue: the server's default
    context = ToolContext(session_dir=tmp_path / "ws" / "session", settings=settings)
    context.session_dir.mkdir(parents=True)
    generated = _call("generate_job_script", {"site": "pbs", "structure": "villin", "nodes": 2}, context)
    preview = TOOLS.get("submit_job").preview(
        TOOLS.get("submit_job").parse({"script": generated.script}), context
    )
    assert preview.facts == {
        "site": "pbs",
        "queue": "workq",
        "nodes": 2,
        "walltime_s": 1200,
        "account": "MYPROJ",
    }
    assert preview.summary.startswith(f"submit {generated.script} to site pbs: queue workq, 2 node(s)")
    assert preview.detail == generated.text  # what the person approves is what runs

    os.mkfifo(context.session_dir / "fifo.sh")
    for script, problem in [("missing.sh", "missing"), ("fifo.sh", "FIFO"), ("../x.sh", "outside")]:
        shown = TOOLS.get("submit_job").preview(TOOLS.get("submit_job").parse({"script": script}), context)
        assert "cannot go ahead" in shown.summary and problem in shown.summary and not shown.facts

    job_id = _call("submit_job", {"script": generated.script}, context).job_id
    for tool in ("hold_job", "cancel_job", "release_job"):
        shown = TOOLS.get(tool).preview(TOOLS.get(tool).parse({"job_id": job_id}), context)
        assert shown.facts == {
            "site": "pbs", "job_id": job_id, "own": True, "queue": "workq", "nodes": 2, "walltime_s": 1200,
            "account": "MYPROJ",
        }  # fmt: skip
    foreign = TOOLS.get("cancel_job").preview(
        TOOLS.get("cancel_job").parse({"job_id": "9.pbs-shim"}), context
    )
    assert "matches none of sciagent's jobs" in foreign.summary
    _call("cancel_job", {"job_id": job_id}, context)
