"""The ``sciagent`` command as a user runs it: a real process, real simulations, real exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sciagent.science.outputs import dcd_frame_count

SCIAGENT = [sys.executable, "-m", "sciagent"]


def sciagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCIAGENT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _one_line_error(completed: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_simulate_villin_json(tmp_path: Path) -> None:
    completed = sciagent("simulate", "villin", "--steps", "2000", "--json", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)  # exactly one JSON object, nothing else on stdout
    result, analysis = outcome["result"], outcome["analysis"]
    assert result["status"] == "completed" and result["ns_per_day"] > 0
    for path in result["files"].values():
        assert Path(path).exists(), path
    assert Path(result["workdir"]).parent == (tmp_path / "sciagent-runs").resolve()
    assert analysis["frames"] == 20 == dcd_frame_count(Path(result["files"]["trajectory"]))
    assert analysis["backbone_rmsd_angstrom"][0] < 1.0  # starts near the starting structure
    assert 0.8 < analysis["rg_mean_nm"] < 1.2  # villin headpiece is about 1 nm across
    assert analysis["assessment"]["verdict"] in ("stable", "unstable", "inconclusive")


def test_simulate_blow_up_is_reported_and_no_nan_written(tmp_path: Path) -> None:
    blow_up = ["--timestep", "10", "--no-constraints", "--temperature", "600"]
    out = ["--out", str(tmp_path / "run")]
    completed = sciagent("simulate", "villin", "--steps", "2000", *blow_up, "--json", *out, cwd=tmp_path)
    assert completed.returncode == 1
    result = json.loads(completed.stdout)["result"]
    assert (result["status"], result["failure_class"]) == ("failed", "instability")
    assert result["failed_at_step"] > 0
    assert f"step {result['failed_at_step']}" in _one_line_error(completed)
    for path in (tmp_path / "run").iterdir():
        if path.suffix in (".csv", ".json", ".pdb"):
            assert "nan" not in path.read_text().lower().replace("nanomet", ""), path.name


def test_wall_time_stop_resumes_with_the_same_out(tmp_path: Path) -> None:
    args = [
        "simulate",
        "villin",
        "--steps",
        "600",
        "--equilibration",
        "0",
        "--out",
        str(tmp_path / "run"),
        "--json",
    ]
    stopped = sciagent(*args, "--max-wall-time", "0.000001", cwd=tmp_path)
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout)["result"]["failure_class"] == "timeout"
    finished = sciagent(*args, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)["result"]
    assert result["steps_completed"] == 600 and result["resumed_from_step"] > 0


def test_summary_table_without_json(tmp_path: Path) -> None:
    completed = sciagent("simulate", "villin", "--steps", "200", "--equilibration", "0", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    for label in ("status", "completed", "backbone RMSD", "ns/day", "GBSAOBCForce"):
        assert label in completed.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["simulate", "villin", "--temperature", "-5"], "--temperature"),
        (["simulate", "no-such-protein"], "sciagent structures"),
        (["simulate", "missing.pdb"], "not found"),
        (["simulate", "garbage.pdb"], "could not read"),
        (["simulate", "villin", "--solvent", "water"], "--solvent"),
        (["simulate", "villin", "--platform", "HIP"], "--platform"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "garbage.pdb").write_text("this is not a structure\n" * 3)
    completed = sciagent(*args, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert expected in _one_line_error(completed)


def test_residue_without_template_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from sciagent.science.structures import resolve_structure

    lines = resolve_structure("villin").path.read_text().splitlines()
    renamed = [
        line[:17] + "UNK" + line[20:] if line.startswith("ATOM") and line[22:26].strip() == "10" else line
        for line in lines
    ]
    (tmp_path / "unk.pdb").write_text("\n".join(renamed) + "\n")
    completed = sciagent("simulate", "unk.pdb", "--steps", "100", cwd=tmp_path)
    assert completed.returncode == 2
    assert "no template" in _one_line_error(completed).lower()


def test_structures_lists_bundled_and_named_proteins(tmp_path: Path) -> None:
    completed = sciagent("structures", cwd=tmp_path)
    assert completed.returncode == 0
    for text in ("villin", "ubiquitin", "1UBQ", "trp-cage", "1L2Y"):
        assert text in completed.stdout


def test_a_malformed_config_file_is_one_line_naming_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "sciagent.toml").write_text('workspace = "runs"\n[llm.mine\nkind = "openai"\n')
    completed = sciagent("runs", cwd=tmp_path)
    assert completed.returncode == 2
    line = _one_line_error(completed)
    assert str((tmp_path / "sciagent.toml").resolve()) in line and "line 2, column 10" in line


def test_a_bug_in_any_command_is_one_line_with_the_traceback_in_a_log(tmp_path: Path) -> None:
    """A journal row edited by hand into invalid JSON makes ``sciagent show`` fail inside the json
    module: not one of our errors, so one line names the log with the traceback, and the exit is 1."""
    from sciagent.agent.journal import Journal

    with Journal(tmp_path / "sciagent-runs" / "journal.sqlite") as journal:
        run_id = journal.create_run("a goal", {})
        journal.start_step(run_id, "plan", "model proposes the study")
    with sqlite3.connect(tmp_path / "sciagent-runs" / "journal.sqlite") as connection:
        connection.execute("UPDATE steps SET data = '{not json'")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    completed = subprocess.run([*SCIAGENT, "show", run_id], cwd=tmp_path, capture_output=True, text=True,
                               timeout=120, env=env)  # fmt: skip
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: JSONDecodeError:"), completed.stderr
    log = Path(lines[0].rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert tmp_path in log.parents and "Traceback (most recent call last)" in log.read_text()
