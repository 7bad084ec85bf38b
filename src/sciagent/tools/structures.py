"""Structure tools: find a structure, say what it holds, clean it for simulation.

A structure is named as a user would (a path, the bundled ``villin``, a PDB id, a protein name);
relative paths are looked for in the session directory first. A path a model names is read only
inside the session directory, the structure cache or a directory the user lists in ``[tools]
allowed_paths`` of their own config: a model's arguments may come from a prompt injection, and a
structure tool would hand any host file it reads (``/etc/passwd``, ``~/.ssh``) back to the model.
(``sciagent simulate FILE`` calls the science layer directly: a person's path is not confined.)
"""

from __future__ import annotations

import re
from pathlib import Path

from openmm.app import PDBFile
from pydantic import BaseModel, ConfigDict, Field

from sciagent.science.preparation import PreparationRecord, prepare_structure
from sciagent.science.structure_info import StructureSummary, inspect_structure
from sciagent.science.structures import STRUCTURE_SUFFIXES, StructureFile, pdb_cache_dir, resolve_structure
from sciagent.tools.registry import ToolArgumentsError, ToolContext, define_tool

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
    """``structure`` as ``resolve_structure`` finds it, a path only where the tools may read.

    Raises:
        ToolArgumentsError: a path outside the session, the cache and the user's ``allowed_paths``.
    """
    text = structure.strip()
    given = Path(text).expanduser()
    names_a_path = "/" in text or text.startswith("~") or given.suffix.lower() in STRUCTURE_SUFFIXES
    if not (names_a_path or given.is_file() or (context.session_dir / text).is_file()):
        return resolve_structure(text)  # a bundled name, a PDB id or a protein name
    return resolve_structure(str(_readable_path(text, context)))


def _readable_path(text: str, context: ToolContext) -> Path:
    """The file ``text`` names (relative: in the session first), resolved (links followed) inside a
    directory the tools may read."""
    given = Path(text).expanduser()
    candidates = [given] if given.is_absolute() else [context.session_dir / given, given]
    roots = [context.session_dir.resolve(), pdb_cache_dir().resolve()]
    if context.settings is not None:
        roots += [Path(path).expanduser().resolve() for path in context.settings.tools.allowed_paths]
    resolved = [candidate.resolve() for candidate in candidates]
    inside = [path for path in resolved if any(path.is_relative_to(root) for root in roots)]
    for path in inside:
        if path.is_file():
            return path
        if path.exists():  # a FIFO would block whoever opens it; a device, a directory: not a structure
            raise ToolArgumentsError(f"structure path {text!r} is not a regular file: it is not read")
    if inside:
        return inside[0]  # a missing file: resolve_structure says so
    raise ToolArgumentsError(
        f"structure path {text!r} ({resolved[0]}) is outside the session directory and the structure "
        "cache: copy the file into the session, or add its directory to [tools] allowed_paths in your "
        "own ~/.config/sciagent/config.toml"
    )


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
    define_tool(fetch_structure, effects={"reads", "writes", "reaches_outside"}),
    define_tool(structure_info, effects={"reads"}),
    define_tool(prepare, effects={"computes", "writes"}, name="prepare_structure"),
]
