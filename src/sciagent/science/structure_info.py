"""What a structure file holds, read as it is: chains, sequences, heterogens, gaps, secondary structure.

The answer to "how many chains and atoms does this structure have?" must come from the file, never
from a model's memory, so this is a science kernel (picklable result, runs where the file is).
Missing residues come from two places, both reported: SEQRES records that PDBFixer finds no
coordinates for, and jumps in the residue numbering of a chain (for files without SEQRES). Secondary
structure is mdtraj's DSSP (simplified: helix H, strand E, coil C) of the first model's protein residues.
"""

from __future__ import annotations

import itertools
from collections import Counter

import mdtraj
import numpy as np
from pdbfixer import PDBFixer
from pydantic import BaseModel, Field

from sciagent.errors import StructureError
from sciagent.science.structures import StructureFile

_WATER = frozenset({"HOH", "WAT", "SOL", "TIP3", "T3P"})
_SS_NAMES = {"H": "helix", "E": "strand", "C": "coil"}


class ChainSummary(BaseModel):
    """One chain: its size and, for polymer residues, its one-letter sequence (X: not a standard residue)."""

    chain_id: str
    residues: int
    atoms: int
    sequence: str
    first_residue: int | None = None
    last_residue: int | None = None


class StructureSummary(BaseModel):
    """What ``inspect_structure`` read; every count is from the file's first model."""

    source: str
    path: str
    models: int
    chains: list[ChainSummary]
    total_atoms: int
    total_residues: int
    heterogens: dict[str, int] = Field(default_factory=dict, description="residue name -> count, no water")
    waters: int = 0
    missing_residues: list[str] = Field(default_factory=list, description="'A:GLY12' (SEQRES) or 'A:13-15'")
    secondary_structure: dict[str, float] = Field(
        default_factory=dict, description="fraction of protein residues: helix, strand, coil"
    )


def inspect_structure(structure: StructureFile) -> StructureSummary:
    """Count and describe what ``structure`` holds (see the module docstring).

    Raises:
        StructureError: the file cannot be read as a structure.
    """
    try:
        trajectory = mdtraj.load(str(structure.path))
    except Exception as exc:  # mdtraj raises many types for a bad file
        raise StructureError(f"cannot read {structure.label} ({structure.path}): {exc}") from exc
    topology = trajectory.topology
    chains, heterogens, waters = [], Counter(), 0
    for chain in topology.chains:
        residues = list(chain.residues)
        if not residues:
            continue
        polymer = [residue for residue in residues if residue.is_protein or residue.is_nucleic]
        for residue in residues:
            if residue.name in _WATER or residue.is_water:
                waters += 1
            elif not (residue.is_protein or residue.is_nucleic):
                heterogens[residue.name] += 1
        numbers = [residue.resSeq for residue in polymer]
        chains.append(
            ChainSummary(
                chain_id=chain.chain_id or str(chain.index),
                residues=len(residues),
                atoms=sum(residue.n_atoms for residue in residues),
                sequence="".join(residue.code or "X" for residue in polymer),
                first_residue=min(numbers) if numbers else None,
                last_residue=max(numbers) if numbers else None,
            )
        )
    return StructureSummary(
        source=structure.label,
        path=str(structure.path),
        models=trajectory.n_frames,
        chains=chains,
        total_atoms=topology.n_atoms,
        total_residues=topology.n_residues,
        heterogens=dict(sorted(heterogens.items())),
        waters=waters,
        missing_residues=_seqres_gaps(structure) + _numbering_gaps(topology),
        secondary_structure=_secondary_structure(trajectory[0]),
    )


def _seqres_gaps(structure: StructureFile) -> list[str]:
    """Residues SEQRES lists that have no coordinates (PDBFixer's reading); none without SEQRES."""
    try:
        fixer = PDBFixer(filename=str(structure.path))
        fixer.findMissingResidues()
    except Exception:  # a file PDBFixer cannot read still has its other facts reported
        return []
    chains = list(fixer.topology.chains())
    missing = []
    for (chain_index, _), names in sorted(fixer.missingResidues.items()):
        chain_id = chains[chain_index].id
        missing.extend(f"{chain_id}:{name}" for name in names)
    return missing


def _numbering_gaps(topology: mdtraj.Topology) -> list[str]:
    """Jumps in a chain's protein residue numbers: ``A:13-15`` when 12 is followed by 16."""
    gaps = []
    for chain in topology.chains:
        numbers = [residue.resSeq for residue in chain.residues if residue.is_protein]
        for before, after in itertools.pairwise(numbers):
            if after > before + 1:
                first, last = before + 1, after - 1
                span = f"{first}" if first == last else f"{first}-{last}"
                gaps.append(f"{chain.chain_id or chain.index}:{span}")
    return gaps


def _secondary_structure(frame: mdtraj.Trajectory) -> dict[str, float]:
    if not any(residue.is_protein for residue in frame.topology.residues):
        return {}
    codes = mdtraj.compute_dssp(frame, simplified=True)[0]
    protein = np.array([code for code in codes if code in _SS_NAMES])
    if protein.size == 0:
        return {}
    return {name: round(float(np.mean(protein == code)), 4) for code, name in _SS_NAMES.items()}
