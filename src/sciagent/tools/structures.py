"""Structure tools: find a structure, say what it holds, clean it for simulation.

A structure is named as a user would (a path, the bundled ``villin``, a PDB id, a protein name);
relative paths are looked for in the session directory first.
"""

from __future__ import annotations

import re
from pathlib import Path

from openmm.app import PDBFile
from pydantic import BaseModel, ConfigDict, Field

from sciagent.science.preparation import PreparationRecord, prepare_structure
from sciagent.science.structure_info import StructureSummary, inspect_structure
from sciagent.science.structures import StructureFile, resolve_structure
from sciagent.tools.registry import ToolContext, define_tool

STRUCTURE_HELP = (
    "a file path, the bundled 'villin', a PDB id such as '1UBQ' or a protein name such as 'ubiquitin'"
)


class StructureArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"structure": "villin"}]})

    structure: str = Field(description=STRUCTURE_HELP)


class FetchedStructure(BaseModel):
    path: str = Field(description="the local file, for the other tools")
    label: str = Field(description="where it came from")
    chains: int
    residues: int
    atoms: int


class PrepareArguments(StructureArguments):
    model_config = ConfigDict(json_schema_extra={"examples": [{"structure": "1UBQ", "ph": 7.0}]})

    chains: list[str] | None = Field(default=None, description="chain ids to keep; all when omitted")
    ph: float = Field(default=7.0, gt=0, lt=14, description="pH for protonation states")
    keep_water: bool = Field(default=False, description="keep crystallographic water")


class PreparedFile(BaseModel):
    path: str = Field(description="the cleaned, protonated structure, relative to the session directory")
    record: PreparationRecord


def located(structure: str, context: ToolContext) -> StructureFile:
    """``structure`` as ``resolve_structure`` finds it; a relative path is looked for in the session first."""
    in_session = context.session_dir / structure
    if not Path(structure).is_absolute() and in_session.is_file():
        return resolve_structure(str(in_session))
    return resolve_structure(structure)


def fetch_structure(arguments: StructureArguments, context: ToolContext) -> FetchedStructure:
    """Find a structure (download a PDB entry, cached) and return its local path with its size."""
    found = located(arguments.structure, context)
    summary = inspect_structure(found)
    return FetchedStructure(
        path=str(found.path),
        label=found.label,
        chains=len(summary.chains),
        residues=summary.total_residues,
        atoms=summary.total_atoms,
    )


def structure_info(arguments: StructureArguments, context: ToolContext) -> StructureSummary:
    """Describe a structure as its file holds it: chains with residues, atoms and sequence each; totals;
    heterogens and waters; missing residues; secondary-structure fractions (DSSP)."""
    return inspect_structure(located(arguments.structure, context))


def prepare(arguments: PrepareArguments, context: ToolContext) -> PreparedFile:
    """Clean a structure for simulation (PDBFixer: chains kept, heterogens removed, missing atoms and
    hydrogens added at the pH) and save it in the session directory; returns what was changed."""
    found = located(arguments.structure, context)
    prepared = prepare_structure(
        found, chains=arguments.chains, keep_water=arguments.keep_water, ph=arguments.ph
    )
    name = re.sub(r"[^A-Za-z0-9]+", "-", Path(found.path).stem).strip("-").lower() or "structure"
    relative = Path("prepared") / f"{name}-ph{arguments.ph:g}.pdb"
    target = context.session_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w") as handle:
        PDBFile.writeFile(prepared.topology, prepared.positions, handle, keepIds=True)
    return PreparedFile(path=str(relative), record=prepared.record)


STRUCTURE_TOOLS = [
    define_tool(fetch_structure),
    define_tool(structure_info),
    define_tool(prepare, name="prepare_structure"),
]
