"""The tool catalogue: one registry, validated calls, structure facts from the file, confined file tools.

Structure facts are checked against an independent reading of the same file with OpenMM's PDB
reader (never against numbers typed from memory); secondary structure against mdtraj's DSSP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from openmm import app
from pydantic import BaseModel

from sciagent.science.structures import resolve_structure
from sciagent.tools.catalogue import builtin_tools
from sciagent.tools.registry import (
    ToolArgumentsError,
    ToolContext,
    ToolFailed,
    ToolRegistry,
    define_tool,
)

BUILTIN = {
    "fetch_structure", "structure_info", "prepare_structure", "list_files", "read_file", "write_file",
    "ask_user",
}  # fmt: skip
ONE_LETTER = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
    "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
    "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}  # fmt: skip


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    session = tmp_path / "session"
    session.mkdir()
    return ToolContext(session_dir=session)


@pytest.fixture(scope="module")
def villin() -> Path:
    return resolve_structure("villin").path


@pytest.fixture(scope="module")
def gapped(villin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Villin with residues 10-12 cut out, two waters and one ligand added: what real PDB files look like."""
    pdb = app.PDBFile(str(villin))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if 10 <= int(r.id) <= 12])
    path = tmp_path_factory.mktemp("gapped") / "gapped.pdb"
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle, keepIds=True)
    lines = [line for line in path.read_text().splitlines() if not line.startswith(("END", "CONECT"))]
    hetatm = (  # PDB fixed columns: element in 77-78
        "HETATM{serial:5d}  {atom:<3} {res} B{num:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
        + "  1.00  0.00" + " " * 11 + "{el}"
    )
    for number, (res, atom, el) in enumerate([("HOH", "O", "O"), ("HOH", "O", "O"), ("LIG", "C1", "C")]):
        lines.append(
            hetatm.format(serial=9000 + number, atom=atom, res=res, num=100 + number, x=30.0 + 3 * number,
                          y=30.0, z=30.0, el=el)
        )  # fmt: skip
    path.write_text("\n".join([*lines, "END", ""]))
    return path


def test_the_catalogue_lists_every_builtin_with_its_schemas() -> None:
    described = {entry["name"]: entry for entry in builtin_tools().describe()}
    assert set(described) >= BUILTIN
    for entry in described.values():
        assert entry["description"] and entry["cost"] in ("instant", "minutes", "hours")
        assert entry["arguments"]["type"] == "object" and "properties" in entry["arguments"]
        assert "properties" in entry["result"]
    assert described["structure_info"]["arguments"]["required"] == ["structure"]


def test_sciagent_tools_json_prints_the_catalogue() -> None:
    completed = subprocess.run([sys.executable, "-m", "sciagent", "tools", "--json"], capture_output=True,
                               text=True, timeout=120)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    names = [entry["name"] for entry in json.loads(completed.stdout)]
    assert names == [t.name for t in builtin_tools()] + ["run_stability_study"]  # workflows after built-ins
    table = subprocess.run([sys.executable, "-m", "sciagent", "tools"], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert table.returncode == 0 and "structure_info" in table.stdout


def test_invalid_calls_name_the_tool_and_the_argument(context: ToolContext) -> None:
    tools = builtin_tools()
    with pytest.raises(ToolArgumentsError, match=r"structure_info: argument 'structure': Field required"):
        tools.get("structure_info").call({}, context)
    with pytest.raises(ToolArgumentsError, match=r"argument 'colour' is not one of its arguments"):
        tools.get("structure_info").call({"structure": "villin", "colour": "red"}, context)
    with pytest.raises(ToolArgumentsError, match=r"argument 'ph': Input should be less than 14"):
        tools.get("prepare_structure").call({"structure": "villin", "ph": 15}, context)
    with pytest.raises(ToolArgumentsError, match=r"the arguments are not JSON"):
        tools.get("structure_info").call('{"structure": ', context)
    with pytest.raises(ToolArgumentsError, match=r"no tool named 'fold_protein': the tools are fetch_"):
        tools.get("fold_protein")
    with pytest.raises(ToolArgumentsError, match=r"tool structure_info: unknown structure 'nonesuch'"):
        tools.get("structure_info").call({"structure": "nonesuch"}, context)  # the model can fix it


class _Nothing(BaseModel):
    pass


def _fails(arguments: _Nothing, context: ToolContext) -> _Nothing:
    """Always fails, as a simulation that blows up does."""
    from sciagent.errors import RunFailure

    raise RunFailure("instability", "the simulation blew up at step 10")


def test_a_tool_that_fails_keeps_its_failure_class_and_names_are_unique(context: ToolContext) -> None:
    tool = define_tool(_fails, effects={"computes"}, name="always_fails")
    with pytest.raises(ToolFailed, match="tool always_fails: the simulation blew up") as failed:
        tool.call({}, context)
    assert failed.value.failure_class == "instability"
    registry = ToolRegistry.of([tool])
    with pytest.raises(ValueError, match="already registered"):
        registry.add(tool)
    with pytest.raises(ValueError, match="lower_snake_case"):
        define_tool(_fails, effects={"computes"}, name="Always Fails")
    with pytest.raises(ValueError, match="effects must be some of"):  # every tool says what it does
        define_tool(_fails, effects={"explodes"}, name="always_fails")
    subset = builtin_tools().subset(["read_file", "list_files"])
    assert [t.name for t in subset] == ["read_file", "list_files"]


def test_structure_info_counts_what_the_file_holds(context: ToolContext, villin: Path) -> None:
    info = builtin_tools().get("structure_info").call({"structure": "villin"}, context)
    pdb = app.PDBFile(str(villin))  # an independent reading of the same file
    chains = list(pdb.topology.chains())
    assert [chain.chain_id for chain in info.chains] == [chain.id for chain in chains]
    assert info.total_atoms == pdb.topology.getNumAtoms()
    assert info.total_residues == pdb.topology.getNumResidues()
    assert info.chains[0].atoms == len(list(chains[0].atoms()))
    assert info.chains[0].sequence == "".join(ONE_LETTER[r.name] for r in chains[0].residues())
    assert (info.heterogens, info.waters, info.missing_residues) == ({}, 0, [])
    dssp = mdtraj.compute_dssp(mdtraj.load(str(villin)), simplified=True)[0]
    assert info.secondary_structure["helix"] == pytest.approx(float(np.mean(dssp == "H")), abs=1e-4)
    assert sum(info.secondary_structure.values()) == pytest.approx(1.0, abs=1e-3)


def _in_session(context: ToolContext, path: Path) -> str:
    """A copy of ``path`` in the session, by its relative name: the structure tools read a model's paths
    only there (and in the cache and the user's allowed paths; tests/test_attacks_config.py)."""
    shutil.copy(path, context.session_dir / path.name)
    return path.name


def test_structure_info_reports_heterogens_waters_and_gaps(context: ToolContext, gapped: Path) -> None:
    info = builtin_tools().get("structure_info").call({"structure": _in_session(context, gapped)}, context)
    assert info.heterogens == {"LIG": 1} and info.waters == 2
    assert "A:10-12" in info.missing_residues
    pdb = app.PDBFile(str(gapped))
    assert info.total_atoms == pdb.topology.getNumAtoms()
    fetched = builtin_tools().get("fetch_structure").call({"structure": "gapped.pdb"}, context)
    assert (fetched.atoms, fetched.residues) == (info.total_atoms, info.total_residues)


def test_prepare_structure_writes_the_cleaned_file_in_the_session(context: ToolContext, gapped: Path) -> None:
    given = {"structure": _in_session(context, gapped), "ph": 7.0}
    prepared = builtin_tools().get("prepare_structure").call(given, context)
    path = context.session_dir / prepared.path
    assert path.is_file() and not Path(prepared.path).is_absolute()
    assert prepared.record.heterogens_removed == {"HOH": 2, "LIG": 1}
    written = app.PDBFile(str(path)).topology
    assert written.getNumAtoms() == prepared.record.atoms
    # the session's own file is found by its relative name
    again = builtin_tools().get("structure_info").call({"structure": prepared.path}, context)
    assert again.total_atoms == prepared.record.atoms and again.waters == 0


def test_file_tools_read_and_write_inside_the_session(context: ToolContext) -> None:
    tools = builtin_tools()
    written = tools.get("write_file").call({"path": "notes/a.txt", "text": "hello"}, context)
    assert written.path == "notes/a.txt" and written.bytes == 5
    assert tools.get("read_file").call({"path": "notes/a.txt"}, context).text == "hello"
    (context.session_dir / "big.txt").write_text("x" * 100_000)
    big = tools.get("read_file").call({"path": "big.txt"}, context)
    assert big.truncated and len(big.text) == 64 * 1024 and big.bytes == 100_000
    listed = tools.get("list_files").call({}, context)
    assert [entry.path for entry in listed.files] == ["big.txt", "notes/a.txt"]


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": "{outside}/secret.txt"}),
        ("read_file", {"path": "link/secret.txt"}),  # a symlink inside pointing out
        ("read_file", {"path": "linked.txt"}),  # a symlinked file pointing out
        ("write_file", {"path": "../escaped.txt", "text": "x"}),
        ("write_file", {"path": "{outside}/escaped.txt", "text": "x"}),
        ("write_file", {"path": "link/escaped.txt", "text": "x"}),
        ("list_files", {"directory": "link"}),
    ],
)
def test_file_tools_never_leave_the_session(context: ToolContext, tool: str, arguments: dict) -> None:
    outside = context.session_dir.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("top secret")
    (context.session_dir.parent / "secret.txt").write_text("top secret")
    os.symlink(outside, context.session_dir / "link")
    os.symlink(outside / "secret.txt", context.session_dir / "linked.txt")
    arguments = {key: value.replace("{outside}", str(outside)) for key, value in arguments.items()}
    with pytest.raises(ToolArgumentsError, match="is outside the session directory"):
        builtin_tools().get(tool).call(arguments, context)
    assert sorted(path.name for path in outside.iterdir()) == ["secret.txt"]  # nothing written there
    assert not (context.session_dir.parent / "escaped.txt").exists()
    listed = builtin_tools().get("list_files").call({}, context)
    assert "linked.txt" not in [entry.path for entry in listed.files]  # not listed either


def test_ask_user_passes_the_question_to_the_person(context: ToolContext) -> None:
    asked: list[str] = []
    def person(question: str) -> str:
        asked.append(question)
        return "chain A"

    interactive = ToolContext(session_dir=context.session_dir, ask_user=person)
    reply = builtin_tools().get("ask_user").call({"question": "Which chain?"}, interactive)
    assert (reply.reply, asked) == ("chain A", ["Which chain?"])
    with pytest.raises(ToolFailed, match="no one can answer") as failed:
        builtin_tools().get("ask_user").call({"question": "Which chain?"}, context)
    assert failed.value.failure_class == "no_user"
