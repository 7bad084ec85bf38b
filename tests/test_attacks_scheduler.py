"""Attacks on the batch-job tools: no model string reaches a shell or the scheduler unchecked.

Each attack is tried through the real tools (on a real single-node Slurm, tests/slurm_cluster.py,
or the PBS stand-in, tests/pbs_shim) and shown stopped; its control does the same thing the way
the code did before the protection (a plain template render, psij fed the model's file, the policy
keyed by a name or a path, two ledgers, no lock) and shows it goes through.

- a newline and a command in ``structure``, ``;`` or a newline in ``queue``: stopped by patterns and
  quoting; control: the old render runs the command.
- ``job.json`` edited to ask for 99 h on another account: the request is recorded in the ledger;
  control: psij given the file asks Slurm for it.
- the script edited after generation, or swapped after submission: looked up by content digest, a
  checked copy runs; control: psij running the session's file runs the swap.
- a recorded request past the site's bounds: checked again at submission; control: no bound passes.
- the default partition named two ways: counted by the scheduler's own name; control: by the names
  as given, the second job passes.
- a failed job's script copied and resubmitted: keyed on content; control: keyed on path, it passes.
- a second workspace of the same user: one ledger per user and site; control: two ledgers, it passes.
- two sessions submitting at once: the site's submission lock; control: check-then-submit, both pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from openai_server import OpenAIServer, text_reply, tool_call_reply
from sciagent.compute.scheduler import psij_jobs
from sciagent.compute.scheduler.ledger import JobLedger
from sciagent.compute.scheduler.policy import SchedulerPolicy, request_refusal, submission_refusal
from sciagent.compute.scheduler.scripts import write_job_script
from sciagent.config import Settings
from sciagent.errors import UserError
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolArgumentsError, ToolContext, ToolFailed
from slurm_cluster import PARTITION

pytestmark = pytest.mark.timeout(300)
TOOLS = builtin_tools()
SHIM = Path(__file__).parent / "pbs_shim"


def _context(tmp_path: Path, site: str, workspace: str = "ws", **fields: Any) -> ToolContext:
    settings = Settings(workspace=tmp_path / workspace, sites={site: fields})
    session = tmp_path / workspace / "session"
    session.mkdir(parents=True, exist_ok=True)
    return ToolContext(session_dir=session, settings=settings)


def _slurm_site(**policy: object) -> dict[str, Any]:
    return {"walltime": "00:05:00", "account": "proj", "policy": {"poll_seconds": 1, **policy}}


def _call(name: str, arguments: dict, context: ToolContext) -> Any:
    return TOOLS.get(name).call(arguments, context)


def _slurm_job(env: dict[str, str], job_id: str) -> dict[str, str]:
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    return dict(field.split("=", 1) for field in shown.split() if "=" in field)


def _scancel(env: dict[str, str], *job_ids: str) -> None:
    subprocess.run(["scancel", *job_ids], env=env, capture_output=True, timeout=30)


@pytest.fixture
def pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    monkeypatch.setenv("PBS_SHIM_QUEUE_S", "2")
    return tmp_path / "pbs"


def _pbs_context(tmp_path: Path, workspace: str = "ws", **policy: object) -> ToolContext:
    site = {"kind": "parsl", "provider": "pbspro", "account": "MYPROJ", "walltime": "00:05:00"}
    return _context(tmp_path, "pbs", workspace, **site, policy={"poll_seconds": 1, **policy})


def test_a_newline_or_semicolon_from_the_model_adds_no_line_to_a_job_script(tmp_path) -> None:
    mark = tmp_path / "pwned"
    structure = f"villin\ntouch {mark}"
    # control: the old template wrote the structure into a comment line as it came
    old = jinja2.Template("#!/bin/bash\n# 1 ps of {{ structure }} at 300 K\n").render(structure=structure)
    (tmp_path / "old.sh").write_text(old)
    subprocess.run(["bash", str(tmp_path / "old.sh")], check=True, timeout=30)
    assert mark.exists()
    mark.unlink()

    context = _context(tmp_path, "slurm", **_slurm_site())
    attacks = [{"structure": structure}, {"queue": f"debug;touch {mark}"}, {"queue": f"debug\ntouch {mark}"}]
    for attack in attacks:
        with pytest.raises(ToolArgumentsError, match="should match pattern"):
            _call("generate_job_script", {"site": "slurm", "structure": "villin", **attack}, context)
    # the primitive below the tool checks too: a caller that skips the tool's arguments gets nowhere
    site = context.settings.sites["slurm"]
    common = {"session_dir": context.session_dir, "length_ps": 1, "timestep_fs": 2, "temperature_k": 300}
    with pytest.raises(UserError, match="is not a bundled name"):
        write_job_script("slurm", site, tmp_path / "j1", structure=structure, overrides={}, **common)
    with pytest.raises(UserError, match="job request: queue"):
        write_job_script(
            "slurm", site, tmp_path / "j2", structure="villin", overrides={"queue": "a;b"}, **common
        )
    assert not mark.exists() and not (tmp_path / "j1").exists() and not (tmp_path / "j2").exists()

    text = _call("generate_job_script", {"site": "slurm", "structure": "villin"}, context).text
    assert "sciagent simulate villin --steps 5000" in text and "account proj" in text


@pytest.mark.parametrize("edit", ["job.json", "job.sh"])
@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_a_tampered_job_request_is_not_what_is_submitted(slurm_cluster, tmp_path, monkeypatch, edit) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    context = _context(tmp_path, "slurm", **_slurm_site(), partition=PARTITION)
    script = _call(
        "generate_job_script", {"site": "slurm", "structure": "villin", "name": "t"}, context
    ).script
    path = context.session_dir / script
    wanted = {"site": "slurm", "script": str(path), "walltime": "99:00:00", "account": "other", "nodes": 1}
    if edit == "job.json":  # what the old submit_job read back as the request
        (path.parent / "job.json").write_text(json.dumps(wanted))
    else:
        path.write_text(path.read_text() + "# 99 hours on account other, please\n")
    control = psij_jobs.submit(
        "slurm", psij_jobs.JobRequest.model_validate_json(json.dumps(wanted)), tmp_path / "psij",
        tmp_path / "out", tmp_path / "err", run=path,
    )  # fmt: skip
    job_ids = [control]
    try:
        shown = _slurm_job(slurm_cluster, control)
        assert (shown["TimeLimit"], shown["Account"]) == ("4-03:00:00", "other")  # the file asked, Slurm gave

        if edit == "job.sh":  # no request is recorded for the edited content: the site must be named
            with pytest.raises(ToolArgumentsError, match="no request recorded by generate_job_script"):
                _call("submit_job", {"script": script}, context)
        job_id = _call("submit_job", {"script": script, "site": "slurm"}, context).job_id
        job_ids.append(job_id)
        shown = _slurm_job(slurm_cluster, job_id)
        assert (shown["TimeLimit"], shown["Account"]) == ("00:05:00", "proj")  # what was recorded
    finally:
        _scancel(slurm_cluster, *job_ids)


def test_a_recorded_request_is_checked_again_against_the_site_s_bounds(pbs, tmp_path) -> None:
    generated = _call(
        "generate_job_script", {"site": "pbs", "structure": "villin", "nodes": 2, "queue": "debug"},
        _pbs_context(tmp_path),
    )  # fmt: skip
    bounded = _pbs_context(
        tmp_path, max_nodes=1, max_walltime="00:10:00"
    )  # the site's policy, tightened since
    with pytest.raises(ToolFailed, match="2 nodes is more than the site's limit of 1"):
        _call("submit_job", {"script": generated.script}, bounded)
    assert not list((pbs / "jobs").glob("*.json"))  # nothing reached qsub
    # control: the same request against the site without the bound passes the check
    assert request_refusal(SchedulerPolicy(), generated.request, "debug", "MYPROJ") is None
    tight = SchedulerPolicy(allowed_queues=("workq",))
    assert "queue debug is not one the site allows" in str(
        request_refusal(tight, generated.request, "debug", "MYPROJ")
    )


@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_the_default_partition_named_two_ways_counts_once(slurm_cluster, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    context = _context(tmp_path, "slurm", **_slurm_site(max_jobs_per_queue=1))  # no partition: the default
    (context.session_dir / "sleep.sh").write_text("sleep 60\n")
    first = _call("submit_job", {"script": "sleep.sh", "site": "slurm"}, context).job_id
    try:
        named = _call(
            "generate_job_script", {"site": "slurm", "structure": "villin", "queue": PARTITION}, context
        )
        with pytest.raises(
            ToolFailed, match=f"allows 1 of sciagent's jobs in queue {PARTITION} at once.*{first}"
        ):
            _call("submit_job", {"script": named.script}, context)
        (record,) = JobLedger("slurm").jobs()
        assert record.queue == PARTITION  # the scheduler's name, from sinfo's '*'
        # control: counted by the names as given (None and "debug"), the limit lets the second job in
        unresolved, policy = record.model_copy(update={"queue": None}), SchedulerPolicy(max_jobs_per_queue=1)
        assert submission_refusal(policy, [unresolved], PARTITION, "x", time.time()) is None
        assert submission_refusal(policy, [record], PARTITION, "x", time.time()) is not None
    finally:
        _scancel(slurm_cluster, first)


def test_a_copy_of_a_failed_script_is_not_resubmitted_before_a_diagnosis(pbs, tmp_path) -> None:
    context = _pbs_context(tmp_path)
    (context.session_dir / "fails.sh").write_text("exit 3\n")
    failed = _call("submit_job", {"script": "fails.sh", "site": "pbs"}, context).job_id
    assert _call("wait_for_job", {"job_id": failed, "timeout_s": 30}, context).state == "FAILED"
    (context.session_dir / "copy.sh").write_text("exit 3\n")
    with pytest.raises(ToolFailed, match=f"job {failed} of this script failed"):
        _call("submit_job", {"script": "copy.sh", "site": "pbs"}, context)
    # control: keyed by path, as before, no failed job is found for the copy
    copy = str((context.session_dir / "copy.sh").resolve())
    assert not [job for job in JobLedger("pbs").jobs() if job.script == copy and job.state == "FAILED"]


def test_a_second_workspace_of_the_same_user_shares_the_limit(pbs, tmp_path, monkeypatch) -> None:
    one, two = (_pbs_context(tmp_path, name, max_jobs_per_queue=1) for name in ("ws1", "ws2"))
    for context in (one, two):
        (context.session_dir / "sleep.sh").write_text("sleep 30\n")
    first = _call("submit_job", {"script": "sleep.sh", "site": "pbs"}, one).job_id
    with pytest.raises(ToolFailed, match=f"allows 1 of sciagent's jobs in queue workq.*{first}"):
        _call("submit_job", {"script": "sleep.sh", "site": "pbs"}, two)
    # control: a ledger of its own (per workspace, as before) and the second workspace gets a full limit
    monkeypatch.setenv("SCIAGENT_STATE_DIR", str(tmp_path / "ws2-state"))
    second = _call("submit_job", {"script": "sleep.sh", "site": "pbs"}, two).job_id
    for job_id in (first, second):
        subprocess.run(["qdel", job_id], capture_output=True, timeout=30)


def test_a_script_swapped_after_submission_does_not_run(pbs, tmp_path) -> None:
    context = _pbs_context(tmp_path)
    script = context.session_dir / "hello.sh"
    script.write_text("echo approved\n")
    job_id = _call("submit_job", {"script": "hello.sh", "site": "pbs"}, context).job_id
    # control: psij running the session's file, as before, runs whatever is there when the job starts
    request = psij_jobs.JobRequest(site="pbs", script=str(script), account="MYPROJ", walltime="00:05:00")
    out = tmp_path / "control.out"
    control = psij_jobs.submit("pbspro", request, tmp_path / "psij", out, tmp_path / "err", run=script)
    script.write_text("echo swapped\n")  # while both jobs wait in the queue
    assert _call("wait_for_job", {"job_id": job_id, "timeout_s": 30}, context).state == "COMPLETED"
    assert _call("job_output", {"job_id": job_id}, context).stdout_tail == "approved\n"
    psij_jobs.wait("pbspro", control, tmp_path / "psij", timeout_s=30, poll_s=1)
    assert out.read_text() == "swapped\n"


@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_two_sessions_racing_the_per_queue_limit_submit_one_job(slurm_cluster, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    context = _context(tmp_path, "slurm", **_slurm_site(max_jobs_per_queue=1), partition=PARTITION)
    (context.session_dir / "sleep.sh").write_text("sleep 60\n")
    arguments = {"script": "sleep.sh", "site": "slurm"}
    submitted: list[str] = []
    try:
        # control: check, then submit, with nothing held across: both pass the check
        ledger, policy = JobLedger("slurm"), SchedulerPolicy(max_jobs_per_queue=1)
        request = psij_jobs.JobRequest(site="slurm", script=str(context.session_dir / "sleep.sh"))
        gate = threading.Barrier(2)

        def unlocked() -> str:
            refusal = submission_refusal(policy, ledger.jobs(), PARTITION, "x", time.time())
            gate.wait(timeout=30)
            assert refusal is None
            run = context.session_dir / "sleep.sh"
            return psij_jobs.submit(
                "slurm", request, tmp_path / "psij", tmp_path / "o", tmp_path / "e", run=run
            )

        submitted += _together(unlocked)
        assert len(set(submitted)) == 2
        _scancel(slurm_cluster, *submitted)

        outcomes = _together(lambda: _call("submit_job", arguments, context).job_id)
        submitted += [o for o in outcomes if isinstance(o, str)]
        refused = [o for o in outcomes if isinstance(o, ToolFailed)]
        assert len(refused) == 1 and "allows 1 of sciagent's jobs in queue" in str(refused[0])
        assert len(JobLedger("slurm").jobs()) == 1
    finally:
        _scancel(slurm_cluster, *submitted)


def _together(action: Callable[[], Any]) -> list[Any]:
    """Run ``action`` on two threads at once; their results, or what each raised."""
    outcomes: list[Any] = []

    def run() -> None:
        try:
            outcomes.append(action())
        except Exception as exc:  # the refused one: its exception is the outcome
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_a_session_s_injected_structure_and_edited_request_do_not_reach_slurm(
    slurm_cluster, tmp_path
) -> None:
    mark = tmp_path / "pwned"
    (tmp_path / "sciagent.toml").write_text(
        f'[sites.slurm]\npartition = "{PARTITION}"\nwalltime = "00:05:00"\naccount = "proj"\n'
    )
    tampered = {"site": "slurm", "script": "jobs/t/job.sh", "walltime": "99:00:00", "account": "other"}
    with OpenAIServer() as server:
        server.script(
            tool_call_reply("generate_job_script", {"site": "slurm", "structure": f"villin\ntouch {mark}"}),
            tool_call_reply("generate_job_script", {"site": "slurm", "structure": "villin", "name": "t"}),
            tool_call_reply("write_file", {"path": "jobs/t/job.json", "text": json.dumps(tampered)}),
            tool_call_reply("submit_job", {"script": "jobs/t/job.sh"}),
            text_reply("Submitted."),
        )
        with (tmp_path / "sciagent.toml").open("a") as toml:
            toml.write(
                f'[llm.scripted]\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
            )
        completed = subprocess.run(
            [sys.executable, "-m", "sciagent", "ask", "run villin on slurm", "--llm", "scripted", "--json",
             "--approve-all"],
            cwd=tmp_path, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
            env=slurm_cluster | {
                "PATH": f"{Path(sys.executable).parent}:{slurm_cluster['PATH']}",
                "SCIAGENT_STATE_DIR": os.environ["SCIAGENT_STATE_DIR"],
            },
        )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    calls = json.loads(completed.stdout.splitlines()[-1])["tool_calls"]
    assert [c["status"] for c in calls] == ["invalid", "ok", "ok", "ok"], calls
    job_id = calls[3]["result"]["job_id"]
    try:
        shown = _slurm_job(slurm_cluster, job_id)
        assert (shown["TimeLimit"], shown["Account"]) == ("00:05:00", "proj")
        assert "structure" in calls[0]["error"] and not mark.exists()
    finally:
        _scancel(slurm_cluster, job_id)
