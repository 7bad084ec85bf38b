"""Prepare a structure for simulation with PDBFixer, recording every change so reports can say what was done.

The steps follow PDBFixer's own recipe: select chains, find missing residues, replace nonstandard residues,
remove heterogens, add missing heavy atoms, add hydrogens at a pH. Only internal gaps are modelled; residues
missing at a chain's ends are listed in the record but not built, because a floppy invented tail changes the
dynamics more than it helps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import openmm.app
import openmm.unit
from pdbfixer import PDBFixer
from pydantic import BaseModel, Field

from sciagent.errors import StructureError
from sciagent.science.structures import StructureFile

# Fixed so that preparing the same file twice gives the same coordinates (0 would mean "random" to OpenMM).
_SEED = 1
_HYDROGEN_SYMBOLS = frozenset({"H", "D"})


class PreparationRecord(BaseModel):
    """What preparation changed, as plain JSON-able data for the journal and the report.

    Residues are written ``<chain>:<name><number>``, e.g. ``A:MSE12``; ``nonstandard_replaced`` maps such a
    residue to its standard replacement (``{"A:MSE12": "MET"}``). ``chains_kept``/``chains_removed`` describe
    the chain selection only; heterogen-only chains dropped later show up in ``heterogens_removed``.
    Atom counts are net changes: ``hydrogens_added`` is final hydrogens minus those present before atoms
    were added.
    """

    source: str
    chains_kept: list[str]
    chains_removed: list[str] = Field(default_factory=list)
    heterogens_removed: dict[str, int] = Field(default_factory=dict)
    nonstandard_replaced: dict[str, str] = Field(default_factory=dict)
    missing_residues_added: list[str] = Field(default_factory=list)
    terminal_residues_not_modelled: list[str] = Field(default_factory=list)
    heavy_atoms_added: int = 0
    hydrogens_added: int = 0
    ph: float
    residues: int
    atoms: int

    def summary(self) -> str:
        """One short line for logs and reports."""
        removed = ", ".join(f"{count:,} {name}" for name, count in self.heterogens_removed.items())
        parts = [
            f"{self.residues:,} residues, {self.atoms:,} atoms",
            f"removed {removed}" if removed else "no heterogens removed",
        ]
        if self.chains_removed:
            parts.append(f"dropped chains {', '.join(self.chains_removed)}")
        if self.nonstandard_replaced:
            parts.append(f"replaced {len(self.nonstandard_replaced)} nonstandard residues")
        if self.missing_residues_added:
            parts.append(f"modelled {len(self.missing_residues_added)} missing residues")
        if self.terminal_residues_not_modelled:
            parts.append(f"{len(self.terminal_residues_not_modelled)} terminal residues not modelled")
        parts.append(
            f"added {self.heavy_atoms_added:,} heavy atoms, {self.hydrogens_added:,} H at pH {self.ph}"
        )
        return "; ".join(parts)


@dataclass
class PreparedStructure:
    """A simulation-ready model and the record of how it was made."""

    topology: openmm.app.Topology
    positions: openmm.unit.Quantity
    record: PreparationRecord


def prepare_structure(
    structure: StructureFile,
    *,
    chains: Sequence[str] | None = None,
    keep_water: bool = False,
    ph: float = 7.0,
) -> PreparedStructure:
    """Clean a structure into a complete, protonated model and record each change.

    Args:
        structure: the file to prepare (see ``resolve_structure``).
        chains: chain ids to keep; ``None`` or empty keeps every chain.
        keep_water: keep crystallographic water (other heterogens are always removed).
        ph: pH for choosing protonation states, strictly between 0 and 14.

    Raises:
        StructureError: bad pH, unreadable file, unknown chain, or nothing left to simulate.
    """
    if not 0.0 < ph < 14.0:
        raise StructureError(f"pH {ph} is outside (0, 14): pass a pH such as 7.0")
    fixer = _load(structure)
    kept, removed = _select_chains(fixer, chains, structure.label)
    fixer.findMissingResidues()
    terminal = _drop_terminal_gaps(fixer)
    replaced = _replace_nonstandard(fixer)
    heterogens = _remove_heterogens(fixer, keep_water)
    _require_polymer(fixer, structure.label)
    gaps = _describe_gaps(fixer, fixer.missingResidues)
    heavy_before, hydrogens_before = _count_atoms(fixer.topology)
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=_SEED)
    heavy_after, _ = _count_atoms(fixer.topology)
    fixer.addMissingHydrogens(pH=ph)
    _, hydrogens_after = _count_atoms(fixer.topology)
    record = PreparationRecord(
        source=structure.label,
        chains_kept=kept,
        chains_removed=removed,
        heterogens_removed=heterogens,
        nonstandard_replaced=replaced,
        missing_residues_added=gaps,
        terminal_residues_not_modelled=terminal,
        heavy_atoms_added=heavy_after - heavy_before,
        hydrogens_added=hydrogens_after - hydrogens_before,
        ph=ph,
        residues=fixer.topology.getNumResidues(),
        atoms=fixer.topology.getNumAtoms(),
    )
    return PreparedStructure(topology=fixer.topology, positions=fixer.positions, record=record)


def _load(structure: StructureFile) -> PDBFixer:
    """Parse the file; PDBFixer and OpenMM raise bare ``Exception`` and friends, so any failure maps here."""
    path = structure.path
    if path.is_file() and path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty")
    try:
        return PDBFixer(filename=str(path))
    except Exception as exc:  # the parsers raise Exception, ValueError, IndexError, UnicodeDecodeError, ...
        lines = str(exc).strip().splitlines()
        raise _unreadable(path, f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__) from exc


def _unreadable(path: Path, detail: str) -> StructureError:
    return StructureError(
        f"could not read structure file {path} ({detail}): check it is a PDB or PDBx/mmCIF file"
    )


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _select_chains(fixer: PDBFixer, chains: Sequence[str] | None, label: str) -> tuple[list[str], list[str]]:
    """Keep only the requested chain ids; return (kept ids, removed ids)."""
    present = _unique([chain.id for chain in fixer.topology.chains()])
    if not chains:
        return present, []
    unknown = [chain for chain in chains if chain not in present]
    if unknown:
        raise StructureError(
            f"chain {', '.join(map(repr, unknown))} is not in {label}: "
            f"it has chains {', '.join(map(repr, present))}; pass one of those"
        )
    removed = [chain for chain in present if chain not in chains]
    fixer.removeChains(chainIds=removed)
    return [chain for chain in present if chain in chains], removed


def _drop_terminal_gaps(fixer: PDBFixer) -> list[str]:
    """Remove gaps at chain ends from the plan (they are not modelled) and describe them."""
    chains = list(fixer.topology.chains())
    terminal = {}
    for key, names in fixer.missingResidues.items():
        chain_index, position = key
        if position == 0 or position == len(list(chains[chain_index].residues())):
            terminal[key] = names
    for key in terminal:
        del fixer.missingResidues[key]
    return _describe_gaps(fixer, terminal)


def _describe_gaps(fixer: PDBFixer, gaps: dict[tuple[int, int], list[str]]) -> list[str]:
    """Name missing residues ``A:GLY45``, numbering from the neighbouring residue that exists."""
    chains = list(fixer.topology.chains())
    described = []
    for (chain_index, position), names in sorted(gaps.items()):
        chain = chains[chain_index]
        residues = list(chain.residues())
        if position == 0:
            first = _number(residues[0].id, -len(names))
        else:
            first = _number(residues[position - 1].id, 1)
        for offset, name in enumerate(names):
            number = "?" if first is None else str(first + offset)
            described.append(f"{chain.id}:{name}{number}")
    return described


def _number(residue_id: str, shift: int) -> int | None:
    try:
        return int(residue_id) + shift
    except ValueError:
        return None


def _replace_nonstandard(fixer: PDBFixer) -> dict[str, str]:
    """Swap modified residues (e.g. MSE) for their standard parents; return ``{"A:MSE12": "MET"}``."""
    fixer.findNonstandardResidues()
    replaced = {_where(residue): name for residue, name in fixer.nonstandardResidues}
    fixer.replaceNonstandardResidues()
    return replaced


def _where(residue: openmm.app.topology.Residue) -> str:
    return f"{residue.chain.id}:{residue.name}{residue.id}"


def _remove_heterogens(fixer: PDBFixer, keep_water: bool) -> dict[str, int]:
    """Remove ligands, ions (and water unless kept); count them by name and keep the gap plan aligned."""
    layout = [[residue for residue in chain.residues()] for chain in fixer.topology.chains()]
    deleted = set(fixer.removeHeterogens(keepWater=keep_water))
    fixer.missingResidues = _realign_gaps(fixer.missingResidues, layout, deleted)
    counts = Counter(residue.name for residue in deleted)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _realign_gaps(
    gaps: dict[tuple[int, int], list[str]], layout: list[list[object]], deleted: set[object]
) -> dict[tuple[int, int], list[str]]:
    """Re-index the gap plan after residues (and emptied chains) were deleted before it was applied."""
    surviving = [index for index, residues in enumerate(layout) if any(r not in deleted for r in residues)]
    new_chain = {old: new for new, old in enumerate(surviving)}
    realigned = {}
    for (chain_index, position), names in gaps.items():
        if chain_index in new_chain:
            shift = sum(1 for residue in layout[chain_index][:position] if residue in deleted)
            realigned[(new_chain[chain_index], position - shift)] = names
    return realigned


def _require_polymer(fixer: PDBFixer, label: str) -> None:
    """Refuse to go on when nothing but water (or nothing at all) is left."""
    if not any(residue.name != "HOH" for residue in fixer.topology.residues()):
        raise StructureError(
            f"{label} has no protein or nucleic-acid residues left after removing heterogens: "
            "choose other chains or another structure"
        )


def _count_atoms(topology: openmm.app.Topology) -> tuple[int, int]:
    """(heavy atoms, hydrogens) in a topology."""
    hydrogens = sum(
        1
        for atom in topology.atoms()
        if atom.element is not None and atom.element.symbol in _HYDROGEN_SYMBOLS
    )
    return topology.getNumAtoms() - hydrogens, hydrogens
