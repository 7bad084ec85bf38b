"""Structure preparation with PDBFixer on real files, checking that the record matches what was changed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from openmm import app

from sciagent.errors import StructureError, UserError
from sciagent.science.preparation import PreparationRecord, prepare_structure
from sciagent.science.structures import StructureFile, resolve_structure

_RAW_TEST_PDB = Path(app.__file__).parent / "data" / "test.pdb"


@pytest.fixture(scope="module")
def villin(tmp_path_factory: pytest.TempPathFactory) -> StructureFile:
    return resolve_structure("villin", cache_dir=tmp_path_factory.mktemp("cache"))


def _file(path: Path) -> StructureFile:
    return StructureFile(path=path, source="file", label=path.name)


def _write(topology: app.Topology, positions: object, path: Path, *, seqres: Sequence[str] = ()) -> Path:
    """Write a PDB keeping residue numbers (so gaps stay gaps), with optional SEQRES records for chain A."""
    with path.open("w") as handle:
        for line_number, start in enumerate(range(0, len(seqres), 13), start=1):
            names = " ".join(seqres[start : start + 13])
            handle.write(f"SEQRES {line_number:>3} A {len(seqres):>4}  {names}\n")
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    return path


def _hetero_names(topology: app.Topology) -> set[str]:
    return {residue.name for residue in topology.residues()} & {"HOH", "Cl"}


def test_bundled_villin_needs_no_changes(villin: StructureFile) -> None:
    prepared = prepare_structure(villin)
    record = prepared.record
    assert (record.residues, record.atoms) == (35, 582)
    assert prepared.topology.getNumAtoms() == len(prepared.positions) == 582
    assert record.source == villin.label
    assert record.chains_kept == ["A"] and record.chains_removed == []
    assert record.heterogens_removed == {} and record.nonstandard_replaced == {}
    assert record.missing_residues_added == [] and record.terminal_residues_not_modelled == []
    assert (record.heavy_atoms_added, record.hydrogens_added) == (0, 0)
    assert (
        record.summary()
        == "35 residues, 582 atoms; no heterogens removed; added 0 heavy atoms, 0 H at pH 7.0"
    )


def test_raw_openmm_file_loses_water_and_ions() -> None:
    prepared = prepare_structure(_file(_RAW_TEST_PDB))
    record = prepared.record
    assert record.heterogens_removed == {"HOH": 2761, "Cl": 2}
    assert not _hetero_names(prepared.topology)
    assert (record.residues, record.atoms) == (35, 582)
    assert record.summary().startswith("35 residues, 582 atoms; removed 2,761 HOH, 2 Cl;")


def test_keep_water_keeps_water_but_not_ions() -> None:
    record = prepare_structure(_file(_RAW_TEST_PDB), keep_water=True).record
    assert record.heterogens_removed == {"Cl": 2}
    assert record.residues == 35 + 2761


def test_deleted_atoms_are_rebuilt_and_counted(villin: StructureFile, tmp_path: Path) -> None:
    pdb = app.PDBFile(str(villin.path))
    residues = list(pdb.topology.residues())
    lysine, leucine = residues[23], residues[19]
    assert (lysine.name, leucine.name) == ("LYS", "LEU")
    side_chain = {"CD", "CE", "NZ", "HD2", "HD3", "HE2", "HE3", "HZ1", "HZ2", "HZ3"}
    doomed = [atom for atom in lysine.atoms() if atom.name in side_chain]
    doomed += [atom for atom in leucine.atoms() if atom.name in {"H", "HA", "HD11"}]
    heavy = sum(atom.element.symbol != "H" for atom in doomed)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete(doomed)
    damaged = _write(modeller.topology, modeller.positions, tmp_path / "damaged.pdb")

    record = prepare_structure(_file(damaged)).record
    assert (record.heavy_atoms_added, record.hydrogens_added) == (heavy, len(doomed) - heavy) == (3, 10)
    assert (record.residues, record.atoms) == (35, 582)


def test_internal_gap_is_modelled_and_terminal_gap_is_recorded(villin: StructureFile, tmp_path: Path) -> None:
    pdb = app.PDBFile(str(villin.path))
    residues = list(pdb.topology.residues())
    sequence = [residue.name for residue in residues]
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([residues[0], residues[14]])  # LEU1 at the N terminus, SER15 inside
    gapped = _write(modeller.topology, modeller.positions, tmp_path / "gapped.pdb", seqres=sequence)

    record = prepare_structure(_file(gapped)).record
    assert record.missing_residues_added == ["A:SER15"]
    assert record.terminal_residues_not_modelled == ["A:LEU1"]
    assert record.residues == 34
    assert record.heavy_atoms_added == 6  # SER: N CA C O CB OG
    assert "modelled 1 missing residues; 1 terminal residues not modelled" in record.summary()


def test_nonstandard_residue_is_replaced(villin: StructureFile, tmp_path: Path) -> None:
    text = villin.path.read_text().replace("MET A  12", "MSE A  12")
    modified = tmp_path / "mse.pdb"
    modified.write_text(text)
    record = prepare_structure(_file(modified)).record
    assert record.nonstandard_replaced == {"A:MSE12": "MET"}
    assert (record.residues, record.atoms) == (35, 582)
    assert record.heavy_atoms_added == 0
    assert (
        record.hydrogens_added == 9
    )  # PDBFixer drops the hydrogens of a replaced residue, then re-adds them


def _with_unknown_residue(villin: StructureFile, tmp_path: Path) -> Path:
    """Villin with PHE10, in the middle of the chain, renamed to a residue nobody knows."""
    path = tmp_path / "xyz.pdb"
    path.write_text(villin.path.read_text().replace("PHE A  10", "XYZ A  10"))
    return path


def test_unknown_residue_inside_a_chain_is_an_error_naming_it(villin: StructureFile, tmp_path: Path) -> None:
    with pytest.raises(StructureError) as caught:
        prepare_structure(_file(_with_unknown_residue(villin, tmp_path)))
    assert str(caught.value) == (
        "xyz.pdb: chain A residue 10 (XYZ) is not a standard residue and sits inside the polymer chain; "
        "removing it would join residues 9 and 11 with a bond: fix the structure, "
        "or pass --remove-unknown-residues to remove it anyway"
    )


def test_unknown_residue_removed_on_request_splits_the_chain(villin: StructureFile, tmp_path: Path) -> None:
    prepared = prepare_structure(_file(_with_unknown_residue(villin, tmp_path)), remove_unknown_residues=True)
    record = prepared.record
    assert record.unknown_residues_removed == ["A:XYZ10"]
    assert record.heterogens_removed == {}  # removed from the chain on request, not a heterogen
    assert (
        "removed unknown residues A:XYZ10 from inside chains, splitting the chain there" in record.summary()
    )
    chains = [[(r.name, r.id) for r in chain.residues()] for chain in prepared.topology.chains()]
    assert [chain.id for chain in prepared.topology.chains()] == ["A", "A"]
    assert (chains[0][-1], chains[1][0]) == (("VAL", "9"), ("GLY", "11"))
    linked = {(b.atom1.residue.id, b.atom2.residue.id) for b in prepared.topology.bonds()}
    assert ("9", "11") not in linked and ("11", "9") not in linked  # no bond across the hole
    # Each piece got its termini: OXT on VAL9, a charged N terminus (H1-H3 minus the one H) on GLY11.
    assert (record.heavy_atoms_added, record.hydrogens_added) == (1, 2)
    assert "OXT" in {atom.name for atom in prepared.topology.atoms() if atom.residue.id == "9"}
    assert (record.residues, record.atoms) == (34, 582 - 20 + 3)


def test_gap_after_a_removed_unknown_residue_is_modelled_in_its_piece(
    villin: StructureFile, tmp_path: Path
) -> None:
    pdb = app.PDBFile(str(_with_unknown_residue(villin, tmp_path)))
    residues = list(pdb.topology.residues())
    sequence = [residue.name for residue in residues]
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([residues[14]])  # SER15, inside the piece after XYZ10
    gapped = _write(modeller.topology, modeller.positions, tmp_path / "gapped.pdb", seqres=sequence)

    prepared = prepare_structure(_file(gapped), remove_unknown_residues=True)
    assert prepared.record.missing_residues_added == ["A:SER15"]
    second = [(r.name, r.id) for r in list(prepared.topology.chains())[1].residues()]
    assert second[:6] == [
        ("GLY", "11"),
        ("MET", "12"),
        ("THR", "13"),
        ("ARG", "14"),
        ("SER", "15"),
        ("ALA", "16"),
    ]


def test_ligand_and_ion_after_the_chain_are_removed_as_heterogens(
    villin: StructureFile, tmp_path: Path
) -> None:
    hetero = (
        "HETATM  583 CL    CL A  36      32.000  22.000  30.000  1.00  0.00          CL  \n"
        "HETATM  584  C1  LIG A  37      34.000  24.000  30.000  1.00  0.00           C  \n"
        "HETATM  585  O1  LIG A  37      35.200  24.000  30.000  1.00  0.00           O  \n"
    )
    path = tmp_path / "ligand.pdb"
    path.write_text(villin.path.read_text().replace("TER ", hetero + "TER ", 1))
    assert [r.chain.id for r in app.PDBFile(str(path)).topology.residues()][-2:] == ["A", "A"]
    record = prepare_structure(_file(path)).record
    assert record.heterogens_removed == {"CL": 1, "LIG": 1}
    assert record.unknown_residues_removed == []
    assert (record.residues, record.atoms) == (35, 582)


def test_mmcif_input(villin: StructureFile, tmp_path: Path) -> None:
    pdb = app.PDBFile(str(villin.path))
    cif = tmp_path / "villin.cif"
    with cif.open("w") as handle:
        app.PDBxFile.writeFile(pdb.topology, pdb.positions, handle)
    record = prepare_structure(_file(cif)).record
    assert (record.residues, record.atoms) == (35, 582)


def test_chain_selection(villin: StructureFile) -> None:
    assert prepare_structure(villin, chains=["A"]).record.chains_kept == ["A"]
    with pytest.raises(StructureError, match=r"chain 'B' is not in .*: it has chains 'A'") as caught:
        prepare_structure(villin, chains=["B"])
    assert "\n" not in str(caught.value)


def test_only_water_left_is_an_error(tmp_path: Path) -> None:
    pdb = app.PDBFile(str(_RAW_TEST_PDB))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([residue for residue in pdb.topology.residues() if residue.name != "HOH"][:-1])
    modeller.delete(list(modeller.topology.residues())[3:])
    water = _write(modeller.topology, modeller.positions, tmp_path / "water.pdb")
    with pytest.raises(StructureError, match="no protein or nucleic-acid residues left"):
        prepare_structure(_file(water), keep_water=True)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.pdb", b"this is not\na structure\n"),
        ("empty.pdb", b""),
        ("binary.cif", bytes(range(256)) * 4),
        ("broken.cif", b"data_x\nloop_\n_atom_site.id\n_atom_site.type_symbol\n1\n"),
    ],
)
def test_unreadable_file_is_a_one_line_user_error(name: str, content: bytes, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StructureError, match=f"could not read structure file .*{name} \\(") as caught:
        prepare_structure(_file(path))
    assert isinstance(caught.value, UserError)
    assert "\n" not in str(caught.value)
    assert str(caught.value).endswith("check it is a PDB or PDBx/mmCIF file")


@pytest.mark.parametrize("ph", [0.0, 14.0, -1.0, 20.0])
def test_ph_outside_range_is_rejected(ph: float, villin: StructureFile) -> None:
    with pytest.raises(StructureError, match="outside"):
        prepare_structure(villin, ph=ph)


def test_record_round_trips_through_json() -> None:
    record = prepare_structure(_file(_RAW_TEST_PDB), ph=6.5).record
    again = PreparationRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.ph == 6.5
