"""Energies, optimisations, vibrations and dipoles of one structure through ASE.

``calculate`` is picklable in and out (pydantic models), so it runs on any site's worker. An
optimisation reports ASE's own verdict (``converged``) and the final largest atomic force; one that
ran out of steps says so. A calculator that fails raises ``RunFailure`` with the reason.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sciagent.errors import RunFailure
from sciagent.science.chem.calculators import Device, Method, make_calculator
from sciagent.science.chem.structures import MoleculeStructure, to_xyz

HARTREE_EV = 27.211386245988  # CODATA 2018, as ase.units.Hartree


class ChemTask(BaseModel):
    """What to compute: always the energy; optionally an optimisation first, then vibrations."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "GFN2-xTB"
    model: str | None = Field(default=None, description="MACE: a model file, mace-mp or mace-off")
    device: Device = "cpu"
    optimize: bool = False
    optimizer: Literal["BFGS", "FIRE"] = "BFGS"
    fmax: float = Field(default=0.01, gt=0, le=10, description="convergence: largest atomic force, eV/Å")
    max_steps: int = Field(default=200, ge=1, le=10000)
    vibrations: bool = False
    temperature_k: float = Field(default=298.15, gt=0, le=5000)


class TraceStep(BaseModel):
    step: int
    energy_ev: float
    fmax_ev_per_a: float


class Thermochemistry(BaseModel):
    """Ideal-gas, rigid-rotor, harmonic-oscillator values at ``temperature_k``, 1 atm (ASE IdealGasThermo)."""

    temperature_k: float
    zero_point_energy_ev: float
    enthalpy_ev: float
    entropy_ev_per_k: float
    gibbs_energy_ev: float
    symmetry_number: int = 1
    note: str = "symmetry number 1 assumed: the rotational entropy of symmetric molecules is overestimated"


class ChemResult(BaseModel):
    """One calculation's numbers, with what was asked and how it went."""

    smiles: str
    formula: str
    method: str
    model: str | None
    device: str
    energy_ev: float
    energy_hartree: float
    optimized: bool
    optimizer: str | None = None
    converged: bool | None = None
    steps: int | None = None
    fmax_target: float | None = None
    final_fmax_ev_per_a: float
    trace: list[TraceStep] = Field(default_factory=list)
    frequencies_cm1: list[float] | None = Field(default=None, description="imaginary modes as negatives")
    imaginary_modes: int | None = None
    thermochemistry: Thermochemistry | None = None
    dipole_debye: float | None = None
    xyz: str
    wall_time_s: float
    notes: list[str] = Field(default_factory=list)


def _atoms(structure: MoleculeStructure) -> Any:
    from ase import Atoms

    return Atoms(symbols=structure.symbols, positions=np.asarray(structure.positions))


def max_force(forces: np.ndarray) -> float:
    """The largest atomic force's length (eV/Å), the quantity ASE's ``fmax`` criterion compares."""
    return float(np.sqrt((np.asarray(forces) ** 2).sum(axis=1)).max())


def _optimize(atoms: Any, task: ChemTask) -> tuple[bool, int, list[TraceStep]]:
    from ase.optimize import BFGS, FIRE

    trace: list[TraceStep] = []
    optimizer = (BFGS if task.optimizer == "BFGS" else FIRE)(atoms, logfile=None)

    def record() -> None:
        trace.append(
            TraceStep(
                step=len(trace),
                energy_ev=atoms.get_potential_energy(),
                fmax_ev_per_a=max_force(atoms.get_forces()),
            )
        )

    optimizer.attach(record, interval=1)
    converged = bool(optimizer.run(fmax=task.fmax, steps=task.max_steps))
    return converged, int(optimizer.get_number_of_steps()), trace


def _geometry(atoms: Any) -> str:
    if len(atoms) == 1:
        return "monatomic"
    moments = atoms.get_moments_of_inertia()
    return "linear" if moments.min() < 1e-3 * moments.max() else "nonlinear"


def _vibrations(atoms: Any, energy: float, unpaired: int, temperature: float) -> tuple[list[float], int, Any]:
    from ase.thermochemistry import IdealGasThermo
    from ase.vibrations import Vibrations

    geometry = _geometry(atoms)
    if geometry == "monatomic":
        return [], 0, None
    with tempfile.TemporaryDirectory(prefix="sciagent-vib-") as scratch:
        vib = Vibrations(atoms, name=f"{scratch}/vib", delta=0.01, nfree=2)
        vib.run()
        modes = np.asarray(vib.get_energies())
        frequencies = np.asarray(vib.get_frequencies())
    kept = 3 * len(atoms) - (5 if geometry == "linear" else 6)
    order = np.argsort(np.abs(frequencies))[-kept:]
    signed = [float(-f.imag) if abs(f.imag) > abs(f.real) else float(f.real) for f in frequencies[order]]
    imaginary = sum(1 for value in signed if value < 0)
    thermo = None
    if imaginary == 0:
        model = IdealGasThermo(
            vib_energies=modes[order].real,
            geometry=geometry,
            potentialenergy=energy,
            atoms=atoms,
            symmetrynumber=1,
            spin=unpaired / 2,
        )
        thermo = Thermochemistry(
            temperature_k=temperature,
            zero_point_energy_ev=float(model.get_ZPE_correction()),
            enthalpy_ev=float(model.get_enthalpy(temperature, verbose=False)),
            entropy_ev_per_k=float(model.get_entropy(temperature, 101325.0, verbose=False)),
            gibbs_energy_ev=float(model.get_gibbs_energy(temperature, 101325.0, verbose=False)),
        )
    return sorted(signed), imaginary, thermo


def calculate(structure: MoleculeStructure, task: ChemTask) -> ChemResult:
    """Run ``task`` on ``structure``: the energy, after an optimisation if asked, then vibrations.

    Raises:
        SpecError: a method, model or device that cannot be used (from ``make_calculator``).
        RunFailure: the calculator failed (SCF not converged, a model that cannot evaluate); the
            message carries the calculator's own reason.
    """
    start = time.perf_counter()
    atoms = _atoms(structure)
    atoms.calc = make_calculator(
        task.method, structure.charge, structure.unpaired_electrons, task.device, task.model
    )
    notes: list[str] = []
    converged: bool | None = None
    steps: int | None = None
    trace: list[TraceStep] = []
    try:
        if task.optimize:
            converged, steps, trace = _optimize(atoms, task)
            if not converged:
                notes.append(
                    f"optimisation did not converge in {task.max_steps} steps (fmax {task.fmax} eV/Å)"
                )
        energy = float(atoms.get_potential_energy())
        fmax = max_force(atoms.get_forces())
        dipole = None
        if "dipole" in getattr(atoms.calc, "implemented_properties", ()):
            from ase.units import Debye

            dipole = float(np.linalg.norm(atoms.get_dipole_moment()) / Debye)
        frequencies = imaginary = thermo = None
        if task.vibrations:
            if not converged:
                notes.append(
                    "vibrations at a geometry that is not a converged minimum: frequencies are approximate"
                )
            frequencies, imaginary, thermo = _vibrations(
                atoms, energy, structure.unpaired_electrons, task.temperature_k
            )
            if imaginary:
                notes.append(f"{imaginary} imaginary mode(s): not a minimum; no thermochemistry")
    except RunFailure:
        raise
    except Exception as exc:
        raise RunFailure(
            "calculation", f"{task.method} calculation failed: {type(exc).__name__}: {exc}"
        ) from exc
    positions = atoms.get_positions().tolist()
    return ChemResult(
        smiles=structure.smiles,
        formula=structure.formula,
        method=task.method,
        model=task.model,
        device=task.device,
        energy_ev=energy,
        energy_hartree=energy / HARTREE_EV,
        optimized=task.optimize,
        optimizer=task.optimizer if task.optimize else None,
        converged=converged,
        steps=steps,
        fmax_target=task.fmax if task.optimize else None,
        final_fmax_ev_per_a=fmax,
        trace=trace,
        frequencies_cm1=frequencies,
        imaginary_modes=imaginary,
        thermochemistry=thermo,
        dipole_debye=dipole,
        xyz=to_xyz(structure.symbols, positions, f"{structure.smiles} {task.method} E={energy:.8f} eV"),
        wall_time_s=time.perf_counter() - start,
        notes=notes,
    )
