"""One metric at a time from a finished run's work directory, for the agent's analysis tools.

``analysis.analyze_trajectory`` computes the stability study's whole set at once; a question such as
"plot the radius of gyration" or "compute SASA" needs one series, and some the study never computes
(SASA, hydrogen bonds, moments of inertia). Each function here takes the run's work directory (a
path string: picklable, so it runs on the site where the trajectory is) and reads the production
frames the MD kernel wrote there; RMSD, Rg and RMSF are the study's own kernels, so the numbers agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import mdtraj
import numpy as np
from pydantic import BaseModel

from sciagent.science.analysis import (
    NM_TO_ANGSTROM,
    SS_CLASSES,
    _backbone_rmsd_angstrom,
    _ca_rmsf_angstrom,
    _load_inputs,
    _radius_of_gyration_nm,
    _superpose,
)
from sciagent.science.outputs import RunFiles

RmsdSelection = Literal["backbone", "ca", "heavy"]
_SELECTIONS = {"ca": "protein and name CA", "heavy": "protein and not element H"}


class Series(BaseModel):
    """A quantity per production frame, with its summary."""

    name: str
    unit: str
    time_ps: list[float]
    values: list[float]
    mean: float
    std: float
    first: float
    last: float
    minimum: float
    maximum: float


class PerResidue(BaseModel):
    """A quantity per residue (``LEU12``), with its summary."""

    name: str
    unit: str
    residues: list[str]
    values: list[float]
    mean: float
    maximum: float
    maximum_at: str


class SecondaryStructureTimeline(BaseModel):
    """DSSP (simplified: helix, strand, coil) fractions per frame, and the first frame against the last."""

    time_ps: list[float]
    helix: list[float]
    strand: list[float]
    coil: list[float]
    first: dict[str, float]
    last: dict[str, float]
    residues_changed: int
    first_codes: str
    last_codes: str


def rmsd(workdir: str, selection: RmsdSelection = "backbone") -> Series:
    """RMSD to the starting structure after superposition, in Å (backbone N/CA/C/O by default)."""
    rows, reference, traj = _load(workdir)
    if selection == "backbone":
        values = _backbone_rmsd_angstrom(traj, reference)
    else:
        atoms = traj.topology.select(_SELECTIONS[selection])
        target = reference.xyz[0, atoms].astype(np.float64)
        aligned = _superpose(traj.xyz[:, atoms].astype(np.float64), target)
        values = np.sqrt(np.mean(np.sum((aligned - target) ** 2, axis=2), axis=1)) * NM_TO_ANGSTROM
    return series_of(f"{selection} RMSD", "Å", rows["time_ps"], values)


def radius_of_gyration(workdir: str) -> Series:
    """Mass-weighted radius of gyration of the protein, in nm."""
    rows, _, traj = _load(workdir)
    return series_of("radius of gyration", "nm", rows["time_ps"], _radius_of_gyration_nm(traj))


def rmsf(workdir: str) -> PerResidue:
    """CA root-mean-square fluctuation per residue over production, in Å."""
    _, reference, traj = _load(workdir)
    values, labels = _ca_rmsf_angstrom(traj, reference)
    return _per_residue("CA RMSF", "Å", labels, values)


def sasa(workdir: str) -> Series:
    """Solvent-accessible surface area of the protein (Shrake-Rupley, 0.14 nm probe), in nm²."""
    rows, _, traj = _load(workdir)
    # Frame by frame: mdtraj 1.11 given several frames at once returns values for frames after the
    # first that differ from each frame's own (by up to 0.03 nm² on villin), so each is computed alone.
    values = [mdtraj.shrake_rupley(frame, probe_radius=0.14, mode="residue").sum() for frame in traj]
    return series_of("SASA", "nm²", rows["time_ps"], np.asarray(values))


def hydrogen_bonds(workdir: str) -> Series:
    """Protein hydrogen bonds per frame (Wernet-Nilsson criterion; needs the hydrogens the run has)."""
    rows, _, traj = _load(workdir)
    counts = np.array([len(bonds) for bonds in mdtraj.wernet_nilsson(traj, exclude_water=True)], float)
    return series_of("hydrogen bonds", "count", rows["time_ps"], counts)


def moments_of_inertia(workdir: str) -> list[Series]:
    """The protein's three principal moments of inertia per frame, smallest first, in amu·nm²."""
    rows, _, traj = _load(workdir)
    moments = np.sort(mdtraj.principal_moments(traj), axis=1)
    time_ps = rows["time_ps"]
    return [series_of(f"principal moment {i + 1}", "amu·nm²", time_ps, moments[:, i]) for i in range(3)]


def energy_timeseries(workdir: str) -> list[Series]:
    """Potential and total energy (kJ/mol) and temperature (K) over production, from the state CSV."""
    rows, _, _ = _load(workdir)
    return [
        series_of("potential energy", "kJ/mol", rows["time_ps"], rows["potential_kj_mol"]),
        series_of("total energy", "kJ/mol", rows["time_ps"], rows["total_kj_mol"]),
        series_of("temperature", "K", rows["time_ps"], rows["temperature_k"]),
    ]


def secondary_structure(workdir: str) -> SecondaryStructureTimeline:
    """DSSP per frame: helix/strand/coil fractions of the residues DSSP assigns, and first vs last frame."""
    rows, _, traj = _load(workdir)
    codes = mdtraj.compute_dssp(traj, simplified=True)
    assigned = np.isin(codes, list(SS_CLASSES))
    fractions = {
        name: [float(np.mean(frame[mask] == code)) for frame, mask in zip(codes, assigned, strict=True)]
        for code, name in SS_CLASSES.items()
    }
    first, last = codes[0], codes[-1]
    both = assigned[0] & assigned[-1]
    return SecondaryStructureTimeline(
        time_ps=[float(t) for t in rows["time_ps"]],
        helix=fractions["helix"],
        strand=fractions["strand"],
        coil=fractions["coil"],
        first={name: fractions[name][0] for name in fractions},
        last={name: fractions[name][-1] for name in fractions},
        residues_changed=int(np.sum(first[both] != last[both])),
        first_codes="".join(c if c in SS_CLASSES else "-" for c in first),
        last_codes="".join(c if c in SS_CLASSES else "-" for c in last),
    )


SUMMARISED = ("rmsd", "radius_of_gyration", "rmsf", "sasa", "hydrogen_bonds", "helix_fraction")
SUMMARY_UNITS = {
    "rmsd": "Å", "radius_of_gyration": "nm", "rmsf": "Å", "sasa": "nm²", "hydrogen_bonds": "count",
    "helix_fraction": "fraction",
}  # fmt: skip


def summaries(workdir: str, names: Sequence[str]) -> dict[str, float]:
    """Each named metric's production mean (``rmsf``: its maximum), in one call: one round trip per run.

    Raises:
        ValueError: an unknown metric name, or files the kernels cannot use.
    """
    unknown = sorted(set(names) - set(SUMMARISED))
    if unknown:
        raise ValueError(f"unknown metrics {', '.join(unknown)}: use {', '.join(SUMMARISED)}")
    kernels = {
        "rmsd": lambda: rmsd(workdir).mean,
        "radius_of_gyration": lambda: radius_of_gyration(workdir).mean,
        "rmsf": lambda: rmsf(workdir).maximum,
        "sasa": lambda: sasa(workdir).mean,
        "hydrogen_bonds": lambda: hydrogen_bonds(workdir).mean,
        "helix_fraction": lambda: float(np.mean(secondary_structure(workdir).helix)),
    }
    return {name: kernels[name]() for name in names}


def _load(workdir: str) -> tuple[dict[str, np.ndarray], mdtraj.Trajectory, mdtraj.Trajectory]:
    files = RunFiles(Path(workdir))
    if not files.trajectory.exists():
        raise ValueError(f"{workdir} has no trajectory: the run wrote no frames")
    return _load_inputs(files.start_pdb, files.trajectory, files.state_csv)


def series_of(name: str, unit: str, time_ps: Sequence[float], values: Sequence[float]) -> Series:
    """A ``Series`` with its summary; a missing or non-finite value is refused (ValueError)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"{name}: no frames, or a value that is not finite")
    return Series(
        name=name,
        unit=unit,
        time_ps=[float(t) for t in time_ps],
        values=[float(v) for v in values],
        mean=float(values.mean()),
        std=float(values.std()),
        first=float(values[0]),
        last=float(values[-1]),
        minimum=float(values.min()),
        maximum=float(values.max()),
    )


def _per_residue(name: str, unit: str, labels: list[str], values: np.ndarray) -> PerResidue:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: a value that is not finite")
    top = int(np.argmax(values))
    return PerResidue(
        name=name,
        unit=unit,
        residues=labels,
        values=[float(v) for v in values],
        mean=float(values.mean()),
        maximum=float(values[top]),
        maximum_at=labels[top],
    )
