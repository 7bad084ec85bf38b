"""The workspace's speed book: how fast a system has run on this machine, so a study need not probe.

A study's first minutes are worth most when they simulate. Every finished run (and every probe)
already measured its speed; the book keeps the last few per system and machine in
``<workspace>/speeds.json`` so the next study of the same system here starts from a measured speed
instead of a fresh probe. The key is what sets the cost of one step: the system and the physics that
change the force evaluation (solvent, constraints, implicit model, force field; not the timestep or
hydrogen mass repartitioning, which change how far a step goes, not what it costs) and the machine
(host, CPU model, usable cores, platform and threads per worker, workers at once).

The book lives in the workspace, which a project can ship with a planted file: it is untrusted input.
It is read as a regular file only (no links, no FIFOs, bounded size), every value is validated (finite,
positive, bounded, named by a plain run id), and a file that fails any check is ignored with one
warning, never used and never a crash; the next record replaces it. Writes are atomic.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import openmm
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sciagent.atomic import write_atomic
from sciagent.science.md import MDResult
from sciagent.science.spec import MDSpec

SPEEDS_FILE = "speeds.json"
RECENT = 5  # measurements kept per system and machine; the lower median of them is used
MAX_BOOK_BYTES = 1 << 20
MAX_STEPS_PER_S = 1e6  # far above any molecular system on any machine: a larger value is not a measurement
MAX_SETUP_S = 3600.0
# What sets the cost of one step (with the machine): the system and the force evaluation's physics.
_STEP_COST_FIELDS = frozenset(
    {
        "structure",
        "chains",
        "keep_water",
        "remove_unknown_residues",
        "ph",
        "forcefield",
        "solvent",
        "implicit_model",
        "padding_nm",
        "ionic_strength_molar",
        "constraints",
        "platform",
        "precision",
        "cpu_threads",
    }
)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._/ -]{0,119}$"  # a run id or a task key: shown in the journal as is


class Measurement(BaseModel):
    """One measured speed: steps per second per worker, with the seconds a run spent before stepping."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    steps_per_s: float = Field(gt=0, le=MAX_STEPS_PER_S)
    setup_s: float | None = Field(default=None, ge=0, le=MAX_SETUP_S)
    source: Literal["probe", "run"]
    run_id: str = Field(pattern=_NAME)
    task: str = Field(pattern=_NAME)
    when: datetime

    def describe(self) -> str:
        """Where the speed came from, for the journal: ``T300-r1/run1/attempt1 of run 2026…-ab12 at …``."""
        return f"{self.task} of run {self.run_id} at {self.when.isoformat(timespec='seconds')}"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: dict[str, object]
    machine: dict[str, object]
    measurements: list[Measurement] = Field(max_length=RECENT)


class _Book(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    entries: dict[str, _Entry] = {}


def step_cost_system(spec: MDSpec) -> dict[str, object]:
    """The part of ``spec`` that sets what one step costs."""
    return spec.model_dump(mode="json", include=set(_STEP_COST_FIELDS))


def this_machine(workers: int) -> dict[str, object]:
    """The machine the study runs from, with how many of its runs go at once."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "usable_cores": cores,
        "openmm": openmm.__version__,
        "workers": workers,
    }


def measured(result: MDResult, run_id: str, task: str) -> Measurement | None:
    """What a finished run measured: its production steps per second (``ns_per_day`` counts only the
    steps this call ran, over the seconds they took), or None when it measured nothing."""
    if not result.ok or not result.ns_per_day:
        return None
    steps_per_s = result.ns_per_day / (result.spec.timestep_fs * 1e-6 * 86400.0)
    return measurement(steps_per_s, result.timings_s.get("setup"), "run", run_id, task)


def measurement(
    steps_per_s: float, setup_s: float | None, source: Literal["probe", "run"], run_id: str, task: str
) -> Measurement | None:
    """A measurement made now, or None when a value is out of bounds (not a measurement to keep)."""
    try:
        return Measurement(
            steps_per_s=steps_per_s,
            setup_s=setup_s,
            source=source,
            run_id=run_id,
            task=task,
            when=datetime.now(timezone.utc),
        )
    except ValidationError:
        return None


class SpeedBook:
    """The speeds measured in one workspace; ``warn`` is told once if the file had to be ignored."""

    def __init__(self, path: Path, warn: Callable[[str], None]) -> None:
        self.path = path
        self._warn = warn
        self._book: _Book | None = None

    def lookup(self, system: dict[str, object], machine: dict[str, object]) -> Measurement | None:
        """The lower median of the recent measurements of ``system`` on ``machine``: one slow or fast
        moment does not set the speed, and with two it is the slower."""
        entry = self._load().entries.get(_key(system, machine))
        if entry is None or not entry.measurements:
            return None
        ranked = sorted(entry.measurements, key=lambda m: m.steps_per_s)
        return ranked[(len(ranked) - 1) // 2]

    def record(self, system: dict[str, object], machine: dict[str, object], measurement: Measurement) -> bool:
        """Add ``measurement`` (once: the same run's task is not counted twice); whether it was added."""
        book = self._load()
        key = _key(system, machine)
        entry = book.entries.get(key) or _Entry(system=system, machine=machine, measurements=[])
        if any((m.run_id, m.task) == (measurement.run_id, measurement.task) for m in entry.measurements):
            return False
        entry.measurements = [*entry.measurements, measurement][-RECENT:]
        book.entries[key] = entry
        try:
            write_atomic(self.path, book.model_dump_json(indent=2))
        except OSError as exc:  # the study goes on; the next one probes or starts provisionally
            self._warn(f"speed book {self.path} not written ({exc.strerror or exc})")
            return False
        return True

    def _load(self) -> _Book:
        if self._book is None:
            try:
                text = _read_regular(self.path)
                self._book = _Book() if text is None else _Book.model_validate_json(text)
            except (OSError, ValueError) as exc:  # ValidationError is a ValueError
                self._warn(f"speed book {self.path} ignored ({_why(exc)}); studies will record anew")
                self._book = _Book()
        return self._book


def _key(system: dict[str, object], machine: dict[str, object]) -> str:
    canonical = json.dumps({"system": system, "machine": machine}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _read_regular(path: Path) -> str | None:
    """The file's text, or None if there is none; a link, a non-regular or an oversized file is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_BOOK_BYTES:
            raise ValueError(f"larger than {MAX_BOOK_BYTES} bytes")
        return os.read(fd, MAX_BOOK_BYTES + 1).decode("utf-8")
    finally:
        os.close(fd)


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else error["msg"]
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "a symbolic link" if getattr(exc, "errno", None) == errno.ELOOP else text  # from O_NOFOLLOW


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
