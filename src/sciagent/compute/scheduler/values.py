"""The shapes a value may have before it is written into a job script or handed to a scheduler.

A model chooses some of these values (a structure, a queue, a walltime), so each is a pattern that
cannot hold a newline, a quote, ``;``, ``$`` or a space: whatever the template does with it, it
cannot add a line or a command. One place, so the tool's arguments, the job request and the
template agree.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

from sciagent.errors import UserError

SITE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
QUEUE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a Slurm partition or a PBS queue
ACCOUNT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
WALLTIME = r"^\d{1,3}:[0-5]\d:[0-5]\d$"
FILESYSTEMS = r"^[A-Za-z0-9_]+(:[A-Za-z0-9_]+)*$"  # PBS ``-l filesystems=home:flare``
SELECT_OPTIONS = r"^[A-Za-z0-9_]+=[A-Za-z0-9_.]+(:[A-Za-z0-9_]+=[A-Za-z0-9_.]+)*$"  # PBS ``ngpus=4``
JOB_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"  # PBS wants a letter first
JOB_ID = r"^[0-9]+(_[0-9]+)?(\.[A-Za-z0-9_-]+)*$"  # Slurm ``123`` or ``123_4``, PBS ``1000.server``
DIRECTIVE_PATH = r"^/[A-Za-z0-9_.+/-]+$"  # an absolute path in a ``#PBS -o`` / ``#SBATCH --output`` line
# A file in the session directory: relative, each part starting with a letter, digit or '_', single dots.
_PART = r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"
SESSION_FILE = rf"^{_PART}(/{_PART}){{0,7}}$"
STRUCTURE = SESSION_FILE  # a bundled name, PDB id or protein name fits it too

SiteName = Annotated[str, StringConstraints(pattern=SITE_NAME)]
QueueName = Annotated[str, StringConstraints(pattern=QUEUE_NAME)]
AccountName = Annotated[str, StringConstraints(pattern=ACCOUNT_NAME)]
Walltime = Annotated[str, StringConstraints(pattern=WALLTIME)]
Filesystems = Annotated[str, StringConstraints(pattern=FILESYSTEMS)]
StructureRef = Annotated[str, StringConstraints(pattern=STRUCTURE, max_length=300)]


def walltime_seconds(walltime: str) -> int:
    """``HH:MM:SS`` in seconds; ``ValueError`` for anything else."""
    if not re.fullmatch(WALLTIME, walltime):
        raise ValueError(f"walltime must be HH:MM:SS, got {walltime!r}")
    hours, minutes, seconds = (int(part) for part in walltime.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def one_line(value: object) -> str:
    """``value`` as text for a comment line of a script; ``UserError`` if it could end the comment.

    Every value is validated before it reaches the template; this is the template's own guard, so
    a value added to a comment later cannot bring a line break with it.
    """
    text = str(value)
    if not text.isprintable():
        raise UserError(f"{text!r} cannot go into a job script's comment: it holds a line break or control")
    return text
