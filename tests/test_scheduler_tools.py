"""The batch-scheduler tools on a real single-node Slurm (tests/slurm_cluster.py): no stand-in.

psij, ``sinfo``/``squeue``/``scontrol`` and the job ledger are all real; the end-to-end test drives
``sciagent ask`` with the scripted OpenAI-protocol model (tests/openai_server.py, real HTTP), the
only stand-in, and checks that the answer quotes the finished job's own output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openai_server import OpenAIServer, RecordedRequest, Reply, text_reply, tool_call_reply
from sciagent.config import Settings
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolContext, ToolFailed
from slurm_cluster import PARTITION

# xdist_group: one cluster at a time (make test runs the suite on pytest-xdist workers)
pytestmark = [pytest.mark.hpc, pytest.mark.timeout(300), pytest.mark.xdist_group("slurm")]
TOOLS = builtin_tools()


def _context(tmp_path: Path, **policy: object) -> ToolContext:
    site = {"partition": PARTITION, "walltime": "00:05:00", "policy": {"poll_seconds": 1, **policy}}
    settings = Settings(workspace=tmp_path / "ws", sites={"slurm": site})
    session = tmp_path / "ws" / "session"
    session.mkdir(parents=True)
    return ToolContext(session_dir=session, settings=settings)


def _call(name: str, arguments: dict, context: ToolContext) -> Any:
    return TOOLS.get(name).call(arguments, context)


def _squeue(env: dict[str, str], job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T %r"], env=env, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def _until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


def test_queues_and_nodes_are_read_from_slurm(slurm_cluster, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    context = _context(tmp_path)
    (queue,) = _call("list_queues", {"site": "slurm"}, context).queues
    assert (queue.name, queue.state, queue.default, queue.nodes) == (PARTITION, "up", True, 1)
    nodes = _call("list_nodes", {"site": "slurm"}, context)
    assert (nodes.total, nodes.by_state) == (1, {"idle": 1})  # the first test: nothing has run yet


def test_the_policy_refuses_a_second_job_and_others_jobs(slurm_cluster, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    context = _context(tmp_path, max_jobs_per_queue=1)
    foreign = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "-p", PARTITION, "-o", "/dev/null", "--wrap", "sleep 120"],
        env=slurm_cluster,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()  # it fills the node, so sciagent's job waits in the queue
    try:
        _until(lambda: _squeue(slurm_cluster, foreign).startswith("RUNNING"))
        (context.session_dir / "sleep.sh").write_text("sleep 60\n")
        mine = _call("submit_job", {"script": "sleep.sh", "site": "slurm"}, context).job_id
        with pytest.raises(ToolFailed, match=f"allows 1 of sciagent's jobs in queue {PARTITION}.*{mine}"):
            _call("submit_job", {"script": "sleep.sh", "site": "slurm"}, context)

        for action in ("cancel_job", "hold_job"):
            with pytest.raises(ToolFailed, match=f"job {foreign} was not submitted by sciagent"):
                _call(action, {"job_id": foreign, "site": "slurm"}, context)
        assert _squeue(slurm_cluster, foreign).startswith("RUNNING")  # untouched

        listed = {job.native_id: job for job in _call("list_jobs", {"site": "slurm"}, context).jobs}
        assert listed[mine].submitted_by_sciagent and not listed[foreign].submitted_by_sciagent
        assert _call("hold_job", {"job_id": mine}, context).action == "held"
        assert _squeue(slurm_cluster, mine) == "PENDING JobHeldUser"
        _call("release_job", {"job_id": mine}, context)
        assert _squeue(slurm_cluster, mine).startswith("PENDING") and "Held" not in _squeue(
            slurm_cluster, mine
        )
        assert _call("job_status", {"job_id": mine}, context).state == "QUEUED"
        _call("cancel_job", {"job_id": mine}, context)
        assert _call("wait_for_job", {"job_id": mine, "timeout_s": 30}, context).state == "CANCELED"
    finally:
        subprocess.run(["scancel", foreign], env=slurm_cluster, timeout=30)


def _next_turn(request: RecordedRequest) -> Reply:
    """After the scripted opening: wait for the submitted job, read its output, answer from it."""
    last = json.loads([m["content"] for m in request.body["messages"] if m["role"] == "tool"][-1])
    if last.get("state") == "QUEUED":  # submit_job's answer
        return tool_call_reply("wait_for_job", {"job_id": last["job_id"], "timeout_s": 120})
    if "stdout_tail" not in last:
        return tool_call_reply("job_output", {"job_id": last["job_id"]})
    mean = re.search(r'"temperature_k": \{"mean": ([0-9.]+)', last["stdout_tail"])
    energy = re.search(r'"potential_energy_kj_mol": \{"mean": (-?[0-9.]+)', last["stdout_tail"])
    found = f"mean temperature {mean.group(1) if mean else '?'} K, mean potential energy "
    found += f"{energy.group(1) if energy else '?'} kJ/mol"
    return text_reply(f"The villin job {last['job_id']} finished: {found}.")


def test_a_model_checks_partitions_submits_villin_and_summarises_the_job(
    slurm_cluster, tmp_path, monkeypatch
) -> None:
    (tmp_path / "sciagent.toml").write_text(
        f'[sites.slurm]\npartition = "{PARTITION}"\nwalltime = "00:05:00"\n'
        "[sites.slurm.policy]\npoll_seconds = 1\n"
    )
    question = (
        "check which partitions are available, generate and submit an OpenMM simulation of villin on "
        f"the {PARTITION} partition, monitor it until it finishes and summarise the results"
    )
    with OpenAIServer() as server:
        server.script(
            tool_call_reply("list_queues", {"site": "slurm"}),
            tool_call_reply(
                "generate_job_script",
                {"site": "slurm", "structure": "villin", "length_ps": 1, "timestep_fs": 4, "name": "villin"},
            ),
            tool_call_reply("submit_job", {"script": "jobs/villin/job.sh"}),
        )
        server.respond(_next_turn)
        with (tmp_path / "sciagent.toml").open("a") as toml:
            toml.write(
                f'[llm.scripted]\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
            )
        completed = subprocess.run(
            [sys.executable, "-m", "sciagent", "ask", question, "--llm", "scripted", "--json",
             "--approve-all"],
            cwd=tmp_path, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
            env=slurm_cluster | {"PATH": f"{Path(sys.executable).parent}:{slurm_cluster['PATH']}"},
        )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.splitlines()[-1])
    calls = [(c["tool"], c["status"]) for c in summary["tool_calls"]]
    tools = ["list_queues", "generate_job_script", "submit_job", "wait_for_job", "job_output"]
    assert calls == [(tool, "ok") for tool in tools]
    assert summary["tool_calls"][0]["result"]["queues"][0]["name"] == PARTITION
    assert summary["tool_calls"][3]["result"]["state"] == "COMPLETED"
    answer = re.search(r"temperature (\d+\.\d+) K, mean potential energy (-\d+\.\d+) kJ", summary["answer"])
    assert answer, summary["answer"]
    result = json.loads((Path(summary["results_json"]).parent / "jobs/villin/stdout.txt").read_text())
    assert float(answer[1]) == result["analysis"]["temperature_k"]["mean"]  # the job's own output
    assert float(answer[2]) == result["analysis"]["potential_energy_kj_mol"]["mean"]
    assert summary["unattributed_numbers"] == []  # every number came from the job's output
