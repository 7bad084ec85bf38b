"""Our MD path vs a plain OpenMM script on the same system, side by side in one run.

Both integrate the identical System (the plain script loads the ``system.xml`` our run wrote), with
the same integrator, minimisation, report interval (DCD + state data) and checkpoint interval, and
both are timed around production stepping only. Runs alternate to spread any machine noise evenly.
A last section times what a plain script gets from ``amber14-all.xml`` + ``implicit/obc2.xml``
(CustomGBForce) against the GBSAOBCForce system we build on the CPU platform.

    python bench/md_overhead.py [--steps 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import openmm
from openmm import app, unit

from sciagent.science.md import run_md
from sciagent.science.spec import MDSpec


def ours(spec: MDSpec, root: Path, index: int) -> tuple[float, Path]:
    """Production steps/s through run_md, from its own production timing."""
    workdir = root / f"ours-{index}"
    result = run_md(spec, workdir)
    if not result.ok:
        raise SystemExit(f"run_md failed: {result.message}")
    steps_per_s = result.ns_per_day / (spec.timestep_fs * 1e-6 * 86400)
    return steps_per_s, workdir


def plain(spec: MDSpec, source: Path, root: Path, index: int, system: openmm.System | None = None) -> float:
    """Production steps/s of a textbook OpenMM script with the same reporters."""
    workdir = root / f"plain-{index}"
    workdir.mkdir()
    pdb = app.PDBFile(str(source / "start.pdb"))
    system = system or openmm.XmlSerializer.deserialize((source / "system.xml").read_text())
    integrator = openmm.LangevinMiddleIntegrator(
        spec.temperature_k * unit.kelvin,
        spec.friction_per_ps / unit.picosecond,
        spec.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(spec.seed)
    simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=spec.minimize_max_iterations)
    simulation.context.setVelocitiesToTemperature(spec.temperature_k * unit.kelvin, spec.seed)
    simulation.reporters += [
        app.DCDReporter(str(workdir / "trajectory.dcd"), spec.report_interval),
        app.StateDataReporter(
            str(workdir / "state.csv"),
            spec.report_interval,
            step=True,
            time=True,
            potentialEnergy=True,
            kineticEnergy=True,
            totalEnergy=True,
            temperature=True,
            speed=True,
        ),
        app.CheckpointReporter(str(workdir / "checkpoint.chk"), spec.checkpoint_interval),
    ]
    began = time.perf_counter()
    simulation.step(spec.production_steps)
    return spec.production_steps / (time.perf_counter() - began)


def custom_gb_system(source: Path) -> openmm.System:
    """What a plain script builds for amber14 in implicit solvent: OBC2 as a CustomGBForce."""
    pdb = app.PDBFile(str(source / "start.pdb"))
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    return forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)


def _listing(rates: list[float]) -> str:
    return ", ".join(f"{rate:.1f}" for rate in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = MDSpec(
        structure="villin",
        production_steps=args.steps,
        report_interval=100,
        checkpoint_interval=1000,
        platform="CPU",
        minimize_max_iterations=500,
    )
    print(
        f"villin headpiece, amber14 + OBC2 implicit, 2 fs, {args.steps} production steps, "
        f"OpenMM {openmm.__version__}, CPU platform, {args.repeats} alternating repeats"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours_rates, plain_rates = [], []
        for index in range(args.repeats):
            rate, source = ours(spec, root, index)
            ours_rates.append(rate)
            plain_rates.append(plain(spec, source, root, index))
        custom_rate = plain(spec, source, root, args.repeats, custom_gb_system(source))
    ours_median, plain_median = statistics.median(ours_rates), statistics.median(plain_rates)
    print(f"run_md            : {ours_median:8.1f} steps/s  (runs: {_listing(ours_rates)})")
    print(f"plain OpenMM      : {plain_median:8.1f} steps/s  (runs: {_listing(plain_rates)})")
    print(f"ratio run_md/plain: {ours_median / plain_median:.3f}   (goal >= 0.97)")
    print(f"plain OpenMM, amber14 + implicit/obc2.xml (CustomGBForce): {custom_rate:.1f} steps/s")
    print(f"ratio run_md/plain-CustomGB: {ours_median / custom_rate:.2f}x")


if __name__ == "__main__":
    main()
