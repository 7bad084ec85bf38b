"""A run stops cleanly on request and is never left ``running`` (issue 22, item 3).

The stop file stops a simulation at a report step with a checkpoint of exactly that step, and the
segment ledger shows that the run that continues it computes no step twice. A real ``sciagent run``
started with SIGTERM ignored (as schedulers and ``&`` start jobs) still stops on SIGTERM: the study
checkpoints its simulations, the run ends ``interrupted`` with the reason, one line says how to resume,
and ``sciagent resume`` completes it. The model is the scripted OpenAI-protocol server; the rest is real.
"""

from __future__ import annotations

import csv
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from journal_sql import journal_rows
from openai_server import OpenAIServer, slow_reply, text_reply
from sciagent.cli.signals import DEFAULT_GRACE_S, SIGTERM_REASON
from sciagent.science.md import run_md
from sciagent.science.reporters import MDProgress
from sciagent.science.segments import read_segments
from sciagent.science.spec import MDSpec
from sciagent.workflows.study.stopping import clear_stop, request_stop, stop_path, stop_reason
from scripted_plans import villin_plan

STOP_AT = 150  # a report step (report_interval 50) between two periodic checkpoints (every 100)
PLAN = villin_plan(
    production_ps=10, rationale="300 K against 400 K, long enough to be running when the job's limit comes."
)
SUMMARY = {"summary": "At 300 K the backbone held; the hotter run is compared in the findings."}


def _ignoring_sigterm() -> None:
    """In the child before exec: SIGTERM ignored, the disposition a batch job may inherit."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_at(path: Path, step: int, reason: str):
    def progress(update: MDProgress) -> None:
        if update.step >= step and not path.exists():
            path.write_text(reason)

    return progress


def _last_csv_step(workdir: Path) -> int:
    with open(workdir / "state.csv", newline="") as handle:
        return int(list(csv.DictReader(handle))[-1]["step"])


def _assert_contiguous(segments: list[dict], total_steps: int) -> None:
    """Each segment starts where the last ended, from 0 to the end: no step computed twice or skipped."""
    assert segments[0]["from_step"] == 0 and segments[-1]["to_step"] == total_steps
    for before, after in itertools.pairwise(segments):
        assert after["from_step"] == before["to_step"], segments
    assert sum(s["to_step"] - s["from_step"] for s in segments) == total_steps


def test_the_stop_protocol_round_trips(tmp_path: Path) -> None:
    assert stop_reason(tmp_path) is None
    request_stop(tmp_path, "the job's walltime ends in 5 minutes")
    assert stop_reason(tmp_path) == "the job's walltime ends in 5 minutes"
    clear_stop(tmp_path)
    clear_stop(tmp_path)  # nothing to clear: no error
    assert stop_reason(tmp_path) is None


def test_the_stop_file_is_not_part_of_the_restart_key(quick_spec_fields: dict) -> None:
    spec = MDSpec(**quick_spec_fields)
    assert spec.restart_key() == spec.model_copy(update={"stop_file": "/elsewhere/stop"}).restart_key()


@pytest.mark.slow
def test_a_stop_file_checkpoints_at_that_step_and_the_run_continues_without_recomputing(
    tmp_path: Path, quick_spec_fields: dict
) -> None:
    stop = tmp_path / "stop-requested"
    spec = MDSpec(**{**quick_spec_fields, "production_steps": 400, "stop_file": str(stop)})
    workdir = tmp_path / "stopped"
    stopped = run_md(spec, workdir, progress=_stop_at(stop, STOP_AT, "the job ends soon"))
    assert stopped.status == "failed" and stopped.failure_class == "stopped"
    assert f"step {STOP_AT}" in stopped.message and "the job ends soon" in stopped.message
    checkpoint = json.loads((workdir / "checkpoint.json").read_text())["step"]
    assert checkpoint == STOP_AT == _last_csv_step(workdir)  # exact: not the periodic checkpoint at 100

    stop.unlink()
    resumed = run_md(spec, workdir)
    assert resumed.ok and resumed.resumed_from_step == STOP_AT
    segments = read_segments(workdir)
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, STOP_AT), (STOP_AT, 400)]
    _assert_contiguous(segments, spec.total_steps)
    assert all(s["job_id"] is None and s["host"] and s["wall_s"] > 0 for s in segments)

    # Control: the same file written at the same step, but the spec names no stop file (no guard reads
    # it): the run goes on to the end in one segment. The guard is what stops it.
    control_dir = tmp_path / "control"
    unguarded = spec.model_copy(update={"stop_file": None})
    control = run_md(unguarded, control_dir, progress=_stop_at(stop, STOP_AT, "ignored"))
    assert stop.exists() and control.ok and control.resumed_from_step is None
    assert [(s["from_step"], s["to_step"]) for s in read_segments(control_dir)] == [(0, 400)]


def _workspace(tmp_path: Path, base_url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nkind = "openai"\nbase_url = "{base_url}"\nmodel = "scripted-model"\n'
        "max_retries = 2\ntimeout_s = 30\n[study]\nextensions = 0\n"
    )
    return tmp_path


def _running_simulations(cwd: Path) -> list[Path]:
    """Work directories of conditions that have written a periodic checkpoint past step 0."""
    runs = journal_rows(cwd, "SELECT id FROM runs")
    if not runs:
        return []
    metas = (cwd / "sciagent-runs" / runs[0][0]).glob("conditions/*/run1/checkpoint.json")
    return [m.parent for m in metas if json.loads(m.read_text())["step"] > 0]


@pytest.mark.slow
@pytest.mark.whole_machine  # the plan is fitted to the measured throughput
def test_sigterm_stops_a_run_that_inherited_it_ignored_and_resume_completes_it(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url)
        command = [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", "--budget", "150s"]
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=_ignoring_sigterm)  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while not _running_simulations(cwd):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no simulation checkpointed within 240 s"
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            _, stderr = process.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            process.kill()
        (run_id,) = journal_rows(cwd, "SELECT id FROM runs")[0]
        run_dir = cwd / "sciagent-runs" / run_id
        assert process.returncode == 1 and took < DEFAULT_GRACE_S, (took, stderr)
        assert "Traceback" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: {SIGTERM_REASON}: `sciagent resume {run_id}` continues the run"]
        assert journal_rows(cwd, "SELECT status, error FROM runs") == [("interrupted", SIGTERM_REASON)]
        events = [m for (m,) in journal_rows(cwd, "SELECT message FROM events WHERE level = 'warning'")]
        assert f"{SIGTERM_REASON}; `sciagent resume {run_id}` continues it" in events
        state = json.loads((run_dir / "state.json").read_text())
        interrupted = [c for c in state["conditions"] if c["status"] == "running"]
        assert interrupted and all(c["attempts"] == 1 and c["transient_retries"] == 0 for c in interrupted)
        assert state["adaptations"] == []  # a stop is not a failure: nothing adapted, nothing retried
        stopped_at = {}
        for condition in interrupted:
            workdir = run_dir / "conditions" / condition["name"] / "run1"
            (segment,) = read_segments(workdir)
            checkpoint = json.loads((workdir / "checkpoint.json").read_text())["step"]
            assert segment["to_step"] == checkpoint == _last_csv_step(workdir)
            stopped_at[condition["name"]] = checkpoint
        assert stop_reason(run_dir) == SIGTERM_REASON

        resumed = subprocess.run([sys.executable, "-m", "sciagent", "resume", run_id, "--json"], cwd=cwd,
                                 capture_output=True, text=True, timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert not stop_path(run_dir).exists()  # the stale request was withdrawn, or it would stop at once
    assert journal_rows(cwd, "SELECT status FROM runs") == [("completed",)]
    results = json.loads(Path(json.loads(resumed.stdout)["results_json"]).read_text())
    for condition in results["record"]["conditions"]:
        assert condition["status"] == "completed"
        workdir = Path(condition["outcome"]["result"]["workdir"])
        segments = read_segments(workdir)
        # to the step the run ended at: its deadline or its maximum, whichever came first
        _assert_contiguous(segments, condition["outcome"]["result"]["steps_completed"])
        if condition["name"] in stopped_at:
            assert segments[0]["to_step"] == stopped_at[condition["name"]] and len(segments) == 2
            assert condition["outcome"]["result"]["resumed_from_step"] == stopped_at[condition["name"]]


def test_sigterm_ends_an_ask_session_interrupted_with_the_command_that_resumes_it(tmp_path: Path) -> None:
    """A session waiting on its model when the job's limit comes: it is not left ``running``."""
    with OpenAIServer() as server:
        server.script(slow_reply(60, text_reply("too late")))
        (tmp_path / "sciagent.toml").write_text(
            f'[llm.scripted]\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
        )
        command = [sys.executable, "-m", "sciagent", "ask", "How many atoms has villin?", "--llm", "scripted"]
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_ignoring_sigterm,
        )
        try:
            deadline = time.monotonic() + 120
            while not server.chat_requests():
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
    ((session_id, status, error),) = journal_rows(tmp_path, "SELECT id, status, error FROM runs")
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {SIGTERM_REASON}: `sciagent resume {session_id}` continues it"]
    assert (status, error) == ("interrupted", SIGTERM_REASON)


def test_without_the_handler_an_inherited_ignored_sigterm_does_not_stop_a_process() -> None:
    """Control: what the handlers are for. A process that merely inherits SIG_IGN survives SIGTERM."""
    sleeper = "import time; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen(
        [sys.executable, "-c", sleeper], stdout=subprocess.PIPE, text=True, preexec_fn=_ignoring_sigterm
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=2)
    finally:
        child.kill()
        child.wait()
