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
from typing import Literal, NamedTuple

import mdtraj
import numpy as np
from pydantic import BaseModel

NM_TO_ANGSTROM = 10.0
PS_PER_NS = 1000.0
BACKBONE = "protein and (name N or name CA or name C or name O)"
SS_CLASSES = {"H": "helix", "E": "strand", "C": "coil"}
CSV_COLUMNS = ("phase", "time_ps", "potential_kj_mol", "total_kj_mol", "temperature_k")
# Significant digits of the CSV clock: the MD kernel's StateCsvReporter writes time_ps with "%.6g".
CSV_TIME_DIGITS = 6

Verdict = Literal["stable", "unstable", "inconclusive"]
# What a failed criterion means; a workflow acts on these (a run "too short" or "still drifting" is
# worth extending, one whose fold is lost is not).
Failure = Literal[
    "too short", "fold lost", "still drifting", "secondary structure lost", "thermostat did not equilibrate"
]


@dataclass(frozen=True)
class StabilityThresholds:
    """Every threshold of the stability verdict, and the production it needs, in one documented place.

    A report prints them; a study's guardrails read ``min_production_ps`` so that no plan is shorter
    than what a verdict needs. References for the drift test: block averaging, H. Flyvbjerg and H. G.
    Petersen, J. Chem. Phys. 91, 461 (1989); convergence of biomolecular simulations, A. Grossfield and
    D. M. Zuckerman, Annu. Rep. Comput. Chem. 5, 23 (2009).
    """

    # Shortest production, in ps, from which a verdict is drawn; a shorter run is "inconclusive: too
    # short" whatever it shows. 50 ps is what the drift test below needs for the default study (villin
    # headpiece, 35 residues, implicit solvent): the first half absorbs the relaxation away from the
    # experimental structure (at 300 K the backbone RMSD levels off after 15-20 ps), and the last half
    # gives five blocks of 5 ps, each longer than twice the correlation time of the backbone RMSD of
    # the folded protein (about 2 ps integrated at 300 K), so their means are close to independent, as
    # block averaging assumes. A verdict on this scale means "no fast loss of the fold", the question
    # an elevated temperature asks; unfolding at room temperature is far slower than any run here.
    min_production_ps: float = 50.0
    # Share of production frames (the last ones) over which "where the run ended up" is measured.
    # The last quarter lets the first three quarters serve as relaxation away from the start.
    final_window_fraction: float = 0.25
    # Mean backbone RMSD to the starting structure over the final window, above which the fold is
    # considered lost. Folded small proteins typically plateau at 1-3 Å from their experimental
    # structure; beyond 3 Å a domain of tens of residues has rearranged, not just breathed.
    rmsd_stable_max_angstrom: float = 3.0
    # Share of production frames (the last ones) in which the drift test looks for a trend: half, so
    # it holds several blocks longer than the RMSD's correlation time and starts after the relaxation.
    drift_window_fraction: float = 0.5
    # Contiguous blocks the drift window is cut into. A line is fitted through the block means; their
    # scatter about it estimates the trend's standard error. Raw frames (every 0.5 ps or so) are
    # strongly correlated, so a fit through them would take breathing for a trend with high confidence;
    # block means average that correlation out (Flyvbjerg & Petersen). Five blocks leave 3 degrees of
    # freedom for the scatter, and fewer than 3 blocks leave none.
    drift_blocks: int = 5
    # The run is still drifting when the fitted change of backbone RMSD across the window exceeds this
    # many standard errors... 3.18 is Student's two-sided 95% t quantile for drift_blocks - 2 = 3
    # degrees of freedom, so with independent blocks a run fluctuating about a plateau fails this part
    # one time in 20. Change it together with drift_blocks.
    drift_significance: float = 3.18
    # ...and also exceeds this many ångström: a settled fold breathes by a few tenths of an Å (backbone
    # RMSD fluctuations of 0.2-0.5 Å), so a significant but smaller change is no structural trend.
    drift_tolerance_angstrom: float = 0.5
    # Fraction of residues in helix or strand in the first production frame that are still in the same
    # class in the last. DSSP flickers at helix ends (one or two residues per end), which costs a small
    # protein up to about a quarter of its structured residues; below 0.7 an element has unwound.
    ss_retention_min: float = 0.7
    # Allowed relative deviation of the mean production temperature from the thermostat target. The
    # mean over many frames is far tighter than the instantaneous fluctuation (about T*sqrt(2/N_dof),
    # ~10 K for a small solvated protein), so a mean off by more than 5% means the system had not
    # reached the target temperature: the thermostat did not equilibrate it.
    temperature_tolerance_fraction: float = 0.05
    # Fewest production frames for a verdict: with 10 frames the drift window holds 5, one per block.
    min_frames: int = 10

    def __post_init__(self) -> None:
        """Reject thresholds that would make the verdict meaningless, before any analysis runs."""
        for name in ("final_window_fraction", "drift_window_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0.0 <= self.ss_retention_min <= 1.0:
            raise ValueError(f"ss_retention_min must be in [0, 1], got {self.ss_retention_min}")
        if not (math.isfinite(self.min_production_ps) and self.min_production_ps >= 0.0):
            raise ValueError(f"min_production_ps must be a finite number >= 0, got {self.min_production_ps}")
        positive = (
            "rmsd_stable_max_angstrom",
            "drift_significance",
            "drift_tolerance_angstrom",
            "temperature_tolerance_fraction",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.drift_blocks < 3:
            raise ValueError(
                f"drift_blocks must be at least 3 (a line through 2 has no scatter), got {self.drift_blocks}"
            )
        if math.ceil(self.drift_window_fraction * self.min_frames) < self.drift_blocks:
            raise ValueError(
                f"min_frames {self.min_frames} puts fewer than drift_blocks ({self.drift_blocks}) frames in"
                f" the drift window ({self.drift_window_fraction:g} of production): raise min_frames"
            )


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


class RmsdDrift(BaseModel):
    """How much the backbone RMSD still changed over the drift window, and how sure that is.

    A line is fitted through the window's block means; ``change_angstrom`` is its rise from the first
    block's mid-time to the last's, ``standard_error_angstrom`` that rise's standard error from the
    block means' scatter about the line.
    """

    window_ps: float  # length of the drift window, the last frames of production
    blocks: int
    change_angstrom: float
    standard_error_angstrom: float


class StabilityAssessment(BaseModel):
    """The verdict, one reason per criterion (each quoting its number and threshold), and the failures."""

    verdict: Verdict
    reasons: list[str]
    failed: list[Failure]  # what each failed criterion means, in the order of the reasons


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
    window_mean = _finite("final-window RMSD mean", float(np.mean(rmsd[-window:])))
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


def rmsd_drift(
    time_ns: np.ndarray, rmsd_angstrom: np.ndarray, thresholds: StabilityThresholds = DEFAULT_THRESHOLDS
) -> RmsdDrift | None:
    """Fit a line through block means of the drift window's RMSD: its rise and that rise's standard error.

    The window is the last ``drift_window_fraction`` of frames (at least ``drift_blocks`` of them), cut
    into ``drift_blocks`` contiguous blocks (fewer if the window has fewer frames). The standard error
    comes from the block means' own scatter about the line (ordinary least squares, ``blocks - 2``
    degrees of freedom), which holds when blocks are longer than the RMSD's correlation time.

    Returns:
        None when fewer than 3 blocks can be formed: a line through 2 points has no scatter to judge by.
    """
    frames = len(rmsd_angstrom)
    fraction_frames = math.ceil(thresholds.drift_window_fraction * frames)
    window = min(frames, max(thresholds.drift_blocks, fraction_frames))
    blocks = min(thresholds.drift_blocks, window)
    if blocks < 3:
        return None
    t = np.array([b.mean() for b in np.array_split(np.asarray(time_ns[-window:], dtype=np.float64), blocks)])
    r = np.array(
        [b.mean() for b in np.array_split(np.asarray(rmsd_angstrom[-window:], dtype=np.float64), blocks)]
    )
    dt = t - t.mean()
    sxx = float(dt @ dt)
    slope = float(dt @ (r - r.mean())) / sxx
    residuals = r - r.mean() - slope * dt
    slope_error = math.sqrt(float(residuals @ residuals) / (blocks - 2) / sxx)
    span_ns = float(t[-1] - t[0])
    window_start_ns = float(time_ns[-window - 1]) if window < frames else 0.0
    return RmsdDrift(
        window_ps=_finite("drift window", (float(time_ns[-1]) - window_start_ns) * PS_PER_NS),
        blocks=blocks,
        change_angstrom=_finite("RMSD drift", slope * span_ns),
        standard_error_angstrom=_finite("RMSD drift standard error", slope_error * span_ns),
    )


def assess_stability(
    *,
    frames: int,
    production_ps: float,
    final_window_rmsd_mean_angstrom: float,
    rmsd_drift: RmsdDrift | None,
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
    - **inconclusive** if production is shorter than ``min_production_ps`` or has fewer than
      ``min_frames`` frames or too few for the drift test (too short to judge), or the RMSD is still
      drifting (see ``_drift_check``; a workflow extends the run), or the mean temperature is off
      target by more than ``temperature_tolerance_fraction`` (the thermostat did not equilibrate the
      system, so the structure was not sampled at the intended temperature);
    - **stable** otherwise.

    Every criterion is evaluated and gets a reason, whether it passed or not; a retention of None
    (nothing structured in the first frame) is reported as not applicable and decides nothing.
    """
    t = thresholds
    checks = [
        _check(
            "inconclusive",
            f"production {production_ps:.4g} ps",
            f"minimum {t.min_production_ps:g} ps",
            production_ps < t.min_production_ps,
            "too short",
        ),
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
        _drift_check(rmsd_drift, t),
        _retention_check(ss_retention, t),
        _temperature_check(mean_temperature_k, target_temperature_k, t),
    ]
    failed = [c.failure for c in checks if c.failed]
    forced = {c.forces for c in checks if c.failed}
    verdict: Verdict = "unstable" if "unstable" in forced else "inconclusive" if forced else "stable"
    return StabilityAssessment(verdict=verdict, reasons=[c.reason for c in checks], failed=failed)


class _Criterion(NamedTuple):
    """One evaluated criterion: the verdict it forces if failed, its failure, whether it failed, why."""

    forces: Verdict
    failure: Failure
    failed: bool
    reason: str


def _check(forces: Verdict, measured: str, threshold: str, failed: bool, failure: Failure) -> _Criterion:
    """One criterion with its reason line.

    Reasons share one shape, ``<measured> (<threshold>): ok | <failure>``, so a report can tabulate them.
    """
    return _Criterion(forces, failure, failed, f"{measured} ({threshold}): {failure if failed else 'ok'}")


def _drift_check(drift: RmsdDrift | None, t: StabilityThresholds) -> _Criterion:
    """Still drifting: the RMSD's change over the drift window is both significant and large.

    Significant: beyond ``drift_significance`` standard errors (a t test of the block means' trend);
    large: beyond ``drift_tolerance_angstrom``. So the limit is the larger of the two. Without a drift
    (too few frames for 3 blocks) the run is too short to say.
    """
    if drift is None:
        return _Criterion(
            "inconclusive",
            "too short",
            True,
            "backbone RMSD drift: fewer than 3 frames in the drift window: too short",
        )
    limit = max(t.drift_tolerance_angstrom, t.drift_significance * drift.standard_error_angstrom)
    return _check(
        "inconclusive",
        f"backbone RMSD drift over the last {drift.window_ps:.3g} ps, {drift.blocks} block means,"
        f" {drift.change_angstrom:.2g} ± {drift.standard_error_angstrom:.2g} Å",
        f"maximum |drift| {t.drift_tolerance_angstrom:g} Å or {t.drift_significance:g} standard errors,"
        f" here {limit:.2g} Å",
        abs(drift.change_angstrom) > limit,
        "still drifting",
    )


def _retention_check(ss_retention: float | None, t: StabilityThresholds) -> _Criterion:
    """Secondary structure lost; not applicable (never failed) when nothing was structured at first."""
    if ss_retention is None:
        reason = "secondary-structure retention: not applicable (no helix or strand in the first frame)"
        return _Criterion("unstable", "secondary structure lost", False, reason)
    return _check(
        "unstable",
        f"secondary-structure retention {ss_retention:.3g}",
        f"minimum {t.ss_retention_min:g}",
        ss_retention < t.ss_retention_min,
        "secondary structure lost",
    )


def _temperature_check(mean_k: float, target_k: float, t: StabilityThresholds) -> _Criterion:
    """The thermostat did not equilibrate: the mean production temperature is off its target."""
    tolerance_k = t.temperature_tolerance_fraction * target_k
    return _check(
        "inconclusive",
        f"mean temperature {mean_k:.4g} K",
        f"target {target_k:g} K ± {t.temperature_tolerance_fraction:.0%} ({tolerance_k:.3g} K)",
        abs(mean_k - target_k) > tolerance_k,
        "thermostat did not equilibrate",
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
