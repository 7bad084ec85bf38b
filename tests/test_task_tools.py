"""Simulation and analysis tools through the catalogue, on real OpenMM runs on the local site.

Two short villin runs at two pH values are submitted together and run side by side (the local
site's capacity is 2); each analysis tool's numbers are checked against mdtraj computing the same
quantity from the run's own files, independently of sciagent's kernels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import mdtraj
import numpy as np
import pytest

from sciagent.science.outputs import RunFiles
from sciagent.science.trajectory_metrics import SUMMARISED
from sciagent.tools.analysis import Metric
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import ToolArgumentsError, ToolContext, ToolFailed
from sciagent.tools.tasks import TaskBoard

pytestmark = [pytest.mark.timeout(300), pytest.mark.whole_machine]  # its runs go side by side
TOOLS = builtin_tools()
RUN = {"structure": "villin", "length_ps": 2.0, "timestep_fs": 4.0}  # 500 steps, 100 frames


def call(name: str, context: ToolContext, **arguments: object):  # each tool returns its own model
    return TOOLS.get(name).call(arguments, context)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolContext]:
    directory = tmp_path_factory.mktemp("session")
    board = TaskBoard(directory, sites={})
    yield ToolContext(session_dir=directory, tasks=board)
    board.close()


@pytest.fixture(scope="module")
def two_runs(session: ToolContext) -> tuple[str, str]:
    """pH 5 and pH 8 submitted at once; both are seen running together, then both complete."""
    low = call("simulate", session, **RUN, ph=5.0)
    high = call("simulate", session, **RUN, ph=8.0)
    assert (low.task_id, high.task_id) == ("sim-1", "sim-2") and low.state in ("pending", "running")
    together, deadline = False, time.monotonic() + 120
    while not together and time.monotonic() < deadline:
        states = {call("task_status", session, task_id=t).state for t in (low.task_id, high.task_id)}
        together = states == {"running"}
        if "completed" in states:
            break
        time.sleep(0.2)
    assert together, "the two simulations never ran at the same time"
    for task_id in (low.task_id, high.task_id):
        assert call("wait_for_task", session, task_id=task_id, timeout_s=240).state == "completed"
    return low.task_id, high.task_id


def test_simulations_run_concurrently_and_report_their_results(session: ToolContext, two_runs) -> None:
    for task_id, ph in zip(two_runs, (5.0, 8.0), strict=True):
        result = call("task_result", session, task_id=task_id)
        assert result.status == "completed", result.message
        assert result.simulated_ps == pytest.approx(2.0) and result.solvent == "implicit"
        assert result.ph == ph
        assert Path(result.workdir) == session.session_dir / "runs" / task_id
        assert RunFiles(Path(result.workdir)).trajectory.stat().st_size > 0
    listed = call("list_tasks", session)
    assert [(t.task_id, t.state) for t in listed.tasks] == [("sim-1", "completed"), ("sim-2", "completed")]


def _frames(session: ToolContext, task_id: str) -> tuple[mdtraj.Trajectory, mdtraj.Trajectory]:
    files = RunFiles(session.session_dir / "runs" / task_id)
    reference = mdtraj.load_pdb(str(files.start_pdb))
    protein = reference.topology.select("protein")
    traj = mdtraj.load_dcd(str(files.trajectory), top=str(files.start_pdb), atom_indices=protein)
    return traj, reference.atom_slice(protein)


def test_analysis_tools_match_mdtraj_on_the_runs_own_files(session: ToolContext, two_runs) -> None:
    task_id = two_runs[0]
    traj, reference = _frames(session, task_id)
    assert traj.n_frames == 100
    backbone = traj.topology.select("backbone")
    expected_rmsd = mdtraj.rmsd(traj, reference, 0, atom_indices=backbone) * 10.0  # Å
    rmsd = call("rmsd", session, task_id=task_id)
    assert len(rmsd.values) == 100 and rmsd.unit == "Å"
    assert np.allclose(rmsd.values, expected_rmsd, atol=0.01)  # mdtraj's float32 floor is ~0.003 Å
    rg = call("radius_of_gyration", session, task_id=task_id)
    # mdtraj.compute_rg centres on the geometric centre; Rg about the centre of mass, by definition:
    masses = np.array([atom.element.mass for atom in traj.topology.atoms])
    centre = np.einsum("fai,a->fi", traj.xyz, masses) / masses.sum()
    expected_rg = np.sqrt(((traj.xyz - centre[:, None]) ** 2).sum(axis=2) @ masses / masses.sum())
    assert np.allclose(rg.values, expected_rg, atol=1e-5)
    sasa = call("sasa", session, task_id=task_id)
    expected_sasa = [mdtraj.shrake_rupley(traj[i], probe_radius=0.14).sum() for i in range(traj.n_frames)]
    assert np.allclose(sasa.values, expected_sasa, rtol=1e-5)  # per atom, summed: float32 order
    hbonds = call("hydrogen_bonds", session, task_id=task_id)
    assert hbonds.values == [float(len(frame)) for frame in mdtraj.wernet_nilsson(traj)]
    rmsf = call("rmsf", session, task_id=task_id)
    assert len(rmsf.residues) == 35 and rmsf.maximum == max(rmsf.values)
    ss = call("secondary_structure", session, task_id=task_id)
    dssp = mdtraj.compute_dssp(traj, simplified=True)
    assert ss.helix == pytest.approx([float(np.mean(frame == "H")) for frame in dssp])
    assert ss.first_codes == "".join(dssp[0]) and ss.last_codes == "".join(dssp[-1])
    energies = call("energy_timeseries", session, task_id=task_id)
    assert [s.name for s in energies.series] == ["potential energy", "total energy", "temperature"]
    assert 200 < energies.series[2].mean < 400  # thermostatted near 300 K
    moments = call("moments_of_inertia", session, task_id=task_id)
    assert all(a <= b for a, b in zip(moments.series[0].values, moments.series[1].values, strict=True))


def test_compare_runs_puts_both_in_one_table(session: ToolContext, two_runs) -> None:
    assert set(get_args(Metric)) == set(SUMMARISED)  # the tool offers what the kernel summarises
    table = call("compare_runs", session, task_ids=list(two_runs), metrics=["rmsd", "sasa"])
    assert [(row.task_id, row.ph) for row in table.rows] == [("sim-1", 5.0), ("sim-2", 8.0)]
    assert table.units == {"rmsd": "Å", "sasa": "nm²"}
    for row in table.rows:
        assert row.values["rmsd"] == call("rmsd", session, task_id=row.task_id).mean


def test_task_tools_say_what_is_wrong(session: ToolContext, two_runs) -> None:
    with pytest.raises(ToolArgumentsError, match=r"no task 'sim-9' in this session \(tasks: sim-1, sim-2"):
        call("task_result", session, task_id="sim-9")
    with pytest.raises(ToolArgumentsError, match="pressure_bar needs solvent 'explicit'"):
        call("simulate", session, structure="villin", pressure_bar=2.0)
    long = call("simulate", session, structure="villin", length_ps=2000.0, timestep_fs=4.0)
    with pytest.raises(ToolArgumentsError, match=f"task {long.task_id} has not finished: call wait_for_task"):
        call("rmsd", session, task_id=long.task_id)
    assert call("cancel_task", session, task_id=long.task_id).cancelled
    assert call("wait_for_task", session, task_id=long.task_id, timeout_s=60).state == "cancelled"
    with pytest.raises(ToolFailed, match="cancelled"):
        call("task_result", session, task_id=long.task_id)
    assert not call("cancel_task", session, task_id=two_runs[0]).cancelled  # already finished
    with pytest.raises(ToolFailed, match="runs no tasks"):
        call("list_tasks", ToolContext(session_dir=session.session_dir))


def test_plot_overlays_the_runs_in_one_png(session: ToolContext, two_runs) -> None:
    plotted = call("plot", session, task_ids=list(two_runs), metric="rmsd", filename="rmsd by pH")
    png = session.session_dir / plotted.path
    assert plotted.path == "plots/rmsd-by-pH.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [line.label for line in plotted.lines] == ["sim-1 (300 K, pH 5)", "sim-2 (300 K, pH 8)"]
    for line in plotted.lines:
        assert line.points == 100 and line.mean == call("rmsd", session, task_id=line.task_id).mean
    helix = call("plot", session, task_ids=[two_runs[0]], metric="helix_fraction")
    assert helix.unit == "fraction" and (session.session_dir / helix.path).stat().st_size > 0
