"""Tests for sciagent.science.analysis on real PDB/DCD/CSV files built from OpenMM's villin structure.

Expected values are computed independently here with numpy and OpenMM's topology (not mdtraj),
so the module's mdtraj-based numbers are checked against a second implementation.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import openmm.app as app
import pytest
from openmm import unit

from sciagent.science.analysis import Analysis, analyze_trajectory
from sciagent.science.simulate import simulate_and_analyze
from sciagent.science.spec import MDSpec
from sciagent.science.stability import DEFAULT_THRESHOLDS

VILLIN_PDB = Path(app.__file__).parent / "data" / "test.pdb"
BACKBONE_NAMES = {"N", "CA", "C", "O"}
PRODUCTION_START_PS = 100.0
INTERVAL_PS = 5.0  # ten frames make the minimum production for a verdict, 50 ps
TARGET_K = 300.0


@pytest.fixture(scope="module")
def protein_pdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Villin headpiece without water and ions, as the MD kernel writes an implicit-solvent start."""
    pdb = app.PDBFile(str(VILLIN_PDB))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([r for r in modeller.topology.residues() if r.name in ("Cl", "CL", "NA", "Na")])
    path = tmp_path_factory.mktemp("villin") / "protein.pdb"
    with path.open("w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle, keepIds=True)
    return path


@pytest.fixture(scope="module")
def protein(protein_pdb: Path) -> tuple[app.Topology, np.ndarray]:
    """Topology and reference coordinates (nm, float64) read back from the written PDB."""
    pdb = app.PDBFile(str(protein_pdb))
    return pdb.topology, pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def write_dcd(path: Path, topology: app.Topology, frames: list[np.ndarray]) -> Path:
    """Write frames (nm) with OpenMM's DCDFile, as the MD kernel's reporter does."""
    with path.open("wb") as handle:
        dcd = app.DCDFile(handle, topology, 0.002)
        for xyz in frames:
            dcd.writeModel(xyz * unit.nanometer)
    return path


def write_csv(
    path: Path,
    production: list[tuple[float, float, float, float]],
    equilibration_rows: int = 3,
) -> Path:
    """Write a state CSV: a few equilibration rows (values that must be ignored), then production rows.

    Each production row is (time_ps, potential, total, temperature).
    """
    header = [
        "phase",
        "step",
        "time_ps",
        "potential_kj_mol",
        "kinetic_kj_mol",
        "total_kj_mol",
        "temperature_k",
        "speed_ns_day",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        equilibration_times = np.linspace(0.0, PRODUCTION_START_PS, equilibration_rows + 1)[1:]
        for t in equilibration_times:
            writer.writerow(["equilibration", int(t / 0.002), t, 1e6, 1e6, 2e6, 9999.0, 50.0])
        for t, potential, total, temperature in production:
            kinetic = total - potential
            writer.writerow(["production", int(t / 0.002), t, potential, kinetic, total, temperature, 50.0])
    return path


def steady_rows(n: int, temperature: float = TARGET_K) -> list[tuple[float, float, float, float]]:
    """Production rows with constant energies at the report interval after production starts."""
    return [(PRODUCTION_START_PS + INTERVAL_PS * (i + 1), -5000.0, -3000.0, temperature) for i in range(n)]


def run(
    tmp_path: Path,
    topology_pdb: Path,
    topology: app.Topology,
    frames: list[np.ndarray],
    rows: list[tuple[float, float, float, float]] | None = None,
) -> Analysis:
    """Write the DCD and CSV for frames and analyse them."""
    dcd = write_dcd(tmp_path / "traj.dcd", topology, frames)
    state = write_csv(tmp_path / "state.csv", rows if rows is not None else steady_rows(len(frames)))
    return analyze_trajectory(
        topology_pdb, dcd, state, production_start_ps=PRODUCTION_START_PS, target_temperature_k=TARGET_K
    )


def atom_indices(topology: app.Topology, names: set[str] | None = None) -> np.ndarray:
    """Indices of atoms by name, read from OpenMM's topology (independent of mdtraj's selections)."""
    return np.array([a.index for a in topology.atoms() if names is None or a.name in names])


def masses(topology: app.Topology) -> np.ndarray:
    """Atomic masses in daltons from OpenMM's element table."""
    return np.array([a.element.mass.value_in_unit(unit.dalton) for a in topology.atoms()])


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation matrix (QR of a Gaussian matrix, determinant forced to +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_identical_frames_give_zero_rmsd_rmsf_drift_and_full_retention(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    result = run(tmp_path, protein_pdb, topology, [xyz] * 12)

    assert result.frames == 12
    assert max(result.backbone_rmsd_angstrom) < 1e-3
    assert result.max_rmsf_angstrom < 1e-3
    assert result.rmsd_drift is not None
    assert abs(result.rmsd_drift.change_angstrom) < 1e-3
    assert result.rmsd_drift.standard_error_angstrom < 1e-3
    assert result.production_ps == pytest.approx(12 * INTERVAL_PS)
    assert result.final_window_rmsd_mean_angstrom < 1e-3
    assert result.secondary_structure.retention == 1.0
    assert result.secondary_structure.first == result.secondary_structure.last
    assert result.secondary_structure.first["helix"] > 0.5  # villin is a three-helix bundle
    assert result.time_ns == pytest.approx([INTERVAL_PS * (i + 1) / 1000.0 for i in range(12)])
    assert len(result.residue_labels) == len(result.ca_rmsf_angstrom) == 35
    assert result.residue_labels[:3] == ["LEU1", "SER2", "ASP3"]
    assert result.assessment.verdict == "stable" and result.assessment.failed == []
    assert result.thresholds == {k: float(v) for k, v in asdict(DEFAULT_THRESHOLDS).items()}
    json.dumps(result.model_dump(), allow_nan=False)  # plain, finite JSON


def test_rigid_rotations_and_translations_are_aligned_away(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    rng = np.random.default_rng(7)
    frames = [xyz @ rotation(rng).T + rng.uniform(-3.0, 3.0, size=3) for _ in range(10)]
    result = run(tmp_path, protein_pdb, topology, frames)

    assert max(result.backbone_rmsd_angstrom) < 1e-3
    assert result.max_rmsf_angstrom < 1e-3
    reference_rg = rg_nm(xyz, masses(topology))
    assert result.radius_of_gyration_nm == pytest.approx([reference_rg] * 10, abs=1e-5)


def test_mirror_image_is_not_superposed_away(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    mirrored = xyz * np.array([-1.0, 1.0, 1.0])
    result = run(tmp_path, protein_pdb, topology, [xyz] * 5 + [mirrored] * 5)

    assert max(result.backbone_rmsd_angstrom[:5]) < 1e-3
    assert min(result.backbone_rmsd_angstrom[5:]) > 1.0  # a proper rotation cannot undo a reflection


def rg_nm(xyz: np.ndarray, weights: np.ndarray) -> float:
    """Mass-weighted radius of gyration, written out longhand."""
    centre = (xyz * weights[:, None]).sum(axis=0) / weights.sum()
    return math.sqrt(float((((xyz - centre) ** 2).sum(axis=1) * weights).sum() / weights.sum()))


def test_scaled_frames_match_independent_rmsd_rg_and_rmsf(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    scales = np.linspace(0.9, 1.1, 11)
    centroid = xyz.mean(axis=0)
    frames = [centroid + s * (xyz - centroid) for s in scales]
    result = run(tmp_path, protein_pdb, topology, frames)

    # Scaling about any point: the best superposition only re-centres (the cross-covariance is
    # symmetric positive definite, so the optimal rotation is the identity); RMSD = |s - 1| * spread.
    backbone = xyz[atom_indices(topology, BACKBONE_NAMES)]
    spread_angstrom = 10.0 * math.sqrt(float(((backbone - backbone.mean(axis=0)) ** 2).sum(axis=1).mean()))
    assert result.backbone_rmsd_angstrom == pytest.approx(np.abs(scales - 1.0) * spread_angstrom, abs=2e-3)

    expected_rg = [rg_nm(frame, masses(topology)) for frame in frames]
    assert result.radius_of_gyration_nm == pytest.approx(expected_rg, abs=1e-5)
    assert result.rg_mean_nm == pytest.approx(np.mean(expected_rg), abs=1e-5)

    # Aligned on CA, frame k's CA i sits at c + s_k (x_i - c); about the mean, RMSF_i = std(s) |x_i - c|.
    ca = xyz[atom_indices(topology, {"CA"})]
    expected_rmsf = 10.0 * np.std(scales) * np.linalg.norm(ca - ca.mean(axis=0), axis=1)
    assert result.ca_rmsf_angstrom == pytest.approx(expected_rmsf, abs=2e-3)

    # The drift window is the last 6 frames (half of 11, rounded up), scales 1.00 to 1.10: RMSD rises
    # linearly in time, so the line through the block means is the planted line. The 5 blocks hold
    # frames {5, 6}, {7}, {8}, {9}, {10}: the first block's mid-time is between frames 5 and 6.
    time_ns = np.array(result.time_ns)
    planted_slope = np.polyfit(time_ns[5:], (scales[5:] - 1.0) * spread_angstrom, 1)[0]
    span_ns = time_ns[10] - (time_ns[5] + time_ns[6]) / 2
    assert result.rmsd_drift is not None
    assert result.rmsd_drift.blocks == 5
    assert result.rmsd_drift.window_ps == pytest.approx(6 * INTERVAL_PS)
    assert result.rmsd_drift.change_angstrom == pytest.approx(planted_slope * span_ns, rel=1e-3)
    assert result.rmsd_drift.standard_error_angstrom < 1e-3  # a straight line: no scatter about it


def test_energy_and_temperature_statistics_match_planted_values(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    n = 20
    potential_slope, total_slope = -123.4, 5.5  # kJ/mol per ns
    rows = []
    for i in range(n):
        t_ps = PRODUCTION_START_PS + INTERVAL_PS * (i + 1)
        t_ns = (t_ps - PRODUCTION_START_PS) / 1000.0
        temperature = 295.0 if i % 2 == 0 else 305.0
        rows.append((t_ps, -5000.0 + potential_slope * t_ns, -3000.0 + total_slope * t_ns, temperature))
    result = run(tmp_path, protein_pdb, topology, [xyz] * n, rows)

    assert result.potential_energy_kj_mol.drift_per_ns == pytest.approx(potential_slope, rel=1e-9)
    assert result.total_energy_kj_mol.drift_per_ns == pytest.approx(total_slope, rel=1e-9)
    mean_t_ns = np.mean([(r[0] - PRODUCTION_START_PS) / 1000.0 for r in rows])
    expected_mean = -5000.0 + potential_slope * mean_t_ns
    assert result.potential_energy_kj_mol.mean == pytest.approx(expected_mean, rel=1e-12)
    assert result.temperature_k.mean == pytest.approx(300.0, rel=1e-12)
    assert result.temperature_k.std == pytest.approx(5.0, rel=1e-12)  # population std (ddof=0)
    assert result.target_temperature_k == TARGET_K


def test_water_and_ions_in_topology_are_ignored(tmp_path: Path) -> None:
    pdb = app.PDBFile(str(VILLIN_PDB))
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    solvent = np.array([a.index for a in pdb.topology.atoms() if a.residue.name in ("HOH", "Cl")])
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(10):  # protein frozen, solvent scrambled by up to 1 nm
        frame = xyz.copy()
        frame[solvent] += rng.uniform(-1.0, 1.0, size=(len(solvent), 3))
        frames.append(frame)
    result = run(tmp_path, VILLIN_PDB, pdb.topology, frames)

    assert max(result.backbone_rmsd_angstrom) < 1e-3
    assert result.max_rmsf_angstrom < 1e-3
    assert len(result.residue_labels) == 35
    protein_atoms = np.array([a.index for a in pdb.topology.atoms() if a.residue.name not in ("HOH", "Cl")])
    protein_masses = masses(pdb.topology)[protein_atoms]
    assert result.rg_mean_nm == pytest.approx(rg_nm(xyz[protein_atoms], protein_masses), abs=1e-5)


def test_csv_rows_must_match_dcd_frames(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    with pytest.raises(ValueError, match=r"11 production rows but .* 10 frames"):
        run(tmp_path, protein_pdb, topology, [xyz] * 10, steady_rows(11))


@pytest.mark.parametrize("bad", ["nan", "inf", "", "--"])
def test_non_numeric_or_non_finite_csv_value_is_rejected(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray], bad: str
) -> None:
    topology, xyz = protein
    rows: list[tuple[float, float, float, float | str]] = list(steady_rows(10))
    t, potential, total, _ = rows[4]
    rows[4] = (t, potential, total, bad)
    with pytest.raises(ValueError, match=r"line 9, temperature_k: .* not (finite|a number)"):
        run(tmp_path, protein_pdb, topology, [xyz] * 10, rows)  # type: ignore[arg-type]


def test_fewer_than_two_frames_is_rejected(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    with pytest.raises(ValueError, match="at least 2 production frames"):
        run(tmp_path, protein_pdb, topology, [xyz])


def test_missing_csv_column_is_rejected(tmp_path: Path, protein_pdb: Path) -> None:
    state = tmp_path / "state.csv"
    state.write_text("phase,step,time_ps,potential_kj_mol\nproduction,1,1.0,-5.0\n")
    with pytest.raises(ValueError, match="total_kj_mol, temperature_k"):
        analyze_trajectory(
            protein_pdb,
            tmp_path / "absent.dcd",
            state,
            production_start_ps=0.0,
            target_temperature_k=TARGET_K,
        )


def test_production_before_its_start_is_rejected(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    dcd = write_dcd(tmp_path / "traj.dcd", topology, [xyz] * 10)
    state = write_csv(tmp_path / "state.csv", steady_rows(10))
    with pytest.raises(ValueError, match="precedes production_start_ps"):
        analyze_trajectory(protein_pdb, dcd, state, production_start_ps=500.0, target_temperature_k=TARGET_K)


def test_production_length_is_read_from_the_clock_to_its_six_digits(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    start_ps = 1234.5649  # the clock writes 6 significant digits: the last frame reads 1284.56 ps
    rows = [(float(f"{start_ps + INTERVAL_PS * (i + 1):.6g}"), -5000.0, -3000.0, TARGET_K) for i in range(10)]
    dcd = write_dcd(tmp_path / "traj.dcd", topology, [xyz] * 10)
    state = write_csv(tmp_path / "state.csv", rows)
    result = analyze_trajectory(
        protein_pdb, dcd, state, production_start_ps=start_ps, target_temperature_k=TARGET_K
    )

    assert rows[-1][0] == 1284.56
    assert result.production_ps == 50.0  # 49.9951 from the rounded clock, a run of exactly 50 ps
    assert result.assessment.verdict == "stable"


def test_a_run_shorter_than_the_minimum_is_too_short(
    tmp_path: Path, protein_pdb: Path, protein: tuple[app.Topology, np.ndarray]
) -> None:
    topology, xyz = protein
    rows = [(PRODUCTION_START_PS + 4.0 * (i + 1), -5000.0, -3000.0, TARGET_K) for i in range(12)]
    dcd = write_dcd(tmp_path / "traj.dcd", topology, [xyz] * 12)
    state = write_csv(tmp_path / "state.csv", rows)
    result = analyze_trajectory(
        protein_pdb, dcd, state, production_start_ps=PRODUCTION_START_PS, target_temperature_k=TARGET_K
    )

    assert result.production_ps == pytest.approx(48.0)
    assert (result.assessment.verdict, result.assessment.failed) == ("inconclusive", ["too short"])
    assert "production 48 ps (minimum 50 ps): too short" in result.assessment.reasons


@pytest.mark.slow
def test_villin_at_300_k_for_the_minimum_production_is_stable(tmp_path: Path) -> None:
    """The default study's reference condition: 50 ps at 300 K must pass every criterion, and the
    Langevin thermostat holds it at 300 K.

    Villin headpiece stays folded at room temperature far longer than 50 ps, so anything but "stable"
    is a criterion that a well-behaved run of the minimum length cannot pass. About 2 minutes on 2 cores.
    """
    spec = MDSpec(
        structure="villin",
        temperature_k=300.0,
        solvent="implicit",
        forcefield="amber14",
        timestep_fs=4.0,
        hydrogen_mass_amu=3.0,
        constraints="hbonds",
        equilibration_steps=625,  # 2.5 ps
        production_steps=12_500,  # 50 ps, the minimum for a verdict
        report_interval=125,  # a frame every 0.5 ps: 100 frames
        platform="CPU",
    )
    assert spec.production_steps * spec.timestep_fs / 1000.0 == DEFAULT_THRESHOLDS.min_production_ps
    outcome = simulate_and_analyze(spec, tmp_path / "run")

    assert outcome.result.ok, outcome.result.message
    analysis = outcome.analysis
    assert analysis is not None, outcome.analysis_error
    assert (analysis.frames, analysis.production_ps) == (100, 50.0)
    assert analysis.assessment.verdict == "stable", analysis.assessment.reasons
    # The same run checks the thermostat (once owned by a 20 ps test of its own): the production mean
    # holds the target more tightly than the verdict's tolerance asks.
    assert math.isclose(analysis.temperature_k.mean, 300.0, rel_tol=0.03), analysis.temperature_k.mean
