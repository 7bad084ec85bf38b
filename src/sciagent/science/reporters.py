"""Small OpenMM reporters, one job each: NaN guard, CSV, DCD, checkpoints, progress, clocks, stop file.

They follow OpenMM's reporter protocol (``describeNextReport`` / ``report``), so ``Simulation`` fetches
one ``State`` per report step and hands it to each in order. The NaN guard comes first, so nothing
non-finite ever reaches a file written by the reporters after it.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import openmm
from openmm import app, unit

CSV_COLUMNS = (
    "phase",
    "step",
    "time_ps",
    "potential_kj_mol",
    "kinetic_kj_mol",
    "total_kj_mol",
    "temperature_k",
    "speed_ns_day",
)
_KJ = unit.kilojoule_per_mole


class InstabilityDetected(Exception):
    """A state with NaN or infinite values: the integration blew up at ``step``."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"{what} at step {step}")
        self.step = step
        self.what = what


class WallTimeReached(Exception):
    """The run's wall-time budget is spent; the runner checkpoints and stops."""


class DeadlineReached(Exception):
    """Production reached its deadline; the runner checkpoints and completes the run."""


class StopRequested(Exception):
    """Someone asked the run to stop (a stop file appeared); the runner checkpoints and stops."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IntervalReporter:
    """Reports every ``interval`` steps counted from ``start_step``; subclasses say what they need."""

    include: tuple[str, ...] = ()

    def __init__(self, interval: int, start_step: int = 0) -> None:
        if interval <= 0:
            raise ValueError(f"report interval must be positive, got {interval}")
        self.interval = interval
        self.start_step = start_step

    def describeNextReport(self, simulation: app.Simulation) -> dict:
        steps = self.interval - (simulation.currentStep - self.start_step) % self.interval
        return {"steps": steps, "periodic": False, "include": list(self.include)}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        raise NotImplementedError


class NanGuard(IntervalReporter):
    """Stops the run at the first non-finite energy or coordinate."""

    include = ("positions", "energy")

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        what = first_non_finite(state)
        if what:
            raise InstabilityDetected(simulation.currentStep, what)


def first_non_finite(state: openmm.State) -> str | None:
    """Describe the first NaN/inf in ``state`` (energies, then positions), or None if all finite."""
    for name, value in (
        ("potential energy", state.getPotentialEnergy().value_in_unit(_KJ)),
        ("kinetic energy", state.getKineticEnergy().value_in_unit(_KJ)),
    ):
        if not math.isfinite(value):  # in words, never "nan": output files are checked for written NaNs
            return f"{name} is {'not a number' if math.isnan(value) else 'infinite'}"
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    if not np.isfinite(positions).all():
        return "non-finite coordinates"
    return None


class CsvSink:
    """The state-data CSV file, shared by the reporters of every phase; rows are flushed as written."""

    def __init__(self, path: Path, append: bool) -> None:
        exists = append and path.exists() and path.stat().st_size > 0
        self._file: IO[str] = open(path, "a" if exists else "w", newline="")  # noqa: SIM115 - closed by close()
        self._writer = csv.writer(self._file)
        if not exists:
            self._writer.writerow(CSV_COLUMNS)

    def write(self, row: list) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class StateCsvReporter(IntervalReporter):
    """Writes one CSV row of energies, temperature and speed per report."""

    include = ("energy",)

    def __init__(
        self, sink: CsvSink, phase: str, system: openmm.System, interval: int, start_step: int
    ) -> None:
        super().__init__(interval, start_step)
        self._sink = sink
        self._phase = phase
        self._dof = degrees_of_freedom(system)
        self._last: tuple[float, int] | None = None  # (wall clock, step) at the previous report

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        step = simulation.currentStep
        potential = state.getPotentialEnergy().value_in_unit(_KJ)
        kinetic = state.getKineticEnergy().value_in_unit(_KJ)
        temperature = 2 * kinetic / (self._dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(_KJ / unit.kelvin))
        now = time.perf_counter()
        speed = ""
        if self._last is not None and now > self._last[0]:
            dt_ns = simulation.integrator.getStepSize().value_in_unit(unit.nanosecond)
            speed = f"{(step - self._last[1]) * dt_ns / (now - self._last[0]) * 86400:.4g}"
        self._last = (now, step)
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        self._sink.write(
            [
                self._phase,
                step,
                f"{time_ps:.6g}",
                f"{potential:.8g}",
                f"{kinetic:.8g}",
                f"{potential + kinetic:.8g}",
                f"{temperature:.6g}",
                speed,
            ]
        )


def degrees_of_freedom(system: openmm.System) -> int:
    """Degrees of freedom for the temperature, as OpenMM's StateDataReporter counts them."""
    dof = sum(3 for i in range(system.getNumParticles()) if system.getParticleMass(i) > 0 * unit.dalton)
    dof -= sum(
        1
        for i in range(system.getNumConstraints())
        if system.getParticleMass(system.getConstraintParameters(i)[0]) > 0 * unit.dalton
        or system.getParticleMass(system.getConstraintParameters(i)[1]) > 0 * unit.dalton
    )
    if any(isinstance(force, openmm.CMMotionRemover) for force in system.getForces()):
        dof -= 3
    return dof


class DcdReporter(IntervalReporter):
    """Appends production frames to a DCD trajectory; the file is created with its first frame."""

    include = ("positions",)

    def __init__(self, path: Path, topology: app.Topology, interval: int, start_step: int) -> None:
        super().__init__(interval, start_step)
        self._path = path
        self._topology = topology
        self._file: IO[bytes] | None = None
        self._dcd: app.DCDFile | None = None

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        if self._dcd is None:
            append = self._path.exists() and self._path.stat().st_size > 0
            self._file = open(self._path, "r+b" if append else "wb")  # noqa: SIM115 - closed by close()
            self._dcd = app.DCDFile(
                self._file,
                self._topology,
                simulation.integrator.getStepSize(),
                self.start_step + self.interval,
                self.interval,
                append=append,
            )
        self._dcd.writeModel(
            state.getPositions(asNumpy=True), periodicBoxVectors=state.getPeriodicBoxVectors()
        )

    def close(self) -> None:
        if self._file:
            self._file.close()


class CheckpointReporter(IntervalReporter):
    """Calls ``save`` every ``interval`` steps; the runner owns what a checkpoint is made of.

    A checkpoint is several files (OpenMM's checkpoint, a portable saved state, their metadata) that must
    describe the same step, so one function of the runner writes them all, here and at its other save points.
    """

    def __init__(self, save: Callable[[], None], interval: int, start_step: int = 0) -> None:
        super().__init__(interval, start_step)
        self._save = save

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self._save()


@dataclass(frozen=True)
class MDProgress:
    """A progress update: where the run is and how fast it goes."""

    phase: str
    step: int
    total_steps: int
    ns_per_day: float | None = None
    eta_s: float | None = None


class ProgressReporter(IntervalReporter):
    """Calls ``callback`` with an ``MDProgress`` per report: steps, ns/day and time to go."""

    def __init__(
        self, callback: Callable[[MDProgress], None], phase: str, interval: int, total_steps: int
    ) -> None:
        super().__init__(interval)
        self._callback = callback
        self._phase = phase
        self._total = total_steps
        self._start: tuple[float, int] | None = None

    def describeNextReport(self, simulation: app.Simulation) -> dict:
        if self._start is None:  # called just before stepping begins: the clock starts here
            self._start = (time.perf_counter(), simulation.currentStep)
        return super().describeNextReport(simulation)

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        now, step = time.perf_counter(), simulation.currentStep
        assert self._start is not None  # set by describeNextReport
        rate = (step - self._start[1]) / (now - self._start[0])  # steps per second
        dt_ns = simulation.integrator.getStepSize().value_in_unit(unit.nanosecond)
        eta = (self._total - step) / rate if rate > 0 else None
        self._callback(MDProgress(self._phase, step, self._total, rate * dt_ns * 86400, eta))


class WallClockGuard(IntervalReporter):
    """Raises ``reached`` at the first report step at or after ``deadline`` on ``clock``.

    One clock read per report step, so a guard costs nothing beside the MD. The default is the run's own
    wall-time limit (a ``time.monotonic`` value); a production deadline set by another process uses
    ``time.time`` and ``DeadlineReached``.
    """

    def __init__(
        self,
        deadline: float,
        interval: int,
        start_step: int = 0,
        clock: Callable[[], float] = time.monotonic,
        reached: type[Exception] = WallTimeReached,
    ) -> None:
        super().__init__(interval, start_step)
        self._deadline = deadline
        self._clock = clock
        self._reached = reached

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        if self._clock() >= self._deadline:
            raise self._reached


class StopFileGuard(IntervalReporter):
    """Raises ``StopRequested`` with the file's text at the first report after ``path`` exists.

    A file, because whoever asks (a batch-job supervisor, a SIGTERM handler) is another process, often on
    another node of a shared filesystem; one ``stat`` per report step costs nothing beside the MD.
    """

    def __init__(self, path: Path, interval: int, start_step: int) -> None:
        super().__init__(interval, start_step)
        self._path = path

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        try:
            reason = self._path.read_text().strip()
        except FileNotFoundError:
            return
        raise StopRequested(reason[:500] or "a stop was requested")
