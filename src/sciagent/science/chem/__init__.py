"""Chemistry kernels: a molecule's name to SMILES, SMILES to 3D structures, structures to energies.

Everything here is picklable and imports only the science stack (RDKit, ASE, tblite; torch and
mace-torch lazily, for MACE), so a function can be shipped to any site's worker.
"""

from sciagent.science.chem.calculate import ChemResult, ChemTask, calculate
from sciagent.science.chem.names import BUNDLED_MOLECULES, ResolvedMolecule, molecule_to_smiles, resolve
from sciagent.science.chem.structures import MoleculeStructure, smiles_to_structure

__all__ = [
    "BUNDLED_MOLECULES",
    "ChemResult",
    "ChemTask",
    "MoleculeStructure",
    "ResolvedMolecule",
    "calculate",
    "molecule_to_smiles",
    "resolve",
    "smiles_to_structure",
]
