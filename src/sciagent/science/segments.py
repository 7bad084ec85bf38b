"""The segment ledger: one line per ``run_md`` call, the steps it took a trajectory from and to.

A run may be carried by several processes (a batch job stopped at its time limit, the continuation job
that resumes it): the ledger, ``segments.jsonl`` in the work directory, is the evidence that they
computed no step twice. Segments of a well-continued run are contiguous (each starts where the last
ended) and add up to the run's total steps. A line may also say where its wall time went ("timings_s":
setup, equilibration, production seconds); readers of the older lines need only the step keys and wall_s.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

SEGMENTS_FILE = "segments.jsonl"
_JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID")


def append_segment(
    workdir: Path, from_step: int, to_step: int, wall_s: float, timings_s: dict[str, float] | None = None
) -> None:
    """Add one call's line: its steps, the batch job it ran in (None outside one), host, wall time.

    ``timings_s``, when given, splits the call's wall time into the phases it ran.
    """
    job_id = next((os.environ[name] for name in _JOB_ID_VARIABLES if os.environ.get(name)), None)
    line: dict = {
        "from_step": from_step,
        "to_step": to_step,
        "job_id": job_id,
        "host": socket.gethostname(),
        "wall_s": round(wall_s, 3),
    }
    if timings_s is not None:
        line["timings_s"] = {phase: round(seconds, 3) for phase, seconds in timings_s.items()}
    with open(workdir / SEGMENTS_FILE, "a") as handle:  # one short append: whole lines, in call order
        handle.write(json.dumps(line) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_segments(workdir: Path) -> list[dict]:
    """The ledger's lines, oldest first (empty if no call has finished there)."""
    path = Path(workdir) / SEGMENTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
