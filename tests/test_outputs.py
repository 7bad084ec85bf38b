"""Cutting a trajectory and a state CSV back to a checkpoint step."""

from __future__ import annotations

import csv
from pathlib import Path

import mdtraj
import numpy as np
from openmm import app, unit

from sciagent.science.outputs import dcd_frame_count, truncate_csv, truncate_dcd
from sciagent.science.reporters import CSV_COLUMNS


def _tiny_topology(periodic: bool) -> app.Topology:
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("ARG", chain)
    for name in ("N", "CA", "C"):
        topology.addAtom(name, app.Element.getBySymbol(name[0]), residue)
    if periodic:
        topology.setPeriodicBoxVectors(np.eye(3) * 3.0 * unit.nanometer)
    return topology


def _write_dcd(path: Path, topology: app.Topology, frames: int) -> np.ndarray:
    coordinates = np.arange(frames * 9, dtype=float).reshape(frames, 3, 3) / 100.0
    with open(path, "wb") as handle:
        dcd = app.DCDFile(handle, topology, 0.002 * unit.picosecond, 10, 10)
        for frame in coordinates:
            dcd.writeModel(frame * unit.nanometer)
    return coordinates


def _check_truncation(tmp_path: Path, periodic: bool) -> None:
    topology = _tiny_topology(periodic)
    path = tmp_path / "t.dcd"
    coordinates = _write_dcd(path, topology, 7)
    with open(tmp_path / "t.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, coordinates[0] * unit.nanometer, handle)
    truncate_dcd(path, 4)
    assert dcd_frame_count(path) == 4
    loaded = mdtraj.load_dcd(str(path), top=str(tmp_path / "t.pdb"))
    assert loaded.n_frames == 4
    np.testing.assert_allclose(loaded.xyz, coordinates[:4], atol=1e-5)
    # OpenMM can append to the truncated file and the frames line up.
    with open(path, "r+b") as handle:
        app.DCDFile(handle, topology, 0.002 * unit.picosecond, 10, 10, append=True).writeModel(
            coordinates[6] * unit.nanometer
        )
    loaded = mdtraj.load_dcd(str(path), top=str(tmp_path / "t.pdb"))
    np.testing.assert_allclose(loaded.xyz[-1], coordinates[6], atol=1e-5)
    assert loaded.n_frames == 5


def test_truncate_dcd_without_box(tmp_path: Path) -> None:
    _check_truncation(tmp_path, periodic=False)


def test_truncate_dcd_with_box(tmp_path: Path) -> None:
    _check_truncation(tmp_path, periodic=True)


def test_truncate_dcd_drops_a_partly_written_frame(tmp_path: Path) -> None:
    topology = _tiny_topology(False)
    path = tmp_path / "t.dcd"
    _write_dcd(path, topology, 3)
    with open(path, "ab") as handle:  # a crash in the middle of writing frame 4
        handle.write(b"\0" * 10)
    truncate_dcd(path, 10)
    assert dcd_frame_count(path) == 3


def test_truncate_csv_keeps_rows_up_to_the_step_and_drops_torn_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.csv"
    rows = [["production", step, step * 0.002, -1, 1, 0, 300, ""] for step in (50, 100, 150, 200)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([CSV_COLUMNS, *rows])
        handle.write("production,250,0.5")  # torn last line
    truncate_csv(path, 150)
    with open(path, newline="") as handle:
        kept = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in kept] == [50, 100, 150]
