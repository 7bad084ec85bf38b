"""Turn a prepared structure and an ``MDSpec`` into an OpenMM ``System``, recording every choice.

The physics of a run never depends on the hardware it lands on: ``implicit_model="auto"`` is OBC2 on
every platform, and another GB model is used only when the spec names it. OpenMM's ``implicit/*.xml``
files implement their GB models as ``CustomGBForce``; OBC2 is exactly the model the hand-written
``GBSAOBCForce`` computes, so we move the very same per-atom parameters (charge, radius, scale) into a
``GBSAOBCForce``: same energies (checked in the tests), about 5x faster on the CPU platform, and a
native kernel on the GPU platforms too, so the system (and ``system.xml``) is the same wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import openmm
from openmm import app, unit

from sciagent.errors import SpecError
from sciagent.science.spec import MDSpec

if TYPE_CHECKING:
    from sciagent.science.preparation import PreparedStructure

FORCEFIELD_FILES: dict[str, tuple[str, str]] = {
    # name: (protein force field, its TIP3P water model)
    "amber14": ("amber14-all.xml", "amber14/tip3p.xml"),
    "amber99sbildn": ("amber99sbildn.xml", "tip3p.xml"),
    "charmm36": ("charmm36.xml", "charmm36/water.xml"),
}
IMPLICIT_FILES: dict[str, str] = {
    name: f"implicit/{name}.xml" for name in ("obc2", "obc1", "hct", "gbn", "gbn2")
}
CONSTRAINTS = {"none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}
# OpenMM's CustomGB models store radius - 0.009 nm ("offset radius") and scale * offset radius.
_GB_RADIUS_OFFSET_NM = 0.009
_SOLVENT_DIELECTRIC = 78.5
_SOLUTE_DIELECTRIC = 1.0
_EXPLICIT_CUTOFF = 1.0 * unit.nanometer
_BAROSTAT_INTERVAL = 25


@dataclass
class BuiltSystem:
    """An OpenMM system ready to simulate, with the reasons for the choices made building it."""

    system: openmm.System
    topology: app.Topology
    positions: unit.Quantity
    implicit_model: str | None = None
    gb_force: str | None = None
    notes: list[str] = field(default_factory=list)


def choose_implicit_model(spec: MDSpec, platform_name: str) -> tuple[str, str]:
    """Pick the GB model for ``spec``; return it with the reason, for the run's recorded choices.

    ``auto`` is OBC2 whatever ``platform_name`` is: a GPU node and a laptop running the same spec must
    simulate the same physics, or their results cannot be compared. The platform only adds a cost
    warning to a model that was asked for by name.
    """
    if spec.implicit_model == "auto":
        return "obc2", "implicit model auto → OBC2 on every platform, computed with GBSAOBCForce"
    if spec.implicit_model == "obc2":
        return "obc2", "implicit model OBC2 as requested, computed with GBSAOBCForce"
    reason = f"implicit model {spec.implicit_model} as requested (CustomGBForce)"
    if platform_name == "CPU":
        reason += ": about 5x slower than OBC2 on the CPU platform (measured on villin)"
    return spec.implicit_model, reason


def build_system(spec: MDSpec, prepared: PreparedStructure, platform_name: str) -> BuiltSystem:
    """Apply the force field and solvent of ``spec`` to ``prepared``.

    Args:
        spec: the simulation request.
        prepared: the structure to parameterise.
        platform_name: where it will run; it changes no physics, only the cost note of a GB model
            asked for by name.

    Raises:
        SpecError: the force field cannot parameterise a residue of the structure.
    """
    protein_ff, water_ff = FORCEFIELD_FILES[spec.forcefield]
    common = {
        "constraints": CONSTRAINTS[spec.constraints],
        "rigidWater": spec.constraints != "none",
        "hydrogenMass": spec.hydrogen_mass_amu * unit.amu if spec.hydrogen_mass_amu else None,
    }
    if spec.solvent == "explicit":
        return _build_explicit(spec, prepared, (protein_ff, water_ff), common)
    if spec.solvent == "vacuum":
        forcefield = _load_forcefield(protein_ff)
        system = _create_system(forcefield, prepared.topology, spec, nonbondedMethod=app.NoCutoff, **common)
        return BuiltSystem(system, prepared.topology, prepared.positions, notes=["vacuum: no solvent model"])
    return _build_implicit(spec, prepared, protein_ff, platform_name, common)


def _build_explicit(
    spec: MDSpec, prepared: PreparedStructure, forcefield_files: tuple[str, str], common: dict
) -> BuiltSystem:
    forcefield = _load_forcefield(*forcefield_files)
    modeller = app.Modeller(prepared.topology, prepared.positions)
    modeller.addSolvent(
        forcefield,
        model="tip3p",
        padding=spec.padding_nm * unit.nanometer,
        ionicStrength=spec.ionic_strength_molar * unit.molar,
        neutralize=True,
    )
    system = _create_system(
        forcefield,
        modeller.topology,
        spec,
        nonbondedMethod=app.PME,
        nonbondedCutoff=_EXPLICIT_CUTOFF,
        **common,
    )
    barostat = openmm.MonteCarloBarostat(
        spec.pressure_bar * unit.bar, spec.temperature_k * unit.kelvin, _BAROSTAT_INTERVAL
    )
    barostat.setRandomNumberSeed(spec.seed)  # like velocities and thermostat: reruns reproduce
    system.addForce(barostat)
    waters = sum(1 for residue in modeller.topology.residues() if residue.name == "HOH")
    notes = [
        f"explicit TIP3P: {waters} waters, {spec.padding_nm} nm padding, {spec.ionic_strength_molar} M NaCl, "
        f"PME with {_EXPLICIT_CUTOFF.value_in_unit(unit.nanometer)} nm cutoff, NPT at {spec.pressure_bar} bar"
    ]
    return BuiltSystem(system, modeller.topology, modeller.positions, notes=notes)


def _build_implicit(
    spec: MDSpec, prepared: PreparedStructure, protein_ff: str, platform_name: str, common: dict
) -> BuiltSystem:
    model, reason = choose_implicit_model(spec, platform_name)
    forcefield = _load_forcefield(protein_ff, IMPLICIT_FILES[model])
    system = _create_system(
        forcefield,
        prepared.topology,
        spec,
        nonbondedMethod=app.NoCutoff,
        soluteDielectric=_SOLUTE_DIELECTRIC,
        solventDielectric=_SOLVENT_DIELECTRIC,
        **common,
    )
    gb_force = "CustomGBForce"
    if model == "obc2":
        replace_custom_obc2_with_native(system)
        gb_force = "GBSAOBCForce"
    return BuiltSystem(system, prepared.topology, prepared.positions, model, gb_force, notes=[reason])


def replace_custom_obc2_with_native(system: openmm.System) -> None:
    """Swap the OBC2 ``CustomGBForce`` in ``system`` for an equivalent ``GBSAOBCForce``, in place."""
    index, custom = next(
        (i, f) for i, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomGBForce)
    )
    native = openmm.GBSAOBCForce()
    native.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    native.setSoluteDielectric(_SOLUTE_DIELECTRIC)
    native.setSolventDielectric(_SOLVENT_DIELECTRIC)
    if custom.getNumEnergyTerms() < 2:  # no ACE surface-area term in the custom model
        native.setSurfaceAreaEnergy(0.0)
    for atom in range(custom.getNumParticles()):
        charge, offset_radius, scaled_offset_radius = custom.getParticleParameters(atom)
        native.addParticle(charge, offset_radius + _GB_RADIUS_OFFSET_NM, scaled_offset_radius / offset_radius)
    native.setForceGroup(custom.getForceGroup())
    system.removeForce(index)
    system.addForce(native)


def _load_forcefield(*files: str) -> app.ForceField:
    return app.ForceField(*files)


def _create_system(
    forcefield: app.ForceField, topology: app.Topology, spec: MDSpec, **kwargs: object
) -> openmm.System:
    try:
        return forcefield.createSystem(topology, **kwargs)
    except ValueError as exc:  # OpenMM's error for a residue no template matches
        first_line = str(exc).strip().splitlines()[0]
        raise SpecError(
            f"force field {spec.forcefield} cannot parameterise this structure ({first_line}): "
            "remove or replace that residue, or choose other chains"
        ) from exc
