"""run_md on the real villin headpiece: a short run, a blow-up, a wall-time stop and its resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from sciagent.science.md import run_md
from sciagent.science.outputs import dcd_frame_count
from sciagent.science.reporters import MDProgress
from sciagent.science.spec import MDSpec
from sciagent.science.structures import resolve_structure


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_all_finite(workdir: Path) -> None:
    """No NaN or inf in any text output, and none in the trajectory."""
    for name in ("state.csv", "start.pdb", "final.pdb", "result.json"):
        path = workdir / name
        if path.exists():
            text = path.read_text().lower()
            assert "nan" not in text.replace("nanomet", "").replace("nanosec", ""), name
            assert "inf" not in text.replace("info", ""), name
    trajectory = workdir / "trajectory.dcd"
    if trajectory.exists() and dcd_frame_count(trajectory):
        frames = mdtraj.load_dcd(str(trajectory), top=str(workdir / "start.pdb"))
        assert np.isfinite(frames.xyz).all()


def test_short_run_completes_with_every_output(quick_spec_fields: dict, workdir: Path) -> None:
    updates: list[MDProgress] = []
    spec = MDSpec(**quick_spec_fields, equilibration_steps=100)
    result = run_md(spec, workdir, progress=updates.append)

    assert result.ok, result.message
    assert result.steps_completed == 300 and result.production_steps_completed == 200
    assert result.simulated_ns == pytest.approx(200 * 2e-6)
    assert result.ns_per_day and result.ns_per_day > 0
    assert (result.platform, result.implicit_model, result.gb_force) == ("CPU", "obc2", "GBSAOBCForce")
    assert "implicit model auto → OBC2 on every platform, computed with GBSAOBCForce" in result.choices
    for name in (
        "spec",
        "preparation",
        "start_pdb",
        "system_xml",
        "trajectory",
        "state_csv",
        "checkpoint",
        "saved_state",
        "final_pdb",
        "result",
    ):
        assert Path(result.files[name]).exists(), name
    rows = _rows(workdir / "state.csv")
    assert [r["phase"] for r in rows] == ["equilibration"] * 2 + ["production"] * 4
    assert [int(r["step"]) for r in rows] == [50, 100, 150, 200, 250, 300]
    assert dcd_frame_count(workdir / "trajectory.dcd") == 4
    assert updates and updates[-1].step == 300 and updates[-1].total_steps == 300
    assert json.loads((workdir / "result.json").read_text())["status"] == "completed"
    _assert_all_finite(workdir)


def test_blow_up_is_reported_as_instability_and_writes_no_nan(workdir: Path) -> None:
    spec = MDSpec(
        structure="villin",
        production_steps=2000,
        report_interval=10,
        timestep_fs=10,
        constraints="none",
        temperature_k=600,
        platform="CPU",
        minimize_max_iterations=100,
    )
    result = run_md(spec, workdir)
    assert (result.status, result.failure_class) == ("failed", "instability")
    assert result.failed_at_step is not None and 0 < result.failed_at_step < 2000
    assert f"step {result.failed_at_step}" in result.message
    assert "timestep" in result.message
    assert "final_pdb" not in result.files
    _assert_all_finite(workdir)


def test_wall_time_stop_then_resume_finishes_the_total(quick_spec_fields: dict, workdir: Path) -> None:
    fields = {**quick_spec_fields, "production_steps": 600, "checkpoint_interval": 100}
    stopped = run_md(MDSpec(**fields, max_wall_time_s=1e-6), workdir)
    assert (stopped.status, stopped.failure_class) == ("failed", "timeout")
    assert "resume" in stopped.message
    first_stop = stopped.steps_completed
    assert 0 < first_stop < 600

    resumed = run_md(MDSpec(**fields), workdir)
    assert resumed.ok, resumed.message
    assert (resumed.resumed_from, resumed.resumed_from_step) == ("checkpoint", first_stop)
    assert f"resumed from the checkpoint at step {first_stop}" in resumed.choices
    assert resumed.steps_completed == 600
    steps = [int(r["step"]) for r in _rows(workdir / "state.csv")]
    assert steps == list(range(50, 601, 50))  # each report step once: nothing lost, nothing repeated
    assert dcd_frame_count(workdir / "trajectory.dcd") == 12


def test_resume_after_a_crash_cuts_outputs_back_to_the_checkpoint(
    quick_spec_fields: dict, workdir: Path
) -> None:
    short = MDSpec(**{**quick_spec_fields, "production_steps": 200})
    assert run_md(short, workdir).ok
    saved = {name: (workdir / name).read_bytes() for name in ("checkpoint.chk", "checkpoint.json")}
    longer = short.model_copy(update={"production_steps": 400})
    assert run_md(longer, workdir).resumed_from_step == 200  # a longer production extends the run
    # A crash after the outputs reached step 400 but before the next checkpoint: the last one is at 200.
    for name, content in saved.items():
        (workdir / name).write_bytes(content)

    again = run_md(longer, workdir)
    assert again.ok and again.resumed_from_step == 200 and again.steps_completed == 400
    assert [int(r["step"]) for r in _rows(workdir / "state.csv")] == list(range(50, 401, 50))
    assert dcd_frame_count(workdir / "trajectory.dcd") == 8


def test_an_unloadable_checkpoint_resumes_from_the_portable_saved_state(
    quick_spec_fields: dict, workdir: Path
) -> None:
    short = MDSpec(**{**quick_spec_fields, "production_steps": 200})
    assert run_md(short, workdir).ok
    (workdir / "checkpoint.chk").write_bytes(b"written by another GPU model" * 40)

    resumed = run_md(short.model_copy(update={"production_steps": 400}), workdir)
    assert resumed.ok, resumed.message
    assert (resumed.resumed_from, resumed.resumed_from_step, resumed.steps_completed) == (
        "saved_state",
        200,
        400,
    )
    note = next(c for c in resumed.choices if c.startswith("checkpoint could not be loaded on CPU ("))
    assert note.endswith("): resumed from the portable saved state at step 200")
    rows = _rows(workdir / "state.csv")
    assert [int(r["step"]) for r in rows] == list(range(50, 401, 50))
    assert rows[-1]["time_ps"] == "0.8"  # the saved state brought its simulated time along with the step
    assert dcd_frame_count(workdir / "trajectory.dcd") == 8
    _assert_all_finite(workdir)


def test_another_platform_continues_only_from_a_saved_state(quick_spec_fields: dict, workdir: Path) -> None:
    short = MDSpec(**{**quick_spec_fields, "production_steps": 200})
    assert run_md(short, workdir).ok
    meta_path = workdir / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "platform": "CUDA"}))  # as if written on a GPU node
    longer = short.model_copy(update={"production_steps": 300})
    saved = (workdir / "saved_state.xml").read_bytes()
    (workdir / "saved_state.xml").unlink()

    refused = run_md(longer, workdir)
    assert (refused.status, refused.failure_class, refused.steps_completed) == ("failed", "setup", 0)
    assert "written on CUDA and can only continue there" in refused.message

    (workdir / "saved_state.xml").write_bytes(saved)
    moved = run_md(longer, workdir)
    assert moved.ok, moved.message
    assert (moved.platform, moved.resumed_from, moved.steps_completed) == ("CPU", "saved_state", 300)
    assert (
        "checkpoint was written on CUDA and cannot be loaded on CPU: "
        "resumed from the portable saved state at step 200"
    ) in moved.choices
    assert json.loads(meta_path.read_text())["platform"] == "CPU"  # its checkpoints now belong here


def test_unknown_residue_inside_the_chain_fails_before_simulating(tmp_path: Path, workdir: Path) -> None:
    structure = tmp_path / "villin-xyz.pdb"
    villin = resolve_structure("villin").path.read_text()
    structure.write_text(villin.replace("PHE A  10", "XYZ A  10"))
    result = run_md(MDSpec(structure=str(structure), production_steps=100, report_interval=50), workdir)
    assert (result.status, result.failure_class, result.steps_completed) == ("failed", "setup", 0)
    assert result.message.startswith("villin-xyz.pdb (file: ")
    assert result.message.endswith(
        "chain A residue 10 (XYZ) is not a standard residue and sits inside the polymer chain; "
        "removing it would join residues 9 and 11 with a bond: fix the structure, "
        "or pass --remove-unknown-residues to remove it anyway"
    )
    assert "\n" not in result.message
    assert set(result.files) == {"result"}  # nothing prepared, built or simulated


def test_a_checkpoint_of_another_spec_is_not_resumed(quick_spec_fields: dict, workdir: Path) -> None:
    assert run_md(MDSpec(**quick_spec_fields), workdir).ok
    other = run_md(MDSpec(**quick_spec_fields, temperature_k=350), workdir)
    assert (other.status, other.failure_class) == ("failed", "setup")
    assert "different simulation" in other.message


def test_unknown_structure_fails_as_setup_with_one_line(workdir: Path) -> None:
    result = run_md(MDSpec(structure="no-such-protein", platform="CPU"), workdir)
    assert (result.status, result.failure_class) == ("failed", "setup")
    assert "sciagent structures" in result.message and "\n" not in result.message


def test_unavailable_platform_fails_as_setup(workdir: Path) -> None:
    result = run_md(MDSpec(structure="villin", platform="HIP"), workdir)
    if result.ok or result.platform == "HIP":
        pytest.skip("this machine has a HIP platform")
    assert result.failure_class == "setup" and "--platform" in result.message
