"""End to end: ``sciagent run`` as a real process, a scripted OpenAI-protocol model, real simulations.

The model is the boundary stand-in (tests/openai_server.py speaks the real protocol over real sockets);
everything else — guardrails, the throughput probe, the local executor, OpenMM, analysis, the journal
and the report — is the real code. Every decision branch of the workflow is driven here through its
real caller: a cheaper plan, a blow-up fixed by the model and by the fallback, adaptation rounds
exhausted, a lost worker retried from its checkpoint, a batch declined at the prompt, a finished
attempt settled on resume, and a run killed in every phase and resumed.
"""

from __future__ import annotations

import json
import os
import pty
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from journal_sql import journal_rows
from openai_server import (
    LLAMA_CPP_REJECTS_JSON_SCHEMA,
    OpenAIServer,
    RecordedRequest,
    Reply,
    slow_reply,
    text_reply,
)
from sciagent.science.analysis import analyze_trajectory
from sciagent.workflows.study.policy import RetryLimits
from scripted_plans import villin_plan
from table_checks import assert_row_is_the_analysis

pytestmark = [pytest.mark.slow, pytest.mark.whole_machine]  # plans are fitted to this machine

BLOW_UP_PLAN = villin_plan(
    elevated_temperatures_k=[450],
    constraints="none",  # 4 fs with free bonds to hydrogen: blows up within a few hundred steps
    rationale="High temperature probes unfolding; 4 fs with HMR keeps it cheap.",
)
SAFE_PLAN = {**BLOW_UP_PLAN, "elevated_temperatures_k": [400], "constraints": "hbonds"}
FIX = {"timestep_fs": 2, "constraints": "hbonds", "minimize": True, "rationale": "Constrain H bonds at 2 fs."}
SUMMARY = {"summary": "At 300 K the backbone held; the hotter run is compared in the findings."}
GARBAGE = "I think maybe 300 kelvin? Not sure."
KEY = "sk-scripted-KEY-0042"
NO_EXTENSIONS = "[study]\nextensions = 0\n"  # runs cut short by the budget are not extended: deterministic


def _workspace(
    tmp_path: Path, base_url: str, extra: str = "", max_retries: int = 2, timeout_s: float = 30
) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nkind = "openai"\nbase_url = "{base_url}"\nmodel = "scripted-model"\n'
        f"max_retries = {max_retries}\ntimeout_s = {timeout_s}\n{extra}"
    )
    return tmp_path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", *args]


def _run(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _resume(cwd: Path, run_id: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "sciagent", "resume", run_id, "--json", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(summary: dict) -> dict:
    return json.loads(Path(summary["results_json"]).read_text())


def _run_dir(cwd: Path) -> Path:
    (run_id,) = journal_rows(cwd, "SELECT id FROM runs")[0]
    return cwd / "sciagent-runs" / run_id


def _state(cwd: Path) -> dict:
    return json.loads((_run_dir(cwd) / "state.json").read_text())


def _adaptations(results: dict) -> list[tuple[str, str, str]]:
    return [(a["condition"], a["trigger"], a["decided_by"]) for a in results["record"]["adaptations"]]


def _assert_table_matches_the_files(results: dict) -> None:
    """Each completed row's numbers equal what the analysis layer computes from that run's files."""
    for condition, row in zip(results["record"]["conditions"], results["table"], strict=True):
        if condition["status"] != "completed":
            continue
        files = condition["outcome"]["result"]["files"]
        spec = condition["spec"]
        assert spec == condition["outcome"]["result"]["spec"]  # the spec is the one of this result
        analysis = analyze_trajectory(
            Path(files["start_pdb"]),
            Path(files["trajectory"]),
            Path(files["state_csv"]),
            production_start_ps=spec["equilibration_steps"] * spec["timestep_fs"] / 1000.0,
            target_temperature_k=spec["temperature_k"],
        )
        assert_row_is_the_analysis(row, analysis)


def _assert_no_step_ran_twice(run_dir: Path) -> None:
    """Every state CSV holds each reported step once, in order, with no gap: resumes continued.

    Each phase reports every ``report_interval`` steps from its own start (production starts at the
    end of equilibration); a completed run's last row is the step its production ended at (its
    deadline's report step, or its maximum).
    """
    csvs = sorted((run_dir / "conditions").glob("*/run*/state.csv"))
    assert csvs
    for path in csvs:
        spec = json.loads((path.parent / "spec.json").read_text())
        every, equilibration = spec["report_interval"], spec["equilibration_steps"]
        rows = [line.split(",")[:2] for line in path.read_text().splitlines()[1:]]
        for phase, start in (("equilibration", 0), ("production", equilibration)):
            steps = [int(step) for name, step in rows if name == phase]
            assert steps == list(range(start + every, start + every * len(steps) + 1, every)), (path, phase)
        result = json.loads((path.parent / "result.json").read_text())
        if result["status"] == "completed":  # its last row is its last step: the deadline's or the maximum's
            assert int(rows[-1][1]) == result["steps_completed"], path
            if result["ended_by"] == "max":
                assert result["steps_completed"] == equilibration + spec["production_steps"], path


def test_blow_ups_are_fixed_by_the_model_and_by_the_fallback(tmp_path: Path) -> None:
    """300 K and 450 K at 4 fs with free bonds to H (kept on request): both blow up. The model's
    first fix validates; its second answer never does, so the documented fallback fixes that one.
    The first fix takes 20 s to arrive: the adjusted runs get a deadline from what is left then, so
    they finish inside the budget, completed, instead of at their wall-time limit."""
    with OpenAIServer() as server:
        server.script(
            LLAMA_CPP_REJECTS_JSON_SCHEMA,  # the endpoint speaks llama.cpp's dialect: negotiated once
            text_reply(json.dumps(BLOW_UP_PLAN)),
            slow_reply(20.0, text_reply(json.dumps(FIX))),
            *[text_reply(GARBAGE) for _ in range(3)],  # the second fix: three invalid answers
            text_reply(json.dumps(SUMMARY)),
        )
        cwd = _workspace(tmp_path, server.base_url, NO_EXTENSIONS)
        completed = _run(cwd, "--budget", "75s", "--allow-unconstrained", "--json")
        assert completed.returncode == 0, completed.stderr
        assert server.pending() == 0
        requests = server.chat_requests()
        adjust_request = requests[2].body["messages"][-1]["content"]
        styles = [request.body["response_format"]["type"] for request in requests]
        base_url = server.base_url
    assert "blew up" in adjust_request  # the model saw the failure it had to fix
    assert styles == ["json_schema"] + ["json_object"] * (len(styles) - 1)  # kept once it worked
    dialects = journal_rows(cwd, "SELECT base_url, model_id, style FROM endpoint_dialects")
    assert dialects == [(base_url.rstrip("/"), "scripted-model", "json_object")]  # for later sessions
    summary = json.loads(completed.stdout)
    assert summary["failed_conditions"] == []
    results = _results(summary)
    instability = sorted(a[2] for a in _adaptations(results) if a[1] == "instability")
    assert instability == ["fallback", "model"]
    for adaptation in results["record"]["adaptations"]:
        assert adaptation["changes"]["constraints"] == "hbonds" and adaptation["changes"]["timestep_fs"] <= 2
    report = Path(summary["report_md"]).read_text()
    assert "Adaptation" in report and "instability" in report and "fallback" in report
    assert "data:image/png;base64," in Path(summary["report_html"]).read_text()
    outcomes = [
        row[0] for row in journal_rows(cwd, "SELECT outcome FROM model_calls WHERE purpose = 'adjust'")
    ]
    assert sorted(outcomes) == ["fallback", "invalid", "invalid", "invalid", "valid"]
    for condition in results["record"]["conditions"]:  # adjusted runs end in time
        result = condition["outcome"]["result"]
        assert result["spec"]["production_deadline_unix"] is not None
        assert result["status"] == "completed" and result["ended_by"] in ("deadline", "max")
    _assert_table_matches_the_files(results)


def test_adaptation_rounds_exhausted_fail_the_condition_and_the_exit_code(tmp_path: Path) -> None:
    """With no adjustment allowed, a blow-up is final: both conditions fail, the exit code is 1, and
    ``--json`` still prints exactly one object naming them."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(BLOW_UP_PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url, "[study]\nadaptation_rounds = 0\n")
        completed = _run(cwd, "--budget", "60s", "--allow-unconstrained", "--json")
    assert completed.returncode == 1, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["status"] == "completed with failures"
    assert sorted(summary["failed_conditions"]) == ["T300-r1", "T450-r1"]
    assert "not every condition completed" in completed.stderr
    record = _results(summary)["record"]
    for condition in record["conditions"]:
        assert condition["status"] == "failed"
        assert condition["failure"].startswith("still unstable after 0 adjustment(s)")
    assert record["adaptations"] == []
    assert journal_rows(cwd, "SELECT status FROM runs") == [("completed",)]


def test_a_fix_that_leaves_no_budget_fails_the_condition_with_the_reason(tmp_path: Path) -> None:
    """The model's fix arrives after what is left of a 70 s budget is spent: the adjusted run is not
    started only to be stopped at its wall-time limit; the condition fails naming the budget and the
    blow-up it could not fix."""
    with OpenAIServer() as server:
        slow_fix = slow_reply(50.0, text_reply(json.dumps(FIX)))
        server.script(text_reply(json.dumps(BLOW_UP_PLAN)), slow_fix, text_reply(json.dumps(FIX)),
                      text_reply(json.dumps(SUMMARY)))  # fmt: skip
        cwd = _workspace(tmp_path, server.base_url, NO_EXTENSIONS, timeout_s=90)
        completed = _run(cwd, "--budget", "70s", "--allow-unconstrained", "--json")
    assert completed.returncode == 1, completed.stderr
    record = _results(json.loads(completed.stdout))["record"]
    for condition in record["conditions"]:
        assert condition["status"] == "failed"
        assert condition["failure"].startswith("no budget left for the adjusted run (0 steps affordable)")
        assert "blew up" in condition["failure"]
    assert not list(_run_dir(cwd).glob("conditions/*/run2"))  # no adjusted run was started


def test_garbage_answers_use_the_fallbacks_and_the_study_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: the endpoint's key, echoed back in a reply, is written nowhere in the journal."""
    monkeypatch.setenv("SCRIPTED_KEY", KEY)
    with OpenAIServer() as server:
        cwd = _workspace(tmp_path, server.base_url, 'api_key_env = "SCRIPTED_KEY"\n' + NO_EXTENSIONS)
        # `llm check` finds the endpoint's style (llama.cpp's json_object) and the journal keeps it ...
        probes = (text_reply("ready"), LLAMA_CPP_REJECTS_JSON_SCHEMA, text_reply('{"ready": true}'))
        server.script(*probes, text_reply("pong"))  # the last: asked to call a tool, it answers in text
        check = subprocess.run([sys.executable, "-m", "sciagent", "llm", "check", "--llm", "scripted"],
                               cwd=cwd, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert check.returncode == 0 and "json_object (remembered" in check.stdout, check.stderr
        checked = len(server.chat_requests())
        server.script(text_reply(f"{GARBAGE} {KEY}"), *[text_reply(GARBAGE) for _ in range(5)])
        completed = _run(cwd, "--budget", "75s", "--json")
        assert completed.returncode == 0, completed.stderr
        assert server.pending() == 0  # three plan asks and three interpretation asks, nothing more
        # ... so the run asks in that style from its first request: nothing is rejected again.
        styles = {request.body["response_format"]["type"] for request in server.chat_requests()[checked:]}
    assert styles == {"json_object"}
    raw_replies = [row[0] for row in journal_rows(cwd, "SELECT raw_reply FROM model_calls ORDER BY id")]
    assert raw_replies[0] == f"{GARBAGE} [redacted]"
    for path in (cwd / "sciagent-runs").rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    summary = json.loads(completed.stdout)
    results = _results(summary)
    record = results["record"]
    assert record["plan_source"] == "fallback" and record["interpretation_source"] == "fallback"
    assert [c["status"] for c in record["conditions"]] == ["completed", "completed"]
    outcomes = [row[0] for row in journal_rows(cwd, "SELECT outcome FROM model_calls ORDER BY id")]
    assert outcomes == ["invalid"] * 3 + ["fallback"] + ["invalid"] * 3 + ["fallback"]
    report = Path(summary["report_md"]).read_text()
    assert "fallback" in report.lower()
    # The 60 s budget cannot give the 50 ps a verdict needs: the report says how long and how.
    assert results["record"]["outlook"]["needed_production_ps"] == 50
    assert "sciagent run --structure villin --llm scripted --site local --budget" in report
    _assert_table_matches_the_files(results)
    _check_the_run_commands(cwd, summary)


def _check_the_run_commands(cwd: Path, summary: dict) -> None:
    """`sciagent runs`, `show` and `report` read what the study left."""
    run_id = summary["run_id"]

    def sciagent(*args: str) -> str:
        completed = subprocess.run([sys.executable, "-m", "sciagent", *args], cwd=cwd, capture_output=True,
                                   text=True, timeout=120)  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    assert run_id in sciagent("runs")
    timeline = sciagent("show", run_id[:15])  # a unique prefix is enough
    for text in ("plan", "fit", "simulate", "report", "fallback"):
        assert text in timeline
    assert "fallback: no model call" in timeline and "0+0 tokens" not in timeline  # unknown is unknown
    results = Path(summary["results_json"])
    before = results.read_text()
    results.with_name("report.html").unlink()
    assert sciagent("report", run_id).strip().endswith("report.html")
    assert results.with_name("report.html").exists() and results.read_text() == before


def test_a_cheaper_plan_is_fitted_and_a_declined_batch_is_not_run(tmp_path: Path) -> None:
    """Explicit solvent at 2 fs cannot fit a minute: the plan becomes implicit at 4 fs with HMR (the
    explicit system is never probed). The person at the terminal then declines the batch."""
    plan = {**SAFE_PLAN, "solvent": "explicit", "timestep_fs": 2, "hydrogen_mass_repartitioning": False}
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(plan)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url)
        controller, terminal = pty.openpty()
        os.write(controller, b"n\n")  # answered before it is asked: the terminal buffers it
        try:
            completed = subprocess.run(
                _command("--budget", "60s", "--approve", "--json"), cwd=cwd, stdin=terminal,
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        finally:
            os.close(terminal)
            os.close(controller)
    assert completed.returncode == 1, completed.stderr
    assert "Run 2 simulation(s) [T300-r1, T400-r1]" in completed.stderr  # asked on the terminal
    summary = json.loads(completed.stdout)  # the question did not reach stdout
    record = _results(summary)["record"]
    assert [c["status"] for c in record["conditions"]] == ["not run", "not run"]
    assert all(c["failure"] == "the user declined the batch" for c in record["conditions"])
    changes = [(c["field"], c["applied"]) for c in record["guardrail_changes"]]
    assert ("solvent", "implicit") in changes and ("timestep_fs", 4) in changes
    probes = _state(cwd)["probes"]
    assert [p["solvent"] for p in probes] == ["implicit"]
    assert journal_rows(cwd, "SELECT key FROM tasks") == []  # nothing was submitted


def test_a_lost_worker_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    """The worker running T300-r1 is killed after its first periodic checkpoint: the retry continues
    from that checkpoint in the same work directory, and no step is computed twice."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(SAFE_PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url, NO_EXTENSIONS)
        process = subprocess.Popen(_command("--budget", "75s", "--json"), cwd=cwd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            workdir = _wait_for(lambda: _checkpointed_workdir(cwd, "T300-r1"), process, "a checkpoint")
            worker = _wait_for(lambda: _process_writing(workdir / "state.csv"), process, "its worker")
            os.kill(worker, signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=300)
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    results = _results(json.loads(stdout))
    assert ("T300-r1", "transient", "policy") in _adaptations(results)
    tasks = dict(journal_rows(cwd, "SELECT key, status FROM tasks"))
    assert tasks["T300-r1/run1/attempt1"] == "failed" and tasks["T300-r1/run1/attempt2"] == "completed"
    condition = next(c for c in results["record"]["conditions"] if c["name"] == "T300-r1")
    assert condition["status"] == "completed" and condition["outcome"]["result"]["resumed_from_step"] > 0
    _assert_no_step_ran_twice(_run_dir(cwd))
    _assert_table_matches_the_files(results)


@pytest.mark.hpc
def test_a_worker_that_always_dies_runs_once_per_workflow_attempt(tmp_path: Path) -> None:
    """One owner for lost-worker retries: the workflow's policy (``transient_retries``, 2 by default);
    Parsl's own retries are 0 at every site. Every worker that starts T300-r1 on the local-parsl site
    is killed: the task runs exactly 1 + 2 times (with Parsl retrying too it ran up to 9), the
    condition fails with the count, the other completes, and the exit code says a condition failed."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(SAFE_PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url, NO_EXTENSIONS)
        process = subprocess.Popen(_command("--site", "local-parsl", "--budget", "90s", "--json"), cwd=cwd,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        killed: set[int] = set()
        try:
            while process.poll() is None:
                started = journal_rows(cwd, "SELECT id FROM runs")
                csv = _run_dir(cwd) / "conditions/T300-r1/run1/state.csv" if started else None
                worker = _process_writing(csv) if csv else None
                if worker and worker not in killed:
                    os.kill(worker, signal.SIGKILL)
                    killed.add(worker)
                time.sleep(0.1)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 1, stderr
    assert len(killed) == 1 + RetryLimits().transient_retries
    results = _results(json.loads(stdout))
    statuses = {c["name"]: c["status"] for c in results["record"]["conditions"]}
    assert statuses == {"T300-r1": "failed", "T400-r1": "completed"}
    attempts = [k for (k,) in journal_rows(cwd, "SELECT key FROM tasks") if k.startswith("T300-r1")]
    assert len(attempts) == 3


def _checkpointed_workdir(cwd: Path, condition: str) -> Path | None:
    for meta in (
        _run_dir(cwd).glob(f"conditions/{condition}/run1/checkpoint.json")
        if journal_rows(cwd, "SELECT id FROM runs")
        else []
    ):
        if json.loads(meta.read_text())["step"] > 0:
            return meta.parent
    return None


def _process_writing(path: Path) -> int | None:
    """The pid of the process that has ``path`` open (the worker writing a run's CSV)."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


def _wait_for(
    probe: Callable[[], object], process: subprocess.Popen, what: str, timeout: float = 240
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[1]}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


def _responder(delay_s: float) -> Callable[[RecordedRequest], Reply]:
    """Answers by what is asked (plan, fix or interpretation), each after ``delay_s``: a run killed and
    resumed at random moments asks in an order no script can fix."""

    def respond(request: RecordedRequest) -> Reply:
        asked = request.body["messages"][-1]["content"]
        answer = FIX if "failed:" in asked else SUMMARY if "interpretation" in asked else BLOW_UP_PLAN
        return slow_reply(delay_s, text_reply(json.dumps(answer)))

    return respond


def _kill_in(process: subprocess.Popen, cwd: Path, started: Callable[[], object], phase: str,
             longest_s: float) -> str:  # fmt: skip
    """Wait until ``started()``, then SIGKILL at a random moment within ``longest_s``; return the phase
    the saved state was in at that moment."""
    _wait_for(started, process, f"the {phase} phase")
    time.sleep(random.uniform(0.0, longest_s))
    in_phase = _state(cwd)["phase"]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return in_phase


def _asked(server: OpenAIServer, text: str) -> list[RecordedRequest]:
    return [r for r in server.chat_requests() if text in r.body["messages"][-1]["content"]]


def _running_step(cwd: Path, kind: str) -> list[tuple]:
    return journal_rows(cwd, f"SELECT id FROM steps WHERE kind = '{kind}' AND status = 'running'")


def _running_tasks(cwd: Path) -> list[tuple]:
    return journal_rows(cwd, "SELECT key FROM tasks WHERE status = 'running'")


def test_a_run_killed_in_every_phase_resumes_and_completes(tmp_path: Path) -> None:
    """SIGKILL inside the plan, the simulations, an adaptation and the report, resuming after each: the
    recorded plan is not asked again, a finished attempt the state had not caught up with is settled
    rather than rerun, and no MD step runs twice. The plan is the cheapest (4 fs, implicit): it is never
    probed (a kill inside a probe is in tests/test_speed_book.py)."""
    with OpenAIServer() as server:
        server.respond(_responder(delay_s=3.0))
        cwd = _workspace(tmp_path, server.base_url, NO_EXTENSIONS)
        process = subprocess.Popen(_command("--budget", "120s", "--allow-unconstrained"), cwd=cwd,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        killed = [_kill_in(process, cwd, lambda: _asked(server, "Propose a study"), "plan", 2.5)]
        run_id = _run_dir(cwd).name
        process = _resume(cwd, run_id)
        killed.append(_kill_in(process, cwd, lambda: _running_tasks(cwd), "simulate", 1.0))
        process = _resume(cwd, run_id)
        killed.append(_kill_in(process, cwd, lambda: _asked(server, "failed:"), "adapt", 2.5))
        process = _resume(cwd, run_id)
        killed.append(_kill_in(process, cwd, lambda: _running_step(cwd, "report"), "report", 2.5))
        # The kill window between journalling a result and saving the state: a condition the journal
        # saw complete is still "running" in the state, as if killed between the two writes.
        state_path = _run_dir(cwd) / "state.json"
        state = json.loads(state_path.read_text())
        settled = state["conditions"][0]
        settled_key = f"{settled['name']}/run{settled['lineage']}/attempt{settled['attempts']}"
        settled["status"], state["phase"] = "running", "simulate"
        state_path.write_text(json.dumps(state))
        attempts_before = dict(journal_rows(cwd, "SELECT key, attempts FROM tasks"))
        process = _resume(cwd, run_id)
        stdout, stderr = process.communicate(timeout=300)
        plan_asks = len(_asked(server, "Propose a study"))
    assert killed == ["plan", "simulate", "simulate", "report"], killed  # an adaptation is in simulate
    assert process.returncode == 0, stderr
    assert plan_asks == 2  # asked again only because the first answer never arrived
    summary = json.loads(stdout)
    results = _results(summary)
    assert [c["status"] for c in results["record"]["conditions"]] == ["completed", "completed"]
    tasks = dict(journal_rows(cwd, "SELECT key, attempts FROM tasks"))
    assert tasks[settled_key] == attempts_before[settled_key]  # settled, not submitted again
    state = json.loads(state_path.read_text())
    assert state["probe_rounds"] == 0 and state["probes"] == []  # the cheapest plan: no probe, ever
    assert journal_rows(cwd, "SELECT status FROM runs") == [("completed",)]
    _assert_no_step_ran_twice(_run_dir(cwd))
    _assert_table_matches_the_files(results)


def test_bad_structure_is_one_line_and_journalled(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        completed = _run(
            _workspace(tmp_path, server.base_url), "--structure", "missing.pdb", "--budget", "2m"
        )
        assert server.chat_requests() == []  # nothing was asked of the model
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error:") and "missing.pdb" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    status, error = journal_rows(tmp_path, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "missing.pdb" in error


def test_unreachable_model_endpoint_is_one_line_and_journalled(tmp_path: Path) -> None:
    cwd = _workspace(tmp_path, "http://127.0.0.1:9/v1", max_retries=1)  # port 9: nothing listens
    completed = _run(cwd, "--budget", "2m", "--json")
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0]
    error_object = json.loads(completed.stdout)  # --json: one object even when the run fails
    assert error_object["status"] == "failed" and "127.0.0.1:9" in error_object["error"]
    status, error = journal_rows(tmp_path, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "127.0.0.1:9" in error


def test_budget_too_small_for_a_simulation_is_one_line_and_journalled(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        completed = _run(_workspace(tmp_path, server.base_url), "--budget", "10s")
        assert server.chat_requests() == []  # refused before asking the model anything
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()
    assert "too small for even one simulation" in line and "--budget" in line
    status, error = journal_rows(tmp_path, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "too small" in error
    assert os.path.exists(tmp_path / "sciagent-runs")


def test_a_bug_is_one_line_with_its_traceback_in_the_run_directory(tmp_path: Path) -> None:
    """A state file edited into something the workflow cannot handle (its plan removed after the
    plan phase) makes the report code fail on an assertion: not one of our errors, so the person gets
    one line naming the log file, the journal marks the run failed, and the exit code is 1."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(SAFE_PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url)
        process = subprocess.Popen(_command("--budget", "60s"), cwd=cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        _kill_in(
            process,
            cwd,
            lambda: journal_rows(cwd, "SELECT id FROM steps WHERE kind = 'fit'"),
            "fit",
            0.0,
        )
    run_dir = _run_dir(cwd)
    state = json.loads((run_dir / "state.json").read_text())
    state.update(phase="report", plan=None)
    (run_dir / "state.json").write_text(json.dumps(state))
    resumed = subprocess.run([sys.executable, "-m", "sciagent", "resume", run_dir.name], cwd=cwd,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 1
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: AssertionError"), resumed.stderr
    log = Path(lines[0].rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert log.parent == run_dir and "Traceback (most recent call last)" in log.read_text()
    status, error = journal_rows(cwd, "SELECT status, error FROM runs")[0]
    assert status == "failed" and error.startswith("internal error: AssertionError")


@pytest.mark.hpc
def test_study_on_the_local_parsl_site(tmp_path: Path) -> None:
    """The same study through Parsl's HighThroughputExecutor (LocalProvider) instead of the process pool."""
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(SAFE_PLAN)), text_reply(json.dumps(SUMMARY)))
        cwd = _workspace(tmp_path, server.base_url, NO_EXTENSIONS)
        completed = _run(cwd, "--site", "local-parsl", "--budget", "70s", "--json")
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    results = _results(summary)
    assert [c["status"] for c in results["record"]["conditions"]] == ["completed", "completed"]
    assert journal_rows(tmp_path, "SELECT DISTINCT executor FROM tasks") == [("local-parsl",)]
    _assert_table_matches_the_files(results)
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"process_worker_pool" in _read(p)
                 and str(tmp_path).encode() in _read(p)]  # fmt: skip
    assert leftovers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
