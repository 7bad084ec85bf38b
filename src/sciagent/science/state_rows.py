"""The last complete row of a simulation's ``state.csv``, read as progress while the run writes it.

Three readers watch running simulations (the terminal's progress lines, the study's live speed, and
through its own sampler the web UI), so the rules live here, beside the reporter that writes the file:
only a line with its end is a row (the one being written has none yet), the header names the columns,
and the file is opened without following a link and without blocking, and read only if it is a
regular file: a session's directory is written by model code too, and a FIFO there would hang the
reader.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

TAIL_BYTES = 4096  # the header and the last rows: a state.csv row is under 200 bytes


def last_state_row(path: Path, since: float | None = None) -> dict[str, str] | None:
    """The last complete row by the file's own header, or None: no such regular file, no row yet, or
    not written since ``since`` (seconds since the epoch)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (since is not None and info.st_mtime < since):
            return None
        head = os.pread(fd, TAIL_BYTES, 0).decode(errors="replace")
        tail = os.pread(fd, TAIL_BYTES, max(0, info.st_size - TAIL_BYTES)).decode(errors="replace")
    finally:
        os.close(fd)
    header = head.splitlines()[0] if "\n" in head else ""
    rows = tail[: tail.rfind("\n")].splitlines()
    if not rows or rows[-1] == header or "step" not in header.split(","):
        return None
    return dict(zip(header.split(","), rows[-1].split(","), strict=False))
