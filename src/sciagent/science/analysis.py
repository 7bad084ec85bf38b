"""Turn one MD run's files into numbers a scientist can check, and a stability verdict.

Inputs are what the MD kernel writes: the starting system as PDB (the RMSD reference), the production
frames as DCD, and the state CSV. Only protein atoms are analysed; water and ions are never loaded.
Every number in the result is computed from those files; a value that is not finite raises
``ValueError`` instead of reaching a report. Lengths follow the field names: ``_nm`` in nanometres
(mdtraj's unit), ``_angstrom`` in ångström.

This module imports only numpy, mdtraj and pydantic so it runs on a bare remote worker.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import mdtraj
import numpy as np
from pydantic import BaseModel

NM_TO_ANGSTROM = 10.0
PS_PER_NS = 1000.0
BACKBONE = "protein and (name N or name CA or name C or name O)"
SS_CLASSES = {"H": "helix", "E": "strand", "C": "coil"}
CSV_COLUMNS = ("phase", "time_ps", "potential_kj_mol", "total_kj_mol", "temperature_k")


@dataclass(frozen=True)
class StabilityThresholds:
    """Every threshold the stability verdict uses, in one place, so a report can print them."""

    # Share of production frames (the last ones) over which "where the run ended up" is measured.
    # The last quarter lets the first three quarters serve as relaxation away from the start.
    final_window_fraction: float = 0.25
    # Mean backbone RMSD to the starting structure over the final window, above which the fold is
    # considered lost. Folded small proteins typically plateau at 1-3 Å from their experimental
    # structure; beyond 3 Å a domain of tens of residues has rearranged, not just breathed.
    rmsd_stable_max_angstrom: float = 3.0
    # Least-squares slope of backbone RMSD over the final window, above which (in absolute value) the
    # run has not settled and the verdict is "inconclusive" (a workflow extends the run). At 1 Å/ns a
    # structure sitting at a typical 1-2 Å would cross the 3 Å limit within 1-2 ns, i.e. within one
    # extension. Thermal noise (about 0.2 Å) gives slopes near 0.05 Å/ns over a 1 ns window of 250
    # frames, so ns-scale runs are not flagged by noise; runs of tens of ps are, honestly, too short.
    rmsd_drift_max_angstrom_per_ns: float = 1.0
    # Fraction of residues in helix or strand in the first production frame that are still in the same
    # class in the last. DSSP flickers at helix ends (one or two residues per end), which costs a small
    # protein up to about a quarter of its structured residues; below 0.7 an element has unwound.
    ss_retention_min: float = 0.7
    # Allowed relative deviation of the mean production temperature from the thermostat target. The
    # mean over many frames is far tighter than the instantaneous fluctuation (about T*sqrt(2/N_dof),
    # ~10 K for a small solvated protein), so a mean off by more than 5% means the system had not
    # reached the target temperature: the thermostat did not equilibrate it.
    temperature_tolerance_fraction: float = 0.05
    # Fewest production frames for a verdict. With 10 frames the final window still holds 3 frames,
    # the fewest from which a slope is more than a line through two points.
    min_frames: int = 10

    def __post_init__(self) -> None:
        """Reject thresholds that would make the verdict meaningless, before any analysis runs."""
        if not 0.0 < self.final_window_fraction <= 1.0:
            raise ValueError(f"final_window_fraction must be in (0, 1], got {self.final_window_fraction}")
        if not 0.0 <= self.ss_retention_min <= 1.0:
            raise ValueError(f"ss_retention_min must be in [0, 1], got {self.ss_retention_min}")
        positive = (
            "rmsd_stable_max_angstrom",
            "rmsd_drift_max_angstrom_per_ns",
            "temperature_tolerance_fraction",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.min_frames < 2:
            raise ValueError(f"min_frames must be at least 2 (a slope needs 2 points), got {self.min_frames}")


DEFAULT_THRESHOLDS = StabilityThresholds()


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


class StabilityAssessment(BaseModel):
    """The verdict, and one reason per criterion evaluated, each quoting its number and threshold."""

    verdict: Literal["stable", "unstable", "inconclusive"]
    reasons: list[str]


class Analysis(BaseModel):
    """Everything computed from one run's production phase; JSON-serialisable, no NaN."""

    frames: int
    time_ns: list[float]
    backbone_rmsd_angstrom: list[float]
    radius_of_gyration_nm: list[float]  # all protein atoms, mass-weighted
    ca_rmsf_angstrom: list[float]
    residue_labels: list[str]
    final_window_rmsd_mean_angstrom: float
    final_window_rmsd_slope_angstrom_per_ns: float
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
    rmsd = _backbone_rmsd_angstrom(traj, reference)
    window = _final_window_size(frames, thresholds.final_window_fraction)
    window_mean = _finite("final-window RMSD mean", float(np.mean(rmsd[-window:])))
    window_slope = _finite("final-window RMSD slope", _slope(time_ns[-window:], rmsd[-window:]))
    rg = _radius_of_gyration_nm(traj)
    rmsf, labels = _ca_rmsf_angstrom(traj, reference)
    ss = _secondary_structure(traj)
    temperature = _series_stats("temperature_k", time_ns, rows["temperature_k"])
    assessment = assess_stability(
        frames=frames,
        final_window_rmsd_mean_angstrom=window_mean,
        final_window_rmsd_slope_angstrom_per_ns=window_slope,
        ss_retention=ss.retention,
        mean_temperature_k=temperature.mean,
        target_temperature_k=target_temperature_k,
        thresholds=thresholds,
    )
    return Analysis(
        frames=frames,
        time_ns=_finite_list("time_ns", time_ns),
        backbone_rmsd_angstrom=_finite_list("backbone RMSD", rmsd),
        radius_of_gyration_nm=_finite_list("radius of gyration", rg),
        ca_rmsf_angstrom=_finite_list("CA RMSF", rmsf),
        residue_labels=labels,
        final_window_rmsd_mean_angstrom=window_mean,
        final_window_rmsd_slope_angstrom_per_ns=window_slope,
        rg_mean_nm=_finite("Rg mean", float(np.mean(rg))),
        max_rmsf_angstrom=_finite("max RMSF", float(np.max(rmsf))),
        secondary_structure=ss,
        potential_energy_kj_mol=_series_stats("potential_kj_mol", time_ns, rows["potential_kj_mol"]),
        total_energy_kj_mol=_series_stats("total_kj_mol", time_ns, rows["total_kj_mol"]),
        temperature_k=temperature,
        target_temperature_k=float(target_temperature_k),
        assessment=assessment,
        thresholds={k: float(v) for k, v in asdict(thresholds).items()},
    )


def assess_stability(
    *,
    frames: int,
    final_window_rmsd_mean_angstrom: float,
    final_window_rmsd_slope_angstrom_per_ns: float,
    ss_retention: float | None,
    mean_temperature_k: float,
    target_temperature_k: float,
    thresholds: StabilityThresholds = DEFAULT_THRESHOLDS,
) -> StabilityAssessment:
    """Judge stability from computed numbers, so the rule is testable without a trajectory.

    Rule, in order of precedence:

    - **unstable** if the final-window mean backbone RMSD exceeds ``rmsd_stable_max_angstrom`` or the
      secondary-structure retention is below ``ss_retention_min`` (the fold was lost; running longer
      will not bring it back, so this wins over "inconclusive");
    - **inconclusive** if there are fewer than ``min_frames`` frames (too short to judge), or the
      absolute final-window RMSD slope exceeds ``rmsd_drift_max_angstrom_per_ns`` (still drifting; a
      workflow extends the run), or the mean temperature is off target by more than
      ``temperature_tolerance_fraction`` (the thermostat did not equilibrate the system, so the
      structure was not sampled at the intended temperature);
    - **stable** otherwise.

    Every criterion is evaluated and gets a reason, whether it passed or not; a retention of None
    (nothing structured in the first frame) is reported as not applicable and decides nothing.
    """
    t = thresholds
    tolerance_k = t.temperature_tolerance_fraction * target_temperature_k
    slope = final_window_rmsd_slope_angstrom_per_ns
    tolerance = f"{t.temperature_tolerance_fraction:.0%} ({tolerance_k:.3g} K)"
    target = f"target {target_temperature_k:g} K ± {tolerance}"
    off_target = abs(mean_temperature_k - target_temperature_k) > tolerance_k
    # (verdict the criterion forces when it fails, failed, reason)
    checks: list[tuple[str, bool, str]] = [
        _check(
            "inconclusive",
            f"production frames {frames}",
            f"minimum {t.min_frames}",
            frames < t.min_frames,
            "too short",
        ),
        _check(
            "unstable",
            f"final-window mean backbone RMSD {final_window_rmsd_mean_angstrom:.3g} Å",
            f"maximum {t.rmsd_stable_max_angstrom:g} Å",
            final_window_rmsd_mean_angstrom > t.rmsd_stable_max_angstrom,
            "fold lost",
        ),
        _check(
            "inconclusive",
            f"final-window backbone RMSD slope {slope:.3g} Å/ns",
            f"maximum |slope| {t.rmsd_drift_max_angstrom_per_ns:g} Å/ns",
            abs(slope) > t.rmsd_drift_max_angstrom_per_ns,
            "still drifting",
        ),
        _check(
            "inconclusive",
            f"mean temperature {mean_temperature_k:.4g} K",
            target,
            off_target,
            "thermostat did not equilibrate",
        ),
    ]
    if ss_retention is None:
        checks.insert(
            3,
            (
                "unstable",
                False,
                "secondary-structure retention: not applicable (no helix or strand in the first frame)",
            ),
        )
    else:
        checks.insert(
            3,
            _check(
                "unstable",
                f"secondary-structure retention {ss_retention:.3g}",
                f"minimum {t.ss_retention_min:g}",
                ss_retention < t.ss_retention_min,
                "secondary structure lost",
            ),
        )
    failed = {kind for kind, fail, _ in checks if fail}
    verdict: Literal["stable", "unstable", "inconclusive"] = (
        "unstable" if "unstable" in failed else "inconclusive" if "inconclusive" in failed else "stable"
    )
    return StabilityAssessment(verdict=verdict, reasons=[reason for _, _, reason in checks])


def _check(forces: str, measured: str, threshold: str, failed: bool, failure: str) -> tuple[str, bool, str]:
    """One criterion: the verdict it forces if failed, whether it failed, and its reason line.

    Reasons share one shape, ``<measured> (<threshold>): ok | <failure>``, so a report can tabulate them.
    """
    return forces, failed, f"{measured} ({threshold}): {failure if failed else 'ok'}"


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
    """Frames in the final window: the last ``fraction`` of frames, rounded up, at least two for a slope."""
    return min(frames, max(2, math.ceil(fraction * frames)))


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y against x."""
    return float(np.polyfit(x, y, 1)[0])


def _series_stats(name: str, time_ns: np.ndarray, values: np.ndarray) -> SeriesStats:
    """Mean, population std (ddof=0: describes these frames, not a wider population) and drift."""
    return SeriesStats(
        mean=_finite(f"{name} mean", float(np.mean(values))),
        std=_finite(f"{name} std", float(np.std(values, ddof=0))),
        drift_per_ns=_finite(f"{name} drift", _slope(time_ns, values)),
    )


def _finite(name: str, value: float) -> float:
    """Return value as a plain float, or raise: a NaN must never reach a result."""
    if not math.isfinite(value):
        raise ValueError(f"{name} is not finite ({value})")
    return float(value)


def _finite_list(name: str, values: np.ndarray) -> list[float]:
    """Plain-float list for JSON, raising if any element is not finite."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array)).tolist()
        raise ValueError(f"{name} has non-finite values at frames {bad}")
    return [float(v) for v in array]
