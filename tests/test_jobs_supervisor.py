"""End to end: ``sciagent submit`` on a real Slurm, the supervisor in the job, a walltime too short for it.

Everything is real: ``sbatch`` and the test cluster (tests/slurm_cluster.py), the job script, the
supervisor that the script execs, llama.cpp's server with the bundled model on one CPU, the study's
simulations (OpenMM) on the other, the stop before the walltime, the dependent continuation job, the
journal and the report. Nothing stands in for sciagent's own code; the health-gate tests below run the
supervisor outside a batch job (``sciagent job run``), where no walltime applies.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from journal_sql import journal_rows
from openai_server import OpenAIServer, slow_reply, text_reply
from sciagent.agent.journal import Journal
from sciagent.science.segments import read_segments
from sciagent.workflows.jobs.records import JobRecord, jobs_of
from scripted_plans import villin_plan
from slurm_cluster import PARTITION

pytestmark = [
    pytest.mark.slow,
    # The model on one CPU and the simulations on the other: the whole test machine. (Under pytest-xdist a
    # worker is pinned to one CPU, and the test cluster's slurmd, started from it, would give a job no more.)
    pytest.mark.whole_machine,
    pytest.mark.hpc,
    pytest.mark.xdist_group("slurm"),
    pytest.mark.timeout(1200),
]

GOAL = "Assess the thermal stability of the villin headpiece at 300 K and 400 K"
SITE = f'[sites.testslurm]\nkind = "parsl"\nprovider = "slurm"\npartition = "{PARTITION}"\n'
MESSAGES = "SELECT message FROM events"
NO_EXTENSIONS = "[study]\nextensions = 0\n"  # a run cut short by the budget is not extended: deterministic
SCRIPTED_PLAN = villin_plan(rationale="Physiological and elevated temperature; 4 fs with HMR keeps it cheap.")
SUMMARY = {"summary": "At 300 K the backbone held; the hotter run is compared in the findings."}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user's shell has: our interpreter first on PATH, this project's file trusted."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | {"PATH": path, "SCIAGENT_TRUST_LOCAL_CONFIG": "1"} | (extra or {})


def _sciagent(
    cwd: Path, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_row(project: Path) -> tuple[str, str, str | None]:
    (row,) = journal_rows(project, "SELECT id, status, error FROM runs")
    return row


def _wait_for_the_end(project: Path, env: dict[str, str], timeout_s: float) -> tuple[str, str, str | None]:
    """Poll the journal until the run is finished and the queue is empty (the last job has exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = _run_row(project)
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30).stdout
        if row[1] in ("completed", "failed", "interrupted") and not queue.strip():
            return row
        time.sleep(3)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((project / "sciagent-runs").rglob("jobs/*.out")))
    raise AssertionError(f"the run did not finish in {timeout_s:.0f} s: {_run_row(project)}\n{logs}")


@pytest.fixture(scope="module")
def continued_run(slurm_cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A study submitted with a 2-minute walltime and a 120 s budget: it must continue in a second job."""
    project = tmp_path_factory.mktemp("project")
    (project / "sciagent.toml").write_text(SITE + NO_EXTENSIONS)
    env = _env(slurm_cluster)
    submitted = _sciagent(
        project,
        "submit",
        GOAL,
        *["--site", "testslurm", "--walltime", "2m", "--budget", "120s", "--margin", "45s"],
        "--max-continuations=5",
        *["--llm-in-job", "llama-cpp", "--llm-devices", "1", "--yes"],
        env=env,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id, status, error = _wait_for_the_end(project, env, timeout_s=900)
    run_dir = project / "sciagent-runs" / run_id
    shown = _sciagent(project, "show", run_id, env=env)
    return {
        "project": project,
        "env": env,
        "run_id": run_id,
        "status": status,
        "error": error,
        "run_dir": run_dir,
        "submit_output": submitted.stdout + submitted.stderr,
        "show": shown.stdout,
    }


def _jobs(project: Path, run_id: str) -> list[JobRecord]:
    with Journal(project / "sciagent-runs" / "journal.sqlite") as journal:
        return jobs_of(journal, run_id)


def test_a_run_too_long_for_its_walltime_continues_in_a_second_job_and_completes(continued_run: dict) -> None:
    run_dir: Path = continued_run["run_dir"]
    assert continued_run["status"] == "completed", (continued_run["error"], continued_run["show"])
    jobs = _jobs(continued_run["project"], continued_run["run_id"])
    job_ids = [job.job_id for job in jobs]
    assert len(set(job_ids)) >= 2, jobs  # the first job and at least one continuation
    assert all(job.started_at and job.ended_at and job.host for job in jobs), jobs
    first, last = jobs[0], jobs[-1]
    assert "walltime" in first.end_reason and f"continues in job {job_ids[1]}" in first.end_reason
    assert last.end_reason == f"run {continued_run['run_id']} completed", last.end_reason
    for job_id in job_ids:
        assert job_id in continued_run["show"]  # `sciagent show RUN` lists the run's jobs

    # A continuation's plan is fixed: its study resumes while the model is still loading.
    messages = [m for (m,) in journal_rows(continued_run["project"], f"{MESSAGES} ORDER BY id")]
    for job in jobs[1:]:
        resumed = next(i for i, m in enumerate(messages) if m.startswith("resumed in phase simulate"))
        ready = messages.index(
            next(m for m in messages if m.startswith(f"job {job.job_id}: the model server"))
        )
        assert resumed < ready, messages
        messages = messages[ready + 1 :]

    # No MD step computed twice: each simulation's segments are contiguous, and one spans both jobs.
    spanning = 0
    for workdir in {p.parent for p in run_dir.rglob("segments.jsonl")}:
        rows = read_segments(workdir)
        assert rows[0]["from_step"] == 0
        for before, after in itertools.pairwise(rows):
            assert after["from_step"] == before["to_step"], (workdir, rows)
        spanning += len({row["job_id"] for row in rows}) > 1
        spec = json.loads((workdir / "spec.json").read_text())
        state_steps = [
            int(line.split(",")[1]) for line in (workdir / "state.csv").read_text().splitlines()[1:]
        ]
        assert len(state_steps) == len(set(state_steps)), workdir  # each reported step once
        result = json.loads((workdir / "result.json").read_text())
        if result["status"] == "completed":  # ended at its deadline's report step or at its maximum
            assert rows[-1]["to_step"] == result["steps_completed"]
            if result["ended_by"] == "max":
                assert rows[-1]["to_step"] == spec["equilibration_steps"] + spec["production_steps"]
    assert spanning >= 1, "no simulation was stopped in one job and continued in the next"

    results = json.loads((run_dir / "results.json").read_text())
    allocation = results["record"]["allocation"]
    assert [a["job_id"] for a in allocation] == job_ids
    for job in allocation:
        parts = (
            job["model_starting"]
            + job["model_serving"]
            + job["simulating"]
            + job["idle"]
            + job["continuation"]
        )
        assert parts == pytest.approx(job["devices"] * job["elapsed_s"], rel=1e-6)
        assert job["devices"] == 2 and job["simulating"] > 0
    assert allocation[0]["continuation"] > 0
    report = (run_dir / "report.md").read_text()
    assert "## Allocation" in report and "of the allocation's device-seconds produced simulation" in report
    print(_closing_note(continued_run, job_ids, results))


def test_a_continuation_that_finds_the_run_finished_exits_at_once(continued_run: dict) -> None:
    run_dir: Path = continued_run["run_dir"]
    late = run_dir / "jobs" / "spec-late.json"
    spec = json.loads((run_dir / "jobs" / "spec.json").read_text())
    late.write_text(json.dumps({**spec, "continuation": 3}))
    started = time.monotonic()
    done = _sciagent(
        continued_run["project"], "job", "run", "--spec", str(late), env=continued_run["env"], timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    assert "already completed" in done.stdout + done.stderr
    assert _run_row(continued_run["project"])[1] == "completed"


def _closing_note(run: dict, job_ids: list[str], results: dict) -> str:
    """What the closing note quotes: the jobs, simulated ps per condition, verdicts, the allocation."""
    lines = [f"jobs: {', '.join(job_ids)}"]
    for row in results["table"]:
        ps = round(row["simulated_ns"] * 1000, 2)
        lines.append(f"{row['condition']}: {row['status']}, {ps} ps simulated, verdict {row['verdict']}")
    lines.append(
        (run["run_dir"] / "report.md").read_text().split("## Allocation")[1].split("## Provenance")[0]
    )
    return "\n".join(lines)


def _submit_with_a_broken_model(
    project: Path, env: dict[str, str], *extra: str
) -> tuple[str, str, str | None]:
    """Submit a study whose in-job model is a text file named .gguf; wait for its job to end."""
    broken = project / "not-a-model.gguf"
    broken.write_text("this is not a GGUF model\n")
    submitted = _sciagent(
        project,
        "submit",
        GOAL,
        *["--site", "testslurm", "--walltime", "5m", "--budget", "70s", "--llm-devices", "1", "--yes"],
        *("--llm-in-job", f"llama-cpp:{broken}"),
        *extra,
        env=env,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return _wait_for_the_end(project, env, timeout_s=400)


def _our_servers(path_part: str) -> list[Path]:
    return [p for p in Path("/proc").glob("[0-9]*/cmdline") if path_part.encode() in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_model_that_fails_its_health_gate_ends_the_job_with_the_reason(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "sciagent.toml").write_text(SITE)
    env = _env(slurm_cluster)
    run_id, status, error = _submit_with_a_broken_model(tmp_path, env)
    assert status == "failed" and error is not None
    assert "health" in error and "models" in error, error  # the stage that failed
    messages = " ".join(e for (e,) in journal_rows(tmp_path, f"{MESSAGES} WHERE level = 'error'"))
    assert "Failed to load model" in messages  # the server log's tail reached the journal
    assert not (tmp_path / "sciagent-runs" / run_id / "state.json").exists()  # nothing ran on a dead model
    assert _our_servers("not-a-model.gguf") == []


def test_a_model_that_fails_its_health_gate_gives_way_to_the_fallback_profile(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(SCRIPTED_PLAN)), text_reply(json.dumps(SUMMARY)))
        (tmp_path / "sciagent.toml").write_text(
            SITE
            + f'[llm.scripted]\nkind = "openai"\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\n'
        )
        env = _env(slurm_cluster)
        run_id, status, error = _submit_with_a_broken_model(tmp_path, env, "--fallback-llm", "scripted")
        asked = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert status == "completed", error
    assert asked, "the fallback profile was never asked"
    warnings = " ".join(e for (e,) in journal_rows(tmp_path, f"{MESSAGES} WHERE level = 'warning'"))
    assert "fallback profile scripted" in warnings
    results = json.loads((tmp_path / "sciagent-runs" / run_id / "results.json").read_text())
    assert results["record"]["provenance"]["model_id"] == "scripted-model"
    assert _our_servers("not-a-model.gguf") == []




def _submit_a_question(project: Path, server: OpenAIServer, env: dict[str, str], *times: str) -> None:
    """``submit --ask`` to the test cluster with ``--llm remote``: the scripted ``server`` as the endpoint."""
    (project / "sciagent.toml").write_text(
        SITE + f'[llm.remote]\nkind = "openai"\nbase_url = "{server.base_url}"\nmodel = "remote-model"\n'
        "timeout_s = 300\nmax_retries = 0\n"
    )
    question = "How many residues does the villin headpiece have?"
    options = ["--ask", "--llm", "remote", "--site", "testslurm", *times, "--yes"]
    submitted = _sciagent(project, "submit", question, *options, env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr


def test_a_question_with_a_remote_model_is_interrupted_at_its_walltime_and_resumed_by_the_next_job(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    """``submit --ask`` with ``--llm`` (multi-system: the model at an endpoint, the session in the job).

    The endpoint's first answer takes longer than the job has: the stop interrupts the session, which is
    marked interrupted, and the continuation resumes it; the answer then arrives in the second job.
    """
    answer = "The villin headpiece (PDB 1YRF) has 35 residues."
    with OpenAIServer() as server:
        server.script(slow_reply(150, text_reply("too late")))
        server.respond(lambda request: text_reply(answer))
        env = _env(slurm_cluster)
        _submit_a_question(tmp_path, server, env, "--walltime", "2m", "--margin", "50s", "--budget", "10m")
        run_id, status, error = _wait_for_the_end(tmp_path, env, timeout_s=500)
    assert status == "completed", error
    jobs = _jobs(tmp_path, run_id)
    assert len(jobs) == 2, jobs
    assert "walltime" in jobs[0].end_reason and f"continues in job {jobs[1].job_id}" in jobs[0].end_reason
    assert jobs[1].end_reason == f"session {run_id} ended: answered"
    report = (tmp_path / "sciagent-runs" / "sessions" / run_id / "report.md").read_text()
    assert "The villin headpiece (PDB" in report and "| status | answered |" in report
    assert all(job.allocation and job.allocation["devices"] >= 1 for job in jobs)


def test_an_early_warning_from_the_scheduler_does_not_stop_a_job_far_from_its_end(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    """Slurm sends ``--signal`` up to 60 s early: the supervisor reads the end time again and keeps working.

    The warning is sent by hand (``scancel --batch --signal=USR1``) minutes before the end; the session,
    whose model takes 40 s to answer, still finishes in its one job.
    """
    answer = "The villin headpiece has 35 residues."
    with OpenAIServer() as server:
        server.script(slow_reply(40, text_reply(answer)))
        server.respond(lambda request: text_reply(answer))
        env = _env(slurm_cluster)
        _submit_a_question(tmp_path, server, env, "--walltime", "10m")
        deadline = time.monotonic() + 120
        while not server.requests and time.monotonic() < deadline:  # the session is waiting on its model
            time.sleep(0.5)
        (job_id,) = [job.job_id for job in _jobs(tmp_path, _run_row(tmp_path)[0])]
        warned = subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=env, capture_output=True)
        assert warned.returncode == 0, warned.stderr
        run_id, status, error = _wait_for_the_end(tmp_path, env, timeout_s=300)
    assert status == "completed", error
    (job,) = _jobs(tmp_path, run_id)
    assert job.end_reason == f"session {run_id} ended: answered"
    notes = [m for (m,) in journal_rows(tmp_path, MESSAGES)]
    assert any(m.startswith(f"job {job_id}: the scheduler warned early (SIGUSR1)") for m in notes), notes
