"""SMILES to 3D coordinates: RDKit ETKDG conformers cleaned up with MMFF94, lowest energy kept."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sciagent.errors import StructureError


class MoleculeStructure(BaseModel):
    """One 3D structure of a molecule, ready for a calculator (Å, formal charge, unpaired electrons)."""

    smiles: str
    symbols: list[str]
    positions: list[list[float]] = Field(description="Cartesian coordinates in Å, one row per atom")
    charge: int = 0
    unpaired_electrons: int = 0
    conformers_embedded: int = 1
    cleanup: str = Field(description="what cleaned the geometry up: 'MMFF94' or why nothing did")
    mmff_energies_kcal: list[float] = Field(default_factory=list, description="per conformer, if MMFF ran")
    xyz: str
    sdf: str

    @property
    def formula(self) -> str:
        counts: dict[str, int] = {}
        for symbol in self.symbols:
            counts[symbol] = counts.get(symbol, 0) + 1
        order = sorted(counts, key=lambda s: (s not in ("C", "H"), s != "C", s))
        return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def to_xyz(symbols: list[str], positions: list[list[float]], comment: str) -> str:
    """An XYZ file's text."""
    lines = [str(len(symbols)), comment.replace("\n", " ")]
    lines += [
        f"{s:2s} {x:14.8f} {y:14.8f} {z:14.8f}" for s, (x, y, z) in zip(symbols, positions, strict=True)
    ]
    return "\n".join(lines) + "\n"


def smiles_to_structure(smiles: str, conformers: int = 1, seed: int = 42) -> MoleculeStructure:
    """Embed ``conformers`` ETKDGv3 conformers (deterministic for a ``seed``), optimise each with MMFF94
    and keep the lowest in MMFF energy.

    Raises:
        StructureError: the SMILES does not parse, ``conformers`` is out of range, or RDKit could not
            embed any conformer (the message says which).
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem, Descriptors

    if not 1 <= conformers <= 100:
        raise StructureError(f"conformers must be between 1 and 100, not {conformers}")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise StructureError(f"RDKit cannot parse the SMILES {smiles!r}: check it, or give a molecule name")
    molecule = Chem.AddHs(molecule)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    ids = list(AllChem.EmbedMultipleConfs(molecule, numConfs=conformers, params=params))
    if not ids:
        raise StructureError(f"RDKit could not embed a 3D conformer of {smiles!r} (ETKDGv3, seed {seed})")
    energies: list[float] = []
    best = ids[0]
    if AllChem.MMFFHasAllMoleculeParams(molecule):
        results = AllChem.MMFFOptimizeMoleculeConfs(molecule, maxIters=2000)
        energies = [energy for _, energy in results]
        best = ids[min(range(len(ids)), key=lambda i: energies[i])]
        cleanup = "MMFF94"
    else:
        cleanup = "none: MMFF94 has no parameters for this molecule (ETKDG geometry as embedded)"
    conformer = molecule.GetConformer(best)
    symbols = [atom.GetSymbol() for atom in molecule.GetAtoms()]
    positions = [list(map(float, conformer.GetAtomPosition(i))) for i in range(molecule.GetNumAtoms())]
    single = Chem.Mol(molecule)
    single.RemoveAllConformers()
    single.AddConformer(Chem.Conformer(conformer), assignId=True)
    return MoleculeStructure(
        smiles=smiles,
        symbols=symbols,
        positions=positions,
        charge=Chem.GetFormalCharge(molecule),
        unpaired_electrons=Descriptors.NumRadicalElectrons(molecule),
        conformers_embedded=len(ids),
        cleanup=cleanup,
        mmff_energies_kcal=energies,
        xyz=to_xyz(symbols, positions, f"{smiles} ({cleanup}, seed {seed})"),
        sdf=Chem.MolToMolBlock(single) + "$$$$\n",
    )
