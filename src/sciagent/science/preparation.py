"""Prepare a structure for simulation with PDBFixer, recording every change so reports can say what was done.

The steps follow PDBFixer's own recipe: select chains, find missing residues, replace nonstandard residues,
remove heterogens, add missing heavy atoms, add hydrogens at a pH. Only internal gaps are modelled; residues
missing at a chain's ends are listed in the record but not built, because a floppy invented tail changes the
dynamics more than it helps.

PDBFixer's ``removeHeterogens`` removes every residue it does not know, wherever it is. For a residue inside
a chain that it could not map to a standard one, that is silent damage: the chain's neighbours are later
joined by a peptide bond across the hole. So such a residue is an error naming it, unless the caller asks to
remove it anyway; then the chain is split there, and each piece gets its own termini.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import openmm.app
import openmm.unit
from pdbfixer import PDBFixer
from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues
from pydantic import BaseModel, Field

from sciagent.errors import StructureError
from sciagent.science.structures import StructureFile

# Fixed so that preparing the same file twice gives the same coordinates (0 would mean "random" to OpenMM).
_SEED = 1
_HYDROGEN_SYMBOLS = frozenset({"H", "D"})
# The residues PDBFixer's removeHeterogens keeps as polymer, and those it keeps although they are not ('N' and
# 'UNK' are placeholders the force field then refuses by name; water is never part of a chain).
_POLYMER_RESIDUES = frozenset(proteinResidues) | frozenset(dnaResidues) | frozenset(rnaResidues)
_NOT_IN_CHAIN = _POLYMER_RESIDUES | {"N", "UNK", "HOH"}

Residue = openmm.app.topology.Residue


class PreparationRecord(BaseModel):
    """What preparation changed, as plain JSON-able data for the journal and the report.

    Residues are written ``<chain>:<name><number>``, e.g. ``A:MSE12``; ``nonstandard_replaced`` maps such a
    residue to its standard replacement (``{"A:MSE12": "MET"}``). ``chains_kept``/``chains_removed`` describe
    the chain selection only; heterogen-only chains dropped later show up in ``heterogens_removed``.
    ``unknown_residues_removed`` lists residues removed from inside a chain on request (``A:XYZ10``): the
    chain was split there, so it is not in ``heterogens_removed``.
    Atom counts are net changes: ``hydrogens_added`` is final hydrogens minus those present before atoms
    were added.
    """

    source: str
    chains_kept: list[str]
    chains_removed: list[str] = Field(default_factory=list)
    heterogens_removed: dict[str, int] = Field(default_factory=dict)
    nonstandard_replaced: dict[str, str] = Field(default_factory=dict)
    unknown_residues_removed: list[str] = Field(default_factory=list)
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
        if self.unknown_residues_removed:
            parts.append(
                f"removed unknown residues {', '.join(self.unknown_residues_removed)} from inside chains, "
                "splitting the chain there"
            )
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
    remove_unknown_residues: bool = False,
) -> PreparedStructure:
    """Clean a structure into a complete, protonated model and record each change.

    Args:
        structure: the file to prepare (see ``resolve_structure``).
        chains: chain ids to keep; ``None`` or empty keeps every chain.
        keep_water: keep crystallographic water (other heterogens are always removed).
        ph: pH for choosing protonation states, strictly between 0 and 14.
        remove_unknown_residues: remove residues PDBFixer cannot map to a standard one from inside a chain,
            splitting the chain there; without it such a residue is an error.

    Raises:
        StructureError: bad pH, unreadable file, unknown chain, an unknown residue inside a chain (unless
            ``remove_unknown_residues``), or nothing left to simulate.
    """
    if not 0.0 < ph < 14.0:
        raise StructureError(f"pH {ph} is outside (0, 14): pass a pH such as 7.0")
    fixer = _load(structure)
    kept, removed = _select_chains(fixer, chains, structure.label)
    fixer.findMissingResidues()
    terminal = _drop_terminal_gaps(fixer)
    replaced = _replace_nonstandard(fixer)
    in_chain = _unknown_in_chains(fixer)
    if in_chain and not remove_unknown_residues:
        raise _unknown_in_chain_error(in_chain, structure.label)
    unknown = {residue: _where(residue) for _, residue, _ in in_chain}
    heterogens = _remove_heterogens(fixer, keep_water, set(unknown))
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
        unknown_residues_removed=list(unknown.values()),
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


def _unknown_in_chains(fixer: PDBFixer) -> list[tuple[Residue, Residue, Residue]]:
    """(polymer residue before, residue, polymer residue after) for each residue removeHeterogens would
    take out of the middle of a chain.

    Run after nonstandard residues were replaced, so what is found here is what PDBFixer cannot map. "Inside"
    means polymer residues of the same chain on both sides: ligands and ions come after the polymer.
    """
    found = []
    for chain in fixer.topology.chains():
        residues = list(chain.residues())
        polymer = [index for index, residue in enumerate(residues) if residue.name in _POLYMER_RESIDUES]
        for index, residue in enumerate(residues):
            if residue.name in _NOT_IN_CHAIN or not polymer or not polymer[0] < index < polymer[-1]:
                continue
            before = max(i for i in polymer if i < index)
            after = min(i for i in polymer if i > index)
            found.append((residues[before], residue, residues[after]))
    return found


def _unknown_in_chain_error(found: list[tuple[Residue, Residue, Residue]], label: str) -> StructureError:
    before, residue, after = found[0]
    more = f" (and {len(found) - 1} more such residues)" if len(found) > 1 else ""
    return StructureError(
        f"{label}: chain {residue.chain.id} residue {residue.id} ({residue.name}) is not a standard residue "
        f"and sits inside the polymer chain{more}; removing it would join residues {before.id} and "
        f"{after.id} with a bond: fix the structure, or pass --remove-unknown-residues to remove it anyway"
    )


def _remove_heterogens(fixer: PDBFixer, keep_water: bool, in_chain: set[Residue]) -> dict[str, int]:
    """Remove ligands, ions (and water unless kept) and the ``in_chain`` residues; count heterogens by name.

    removeHeterogens takes the ``in_chain`` residues with the rest; the chain is then split where each was,
    and the gap plan is moved to the residues' new places.
    """
    layout = [list(chain.residues()) for chain in fixer.topology.chains()]
    deleted = fixer.removeHeterogens(keepWater=keep_water)
    places = _places_after(layout, set(deleted), in_chain)
    fixer.missingResidues = _realign_gaps(fixer.missingResidues, layout, places)
    if in_chain:
        _split_chains(fixer, list(places.values()))  # in the order of the residues that are left
    counts = Counter(residue.name for residue in deleted if residue not in in_chain)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _places_after(
    layout: list[list[Residue]], deleted: set[Residue], in_chain: set[Residue]
) -> dict[Residue, tuple[int, int]]:
    """(chain index, position) of each surviving residue once emptied chains are gone and chains are split
    after each removed ``in_chain`` residue."""
    places = {}
    chain_index = -1
    for residues in layout:
        position: int | None = None
        for residue in residues:
            if residue in in_chain:
                position = None  # the next survivor starts a new chain
            elif residue not in deleted:
                if position is None:
                    chain_index, position = chain_index + 1, 0
                places[residue] = (chain_index, position)
                position += 1
    return places


def _realign_gaps(
    gaps: dict[tuple[int, int], list[str]],
    layout: list[list[Residue]],
    places: dict[Residue, tuple[int, int]],
) -> dict[tuple[int, int], list[str]]:
    """Move the gap plan (insert before residue ``position`` of a chain) to the residues' new places."""
    realigned = {}
    for (chain_index, position), names in gaps.items():
        residues = layout[chain_index]
        after = [places[residue] for residue in residues[position:] if residue in places]
        before = [places[residue] for residue in residues[:position] if residue in places]
        if after:
            realigned[after[0]] = names
        elif before:  # at the end of what is left of the chain
            realigned[(before[-1][0], before[-1][1] + 1)] = names
    return realigned


def _split_chains(fixer: PDBFixer, places: list[tuple[int, int]]) -> None:
    """Rebuild the topology with residue ``i`` in chain ``places[i][0]``, keeping atom order and chain ids.

    Separate chains are what keeps addMissingAtoms from drawing a peptide bond across a removed residue,
    and what makes it and addMissingHydrogens give each piece its own termini.
    """
    old = fixer.topology
    topology = openmm.app.Topology()
    topology.setPeriodicBoxVectors(old.getPeriodicBoxVectors())
    chains: dict[int, openmm.app.topology.Chain] = {}
    atoms = {}
    for residue, (chain_index, _) in zip(old.residues(), places, strict=True):
        if chain_index not in chains:
            chains[chain_index] = topology.addChain(residue.chain.id)
        copy = topology.addResidue(residue.name, chains[chain_index], residue.id, residue.insertionCode)
        for atom in residue.atoms():
            atoms[atom] = topology.addAtom(atom.name, atom.element, copy, atom.id)
    for bond in old.bonds():
        topology.addBond(atoms[bond.atom1], atoms[bond.atom2], bond.type, bond.order)
    fixer.topology = topology


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
