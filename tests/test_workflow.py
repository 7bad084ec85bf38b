"""End to end: ``sciagent run`` as a real process, a scripted OpenAI-protocol model, real simulations.

The model is the boundary stand-in (tests/openai_server.py speaks the real protocol over real sockets);
everything else — guardrails, the throughput probe, the local executor, OpenMM, analysis, the journal
and the report — is the real code.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import OpenAIServer, text_reply
from sciagent.science.analysis import analyze_trajectory

pytestmark = pytest.mark.slow

BLOW_UP_PLAN = {
    "reference_temperature_k": 300,
    "elevated_temperatures_k": [450],
    "replicas": 1,
    "timestep_fs": 4,
    "hydrogen_mass_repartitioning": True,
    "constraints": "none",  # 4 fs with free bonds to hydrogen: blows up within a few hundred steps
    "production_ps": 2,
    "solvent": "implicit",
    "rationale": "High temperature probes unfolding; 4 fs with HMR keeps it cheap.",
}
FIX = {"timestep_fs": 2, "constraints": "hbonds", "minimize": True, "rationale": "Constrain H bonds at 2 fs."}


def _workspace(tmp_path: Path, base_url: str, max_retries: int = 2) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nkind = "openai"\nbase_url = "{base_url}"\nmodel = "scripted-model"\n'
        f"max_retries = {max_retries}\ntimeout_s = 30\n"
    )
    return tmp_path


def _run(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _journal_rows(cwd: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(cwd / "sciagent-runs" / "journal.sqlite") as connection:
        return connection.execute(sql).fetchall()


def _results(summary: dict) -> dict:
    return json.loads(Path(summary["results_json"]).read_text())


def test_blow_up_is_fixed_by_the_models_adjustment(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        server.script(
            text_reply(json.dumps(BLOW_UP_PLAN)),
            text_reply(json.dumps(FIX)),  # one fix per blown-up run: 300 K and 450 K
            text_reply(json.dumps(FIX)),
            text_reply(json.dumps({"summary": "Both runs were stabilised by constraining H bonds."})),
        )
        completed = _run(_workspace(tmp_path, server.base_url), "--budget", "4m", "--json")
        assert completed.returncode == 0, completed.stderr
        assert server.pending() == 0
        adjust_request = server.chat_requests()[1].body["messages"][-1]["content"]
    assert "blew up" in adjust_request  # the model saw the failure it had to fix
    summary = json.loads(completed.stdout)
    assert summary["failed_conditions"] == []
    results = _results(summary)
    adaptations = results["record"]["adaptations"]
    first = adaptations[0]
    assert (first["trigger"], first["decided_by"]) == ("instability", "model")
    assert first["changes"]["timestep_fs"] == 2 and first["changes"]["constraints"] == "hbonds"
    report = Path(summary["report_md"]).read_text()
    assert "Adaptation" in report and "instability" in report and "model" in report
    html = Path(summary["report_html"]).read_text()
    assert "data:image/png;base64," in html
    _assert_table_matches_the_files(results)


def test_garbage_answers_use_the_fallbacks_and_the_study_completes(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        server.script(*[text_reply("I think maybe 300 kelvin? Not sure.") for _ in range(6)])
        completed = _run(_workspace(tmp_path, server.base_url), "--budget", "100s", "--json")
        assert completed.returncode == 0, completed.stderr
        assert server.pending() == 0  # three plan asks and three interpretation asks, nothing more
    results = _results(json.loads(completed.stdout))
    record = results["record"]
    assert record["plan_source"] == "fallback" and record["interpretation_source"] == "fallback"
    assert [c["status"] for c in record["conditions"]] == ["completed", "completed"]
    outcomes = [row[0] for row in _journal_rows(tmp_path, "SELECT outcome FROM model_calls ORDER BY id")]
    assert outcomes == ["invalid"] * 3 + ["fallback"] + ["invalid"] * 3 + ["fallback"]
    report = Path(json.loads(completed.stdout)["report_md"]).read_text()
    assert "fallback" in report.lower()
    _assert_table_matches_the_files(results)
    _check_the_run_commands(tmp_path, json.loads(completed.stdout))


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
    for text in ("plan", "probe", "simulate", "report", "fallback"):
        assert text in timeline
    results = Path(summary["results_json"])
    before = results.read_text()
    results.with_name("report.html").unlink()
    assert sciagent("report", run_id).strip().endswith("report.html")
    assert results.with_name("report.html").exists() and results.read_text() == before


def test_approve_without_a_terminal_refuses_to_wait(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "sciagent", "run", "--approve"], cwd=tmp_path, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "no terminal" in completed.stderr and len(completed.stderr.strip().splitlines()) == 1


def test_killed_run_resumes_without_rerunning_finished_simulations(tmp_path: Path) -> None:
    plan = {**BLOW_UP_PLAN, "elevated_temperatures_k": [320, 340], "timestep_fs": 2, "constraints": "hbonds",
            "hydrogen_mass_repartitioning": False}  # fmt: skip
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(plan)), text_reply(json.dumps({"summary": "All three held."})))
        cwd = _workspace(tmp_path, server.base_url)
        command = [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", "--budget", "4m"]
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = _wait_for_first_completed_task(cwd, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        run_id = _journal_rows(cwd, "SELECT id FROM runs")[0][0]
        resumed = subprocess.run(
            [sys.executable, "-m", "sciagent", "resume", run_id, "--budget", "4m", "--json"],
            cwd=cwd, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
    tasks = _journal_rows(cwd, "SELECT key, status, attempts FROM tasks ORDER BY key")
    assert (first, "completed", 1) in tasks  # that simulation ran exactly once, never resubmitted
    assert all(status == "completed" for _, status, _ in tasks)
    # A later extension of the same trajectory continued from its checkpoint: no step was run twice.
    condition, lineage = first.split("/")[:2]
    state_csv = cwd / "sciagent-runs" / run_id / "conditions" / condition / lineage / "state.csv"
    steps = [line.split(",")[1] for line in state_csv.read_text().splitlines()[1:]]
    assert len(steps) == len(set(steps))
    assert _journal_rows(cwd, "SELECT status FROM runs") == [("completed",)]
    results = _results(json.loads(resumed.stdout))
    assert [c["status"] for c in results["record"]["conditions"]] == ["completed"] * 3
    _assert_table_matches_the_files(results)


def _wait_for_first_completed_task(cwd: Path, process: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        if (cwd / "sciagent-runs" / "journal.sqlite").exists():
            try:
                done = _journal_rows(cwd, "SELECT key FROM tasks WHERE status = 'completed'")
            except sqlite3.OperationalError:  # the schema is being created
                done = []
            if done:
                return done[0][0]
        time.sleep(0.2)
    raise AssertionError("no simulation completed in time")


def _assert_table_matches_the_files(results: dict) -> None:
    """Each completed row's numbers equal what the analysis layer computes from that run's files."""
    for condition, row in zip(results["record"]["conditions"], results["table"], strict=True):
        if condition["status"] != "completed":
            continue
        files = condition["outcome"]["result"]["files"]
        spec = condition["spec"]
        analysis = analyze_trajectory(
            Path(files["start_pdb"]),
            Path(files["trajectory"]),
            Path(files["state_csv"]),
            production_start_ps=spec["equilibration_steps"] * spec["timestep_fs"] / 1000.0,
            target_temperature_k=spec["temperature_k"],
        )
        assert row["final_window_rmsd_mean_angstrom"] == analysis.final_window_rmsd_mean_angstrom
        assert row["rg_mean_nm"] == analysis.rg_mean_nm
        assert row["max_rmsf_angstrom"] == analysis.max_rmsf_angstrom
        assert row["ss_retention"] == analysis.secondary_structure.retention
        assert row["potential_energy_drift_kj_mol_per_ns"] == analysis.potential_energy_kj_mol.drift_per_ns
        assert row["mean_temperature_k"] == analysis.temperature_k.mean
        assert row["verdict"] == analysis.assessment.verdict


def test_bad_structure_is_one_line_and_journalled(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        completed = _run(
            _workspace(tmp_path, server.base_url), "--structure", "missing.pdb", "--budget", "2m"
        )
        assert server.chat_requests() == []  # nothing was asked of the model
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error:") and "missing.pdb" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    status, error = _journal_rows(tmp_path, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "missing.pdb" in error


def test_unreachable_model_endpoint_is_one_line_and_journalled(tmp_path: Path) -> None:
    cwd = _workspace(tmp_path, "http://127.0.0.1:9/v1", max_retries=1)  # port 9: nothing listens
    completed = _run(cwd, "--budget", "2m")
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0]
    status, error = _journal_rows(tmp_path, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "127.0.0.1:9" in error


def test_budget_too_small_for_the_probe_is_one_line_and_journalled(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        completed = _run(_workspace(tmp_path, server.base_url), "--budget", "10s")
        assert server.chat_requests() == []  # refused before asking the model anything
    assert completed.returncode == 2
    assert "too small" in completed.stderr and "--budget" in completed.stderr
    status, error = _journal_rows(tmp_path, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "too small" in error
    assert os.path.exists(tmp_path / "sciagent-runs")


@pytest.mark.hpc
def test_study_on_the_local_parsl_site(tmp_path: Path) -> None:
    """The same study through Parsl's HighThroughputExecutor (LocalProvider) instead of the process pool."""
    plan = {**BLOW_UP_PLAN, "timestep_fs": 2, "constraints": "hbonds", "hydrogen_mass_repartitioning": False,
            "elevated_temperatures_k": [400]}  # fmt: skip
    with OpenAIServer() as server:
        server.script(text_reply(json.dumps(plan)), text_reply(json.dumps({"summary": "Both held."})))
        completed = _run(
            _workspace(tmp_path, server.base_url), "--site", "local-parsl", "--budget", "150s", "--json"
        )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    results = _results(summary)
    assert [c["status"] for c in results["record"]["conditions"]] == ["completed", "completed"]
    assert _journal_rows(tmp_path, "SELECT DISTINCT executor FROM tasks") == [("local-parsl",)]
    _assert_table_matches_the_files(results)
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"process_worker_pool" in _read(p)
                 and str(tmp_path).encode() in _read(p)]  # fmt: skip
    assert leftovers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
