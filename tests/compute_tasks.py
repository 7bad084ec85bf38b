"""Task functions for the executor tests: module-level, so a spawned worker can import them by name.

``openmm`` is imported at the top on purpose, as ``sciagent.science`` does: the executor must set
the thread variables before this module is imported in the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import openmm
from openmm import unit


def sleep_then_return(seconds: float, value: object = None) -> dict:
    """Sleep, then return ``value`` with this run's start and end (wall clock) and pid."""
    start = time.time()
    time.sleep(seconds)
    return {"value": value, "start": start, "end": time.time(), "pid": os.getpid()}


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def exit_hard(code: int = 3) -> None:
    """Leave without a result and without Python's clean-up, as a crashing extension would."""
    os._exit(code)


def kill_self() -> None:
    """Die from SIGKILL, as from the out-of-memory killer."""
    os.kill(os.getpid(), signal.SIGKILL)


def report_env() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in ("OPENMM_CPU_THREADS", "OMP_NUM_THREADS")}


def spawn_grandchild_and_sleep(pid_dir: str, seconds: float) -> int:
    """Start ``sleep 60``, record its pid and ours in ``pid_dir``, sleep, return the grandchild's pid.

    The pid files appear only once the grandchild exists, so a test can wait for them.
    """
    grandchild = subprocess.Popen(["sleep", "60"])
    for name, pid in (("task.pid", os.getpid()), ("grandchild.pid", grandchild.pid)):
        partial = Path(pid_dir) / f"{name}.partial"
        partial.write_text(str(pid))
        partial.rename(Path(pid_dir) / name)
    time.sleep(seconds)
    return grandchild.pid


def run_tiny_openmm(steps: int = 200) -> dict:
    """Two argon atoms in a Lennard-Jones well on the CPU platform: real OpenMM in well under a second."""
    system = openmm.System()
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in range(2):
        system.addParticle(39.948 * unit.amu)
        force.addParticle(0.0, 0.3405 * unit.nanometer, 0.9960 * unit.kilojoule_per_mole)
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(120 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform)
    context.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(0.38, 0, 0)] * unit.nanometer)
    integrator.step(steps)
    xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return {
        "steps": context.getStepCount(),
        "distance_nm": float(((xyz[1] - xyz[0]) ** 2).sum() ** 0.5),
        "threads": platform.getPropertyValue(context, "Threads"),
    }


def ignore_sigterm_and_sleep(pid_dir: str, seconds: float) -> None:
    """Refuse to stop politely, as a task stuck in native code may: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spawn_grandchild_and_sleep(pid_dir, seconds)


def return_unpicklable() -> object:
    return (n for n in range(3))
