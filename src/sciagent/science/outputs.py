"""The files of one simulation's work directory, and how to cut them back to a checkpoint.

A run that crashed may have written trajectory frames and CSV rows after its last checkpoint; a
resumed run would write them again. Before resuming, both files are cut back to the checkpoint's step.
"""

from __future__ import annotations

import csv
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from sciagent.atomic import write_atomic


@dataclass(frozen=True)
class RunFiles:
    """Paths inside a simulation work directory."""

    workdir: Path

    @property
    def spec(self) -> Path:
        return self.workdir / "spec.json"

    @property
    def preparation(self) -> Path:
        return self.workdir / "preparation.json"

    @property
    def start_pdb(self) -> Path:
        """The whole simulated system at its starting coordinates: topology and RMSD reference."""
        return self.workdir / "start.pdb"

    @property
    def system_xml(self) -> Path:
        return self.workdir / "system.xml"

    @property
    def trajectory(self) -> Path:
        return self.workdir / "trajectory.dcd"

    @property
    def state_csv(self) -> Path:
        return self.workdir / "state.csv"

    @property
    def checkpoint(self) -> Path:
        return self.workdir / "checkpoint.chk"

    @property
    def saved_state(self) -> Path:
        """The checkpoint's portable twin: an XML ``State``, with nothing platform-specific in it."""
        return self.workdir / "saved_state.xml"

    @property
    def checkpoint_meta(self) -> Path:
        return self.workdir / "checkpoint.json"

    @property
    def final_pdb(self) -> Path:
        return self.workdir / "final.pdb"

    @property
    def result(self) -> Path:
        return self.workdir / "result.json"

    @property
    def analysis(self) -> Path:
        return self.workdir / "analysis.json"

    def existing(self) -> dict[str, str]:
        """Name → path of the output files that exist now."""
        names = (
            "spec",
            "preparation",
            "start_pdb",
            "system_xml",
            "trajectory",
            "state_csv",
            "checkpoint",
            "saved_state",
            "final_pdb",
            "result",
        )
        return {name: str(getattr(self, name)) for name in names if getattr(self, name).exists()}


def truncate_csv(path: Path, last_step: int) -> None:
    """Drop the rows of a state CSV whose step is after ``last_step``."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    step_column = header.index("step")
    kept = [row for row in body if len(row) == len(header) and int(row[step_column]) <= last_step]
    text = io.StringIO(newline="")
    csv.writer(text).writerows([header, *kept])
    write_atomic(path, text.getvalue())


# OpenMM's DCD layout: an 84-byte record of counts (frame count at byte 8, has-box flag at byte 48),
# a title record whose length is at byte 92, then the atom count; each frame is an optional 48-byte
# unit cell record and three coordinate records (x, y, z) of 4 bytes per atom, each framed by 4-byte lengths.
_DCD_FRAME_COUNT_OFFSET = 8
_DCD_BOX_FLAG_OFFSET = 48
_DCD_TITLE_LENGTH_OFFSET = 92


def dcd_frame_count(path: Path) -> int:
    """Frames recorded in a DCD header."""
    with open(path, "rb") as handle:
        handle.seek(_DCD_FRAME_COUNT_OFFSET)
        count = handle.read(4)
    return struct.unpack("<i", count)[0] if len(count) == 4 else 0


def truncate_dcd(path: Path, frames: int) -> None:
    """Keep the first ``frames`` frames of an OpenMM-written DCD file (header count updated too)."""
    if not path.exists() or path.stat().st_size <= _DCD_TITLE_LENGTH_OFFSET:
        return
    with open(path, "r+b") as handle:
        handle.seek(_DCD_BOX_FLAG_OFFSET)
        has_box = struct.unpack("<i", handle.read(4))[0] != 0
        handle.seek(_DCD_TITLE_LENGTH_OFFSET)
        title_bytes = struct.unpack("<i", handle.read(4))[0]
        atoms_offset = _DCD_TITLE_LENGTH_OFFSET + 4 + title_bytes + 4 + 4
        handle.seek(atoms_offset)
        atoms = struct.unpack("<i", handle.read(4))[0]
        header_bytes = atoms_offset + 8
        frame_bytes = (56 if has_box else 0) + 3 * (8 + 4 * atoms)
        present = (os.path.getsize(path) - header_bytes) // frame_bytes
        frames = min(frames, present)
        handle.truncate(header_bytes + frames * frame_bytes)
        handle.seek(_DCD_FRAME_COUNT_OFFSET)
        handle.write(struct.pack("<i", frames))
