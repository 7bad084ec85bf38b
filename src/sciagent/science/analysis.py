"""Turn one MD run's files into numbers a scientist can check, and a stability verdict.

Inputs are what the MD kernel writes: the starting system as PDB (the RMSD reference), the production
frames as DCD, and the state CSV. Only protein atoms are analysed; water and ions are never loaded.
Every number in the result is computed from those files; a value that is not finite raises
``ValueError`` instead of reaching a report. Lengths follow the field names: ``_nm`` in nanometres
(mdtraj's unit), ``_angstrom`` in ångström. The verdict's rules and thresholds are in ``stability``.

This module imports only numpy, mdtraj, pydantic and ``stability`` so it runs on a bare remote worker.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import mdtraj
import numpy as np
from pydantic import BaseModel

from sciagent.science.stability import (
    DEFAULT_THRESHOLDS,
    PS_PER_NS,
    RmsdDrift,
    StabilityAssessment,
    StabilityThresholds,
    assess_stability,
    require_finite,
    rmsd_drift,
)

NM_TO_ANGSTROM = 10.0
BACKBONE = "protein and (name N or name CA or name C or name O)"
SS_CLASSES = {"H": "helix", "E": "strand", "C": "coil"}
CSV_COLUMNS = ("phase", "time_ps", "potential_kj_mol", "total_kj_mol", "temperature_k")
# Significant digits of the CSV clock: the MD kernel's StateCsvReporter writes time_ps with "%.6g".
CSV_TIME_DIGITS = 6


class SeriesStats(BaseModel):
    """Mean, population standard deviation (ddof=0) and drift of one quantity over production."""

    mean: float
    std: float
    drift_per_ns: float  # least-squares slope against production time in ns


class SecondaryStructure(BaseModel):
    """DSSP class fractions (helix/strand/coil) in the first and last production frames."""

    first: dict[str, float]
    last: dict[str, float]
    retention: float | None  # None when the first frame has no helix or strand residue


class Analysis(BaseModel):
    """Everything computed from one run's production phase; JSON-serialisable, no NaN."""

    frames: int
    production_ps: float  # the production the frames cover, from its start to the last frame
    time_ns: list[float]
    backbone_rmsd_angstrom: list[float]
    radius_of_gyration_nm: list[float]  # all protein atoms, mass-weighted
    ca_rmsf_angstrom: list[float]
    residue_labels: list[str]
    final_window_rmsd_mean_angstrom: float
    rmsd_drift: RmsdDrift | None  # None when the drift window holds fewer than 3 frames
    rg_mean_nm: float
    max_rmsf_angstrom: float
    secondary_structure: SecondaryStructure
    potential_energy_kj_mol: SeriesStats
    total_energy_kj_mol: SeriesStats
    temperature_k: SeriesStats
    target_temperature_k: float
    assessment: StabilityAssessment
    thresholds: dict[str, float]


def analyze_trajectory(
    topology_pdb: Path,
    trajectory_dcd: Path,
    state_csv: Path,
    *,
    production_start_ps: float,
    target_temperature_k: float,
    thresholds: StabilityThresholds = DEFAULT_THRESHOLDS,
) -> Analysis:
    """Analyse a run's production phase and judge whether the protein stayed folded.

    Raises:
        ValueError: the files disagree (CSV production rows vs DCD frames), hold fewer than two
            production frames, contain no protein, or a computed value is not finite.
    """
    if not (math.isfinite(target_temperature_k) and target_temperature_k > 0.0):
        raise ValueError(f"target_temperature_k must be a positive finite number, got {target_temperature_k}")
    rows, reference, traj = _load_inputs(Path(topology_pdb), Path(trajectory_dcd), Path(state_csv))
    frames = traj.n_frames
    time_ns = _production_time_ns(rows["time_ps"], production_start_ps)
    production_ps = _production_ps(rows["time_ps"], production_start_ps)
    rmsd = _backbone_rmsd_angstrom(traj, reference)
    window = _final_window_size(frames, thresholds.final_window_fraction)
    window_mean = require_finite("final-window RMSD mean", float(np.mean(rmsd[-window:])))
    drift = rmsd_drift(time_ns, rmsd, thresholds)
    rg = _radius_of_gyration_nm(traj)
    rmsf, labels = _ca_rmsf_angstrom(traj, reference)
    ss = _secondary_structure(traj)
    temperature = _series_stats("temperature_k", time_ns, rows["temperature_k"])
    assessment = assess_stability(
        frames=frames,
        production_ps=production_ps,
        final_window_rmsd_mean_angstrom=window_mean,
        rmsd_drift=drift,
        ss_retention=ss.retention,
        mean_temperature_k=temperature.mean,
        target_temperature_k=target_temperature_k,
        thresholds=thresholds,
    )
    return Analysis(
        frames=frames,
        production_ps=production_ps,
        time_ns=_finite_list("time_ns", time_ns),
        backbone_rmsd_angstrom=_finite_list("backbone RMSD", rmsd),
        radius_of_gyration_nm=_finite_list("radius of gyration", rg),
        ca_rmsf_angstrom=_finite_list("CA RMSF", rmsf),
        residue_labels=labels,
        final_window_rmsd_mean_angstrom=window_mean,
        rmsd_drift=drift,
        rg_mean_nm=require_finite("Rg mean", float(np.mean(rg))),
        max_rmsf_angstrom=require_finite("max RMSF", float(np.max(rmsf))),
        secondary_structure=ss,
        potential_energy_kj_mol=_series_stats("potential_kj_mol", time_ns, rows["potential_kj_mol"]),
        total_energy_kj_mol=_series_stats("total_kj_mol", time_ns, rows["total_kj_mol"]),
        temperature_k=temperature,
        target_temperature_k=float(target_temperature_k),
        assessment=assessment,
        thresholds={k: float(v) for k, v in asdict(thresholds).items()},
    )


def _load_inputs(
    topology_pdb: Path, trajectory_dcd: Path, state_csv: Path
) -> tuple[dict[str, np.ndarray], mdtraj.Trajectory, mdtraj.Trajectory]:
    """Read the CSV's production rows and the protein frames, and check they describe the same frames."""
    rows = _read_production_rows(state_csv)
    reference, traj = _load_protein(topology_pdb, trajectory_dcd)
    if len(rows["time_ps"]) != traj.n_frames:
        raise ValueError(
            f"{state_csv} has {len(rows['time_ps'])} production rows but {trajectory_dcd} has"
            f" {traj.n_frames} frames; they must correspond one-to-one (same report interval)"
        )
    return rows, reference, traj


def _read_production_rows(state_csv: Path) -> dict[str, np.ndarray]:
    """Read the production rows' numeric columns; the other phases and columns are not analysed."""
    with state_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{state_csv} lacks the column(s) {', '.join(missing)}")
        numeric = CSV_COLUMNS[1:]
        values: dict[str, list[float]] = {c: [] for c in numeric}
        for line, row in enumerate(reader, start=2):
            if row["phase"] != "production":
                continue
            for column in numeric:
                values[column].append(_parse_float(row[column], f"{state_csv} line {line}, {column}"))
    return {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}


def _parse_float(text: str | None, where: str) -> float:
    """Parse one CSV cell, refusing blanks and NaN/inf so they never reach a result."""
    if text is None:
        raise ValueError(f"{where}: the cell is missing")
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is not finite")
    return value


def _production_time_ns(time_ps: np.ndarray, production_start_ps: float) -> np.ndarray:
    """Production time per frame; checked so slopes are taken against a real, increasing clock."""
    if not math.isfinite(production_start_ps):
        raise ValueError(f"production_start_ps must be finite, got {production_start_ps}")
    if len(time_ps) < 2:
        raise ValueError(f"need at least 2 production frames to compute drifts, got {len(time_ps)}")
    if np.any(np.diff(time_ps) <= 0.0):
        raise ValueError("production time_ps values are not strictly increasing")
    if time_ps[0] < production_start_ps:
        raise ValueError(
            f"first production time {time_ps[0]} ps precedes production_start_ps {production_start_ps} ps"
        )
    return (time_ps - production_start_ps) / PS_PER_NS


def _production_ps(time_ps: np.ndarray, production_start_ps: float) -> float:
    """The production the frames cover, in ps: the last frame's time minus production's start.

    The MD kernel writes a frame at the end of each report interval, the first one interval after
    production starts, so this is the whole production when its length is a multiple of the report
    interval (and what was analysed otherwise). The CSV clock has ``CSV_TIME_DIGITS`` significant
    digits, so the difference is rounded to the clock's resolution at the last frame: a run of exactly
    the minimum length is not called short by a rounding of its clock (1234.56 ps for 1234.5649 ps).
    """
    last = float(time_ps[-1])
    length = last - production_start_ps
    if last == 0.0:
        return length
    return round(length, CSV_TIME_DIGITS - 1 - math.floor(math.log10(abs(last))))


def _load_protein(topology_pdb: Path, trajectory_dcd: Path) -> tuple[mdtraj.Trajectory, mdtraj.Trajectory]:
    """Load reference and frames for protein atoms only, so water and ions cost no memory."""
    reference = mdtraj.load_pdb(str(topology_pdb))
    protein = reference.topology.select("protein")
    if len(protein) == 0:
        raise ValueError(f"{topology_pdb} contains no protein atoms")
    with _silence_stdout():  # mdtraj's C DCD reader chats on stdout, which must stay clean for --json
        traj = mdtraj.load_dcd(str(trajectory_dcd), top=str(topology_pdb), atom_indices=protein)
    return reference.atom_slice(protein), traj


@contextmanager
def _silence_stdout() -> Iterator[None]:
    """Discard what C code writes to file descriptor 1 for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _backbone_rmsd_angstrom(traj: mdtraj.Trajectory, reference: mdtraj.Trajectory) -> np.ndarray:
    """Backbone (N, CA, C, O) RMSD to the starting structure after optimal superposition, unweighted."""
    backbone = traj.topology.select(BACKBONE)
    if len(backbone) == 0:
        raise ValueError("the protein has no backbone atoms (N, CA, C, O)")
    target = reference.xyz[0, backbone].astype(np.float64)
    aligned = _superpose(traj.xyz[:, backbone].astype(np.float64), target)
    return np.sqrt(np.mean(np.sum((aligned - target) ** 2, axis=2), axis=1)) * NM_TO_ANGSTROM


def _superpose(frames: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate and translate each frame onto target (Kabsch, unweighted), in float64.

    Done here rather than with ``mdtraj.rmsd``, whose float32 eigenvalue shortcut leaves a floor of
    about 0.003 Å even for identical structures; the RMSD is then taken from the aligned coordinates.
    """
    centre = target.mean(axis=0)
    mobile = frames - frames.mean(axis=1, keepdims=True)
    covariance = np.einsum("fni,nj->fij", mobile, target - centre)
    u, _, vt = np.linalg.svd(covariance)
    handedness = np.sign(np.linalg.det(u @ vt))  # forbid reflections
    u[:, :, 2] *= handedness[:, None]
    return mobile @ (u @ vt) + centre


def _radius_of_gyration_nm(traj: mdtraj.Trajectory) -> np.ndarray:
    """Mass-weighted Rg of all protein atoms; the weighting makes hydrogens (present or not) matter little."""
    masses = np.array([atom.element.mass if atom.element else 0.0 for atom in traj.topology.atoms])
    if np.any(masses <= 0.0):
        raise ValueError("some protein atoms have no element mass; the topology PDB needs element columns")
    xyz = traj.xyz.astype(np.float64)
    centre = np.einsum("fai,a->fi", xyz, masses) / masses.sum()
    squared = np.sum((xyz - centre[:, None, :]) ** 2, axis=2)
    return np.sqrt(squared @ masses / masses.sum())


def _ca_rmsf_angstrom(traj: mdtraj.Trajectory, reference: mdtraj.Trajectory) -> tuple[np.ndarray, list[str]]:
    """Per-residue CA RMSF about the mean position, after superposing every frame on the start's CAs."""
    ca = traj.topology.select("protein and name CA")
    if len(ca) == 0:
        raise ValueError("the protein has no CA atoms")
    xyz = _superpose(traj.xyz[:, ca].astype(np.float64), reference.xyz[0, ca].astype(np.float64))
    deviation = xyz - xyz.mean(axis=0)
    rmsf = np.sqrt(np.mean(np.sum(deviation**2, axis=2), axis=0)) * NM_TO_ANGSTROM
    labels = [f"{traj.topology.atom(i).residue.name}{traj.topology.atom(i).residue.resSeq}" for i in ca]
    return rmsf, labels


def _secondary_structure(traj: mdtraj.Trajectory) -> SecondaryStructure:
    """DSSP (simplified) of the first and last frames; fractions over residues DSSP assigns."""
    first, last = mdtraj.compute_dssp(traj[[0, -1]], simplified=True)
    assigned = [(a, b) for a, b in zip(first, last, strict=True) if a in SS_CLASSES and b in SS_CLASSES]
    if not assigned:
        raise ValueError("DSSP assigned no protein residue")
    structured = [(a, b) for a, b in assigned if a in ("H", "E")]
    retention = sum(a == b for a, b in structured) / len(structured) if structured else None
    return SecondaryStructure(
        first=_class_fractions([a for a, _ in assigned]),
        last=_class_fractions([b for _, b in assigned]),
        retention=retention,
    )


def _class_fractions(codes: Sequence[str]) -> dict[str, float]:
    """Fraction of residues per class, keyed helix/strand/coil."""
    return {name: sum(c == code for c in codes) / len(codes) for code, name in SS_CLASSES.items()}


def _final_window_size(frames: int, fraction: float) -> int:
    """Frames in the final window: the last ``fraction`` of frames, rounded up, so never none."""
    return math.ceil(fraction * frames)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y against x."""
    return float(np.polyfit(x, y, 1)[0])


def _series_stats(name: str, time_ns: np.ndarray, values: np.ndarray) -> SeriesStats:
    """Mean, population std (ddof=0: describes these frames, not a wider population) and drift."""
    return SeriesStats(
        mean=require_finite(f"{name} mean", float(np.mean(values))),
        std=require_finite(f"{name} std", float(np.std(values, ddof=0))),
        drift_per_ns=require_finite(f"{name} drift", _slope(time_ns, values)),
    )


def _finite_list(name: str, values: np.ndarray) -> list[float]:
    """Plain-float list for JSON, raising if any element is not finite."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array)).tolist()
        raise ValueError(f"{name} has non-finite values at frames {bad}")
    return [float(v) for v in array]
