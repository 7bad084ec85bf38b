"""Force fields, solvent models and the native OBC2 substitution, on real villin systems."""

from __future__ import annotations

from pathlib import Path

import openmm
import pytest
from openmm import app, unit

from sciagent.errors import SpecError
from sciagent.science.preparation import PreparationRecord, PreparedStructure
from sciagent.science.spec import MDSpec
from sciagent.science.system_builder import (
    build_system,
    choose_implicit_model,
    replace_custom_obc2_with_native,
)


def _villin() -> PreparedStructure:
    pdb = app.PDBFile(str(Path(app.__file__).parent / "data" / "test.pdb"))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name in ("HOH", "NA", "CL", "Na", "Cl")])
    record = PreparationRecord(
        source="test",
        chains_kept=["A"],
        chains_removed=[],
        heterogens_removed={},
        nonstandard_replaced={},
        missing_residues_added=[],
        terminal_residues_not_modelled=[],
        heavy_atoms_added=0,
        hydrogens_added=0,
        ph=7.0,
        residues=35,
        atoms=582,
    )
    return PreparedStructure(modeller.topology, modeller.positions, record)


def _energy(system: openmm.System, positions: unit.Quantity) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _force_names(system: openmm.System) -> set[str]:
    return {type(force).__name__ for force in system.getForces()}


def test_native_obc2_reproduces_the_custom_gb_energy() -> None:
    villin = _villin()
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    custom = forcefield.createSystem(
        villin.topology, nonbondedMethod=app.NoCutoff, soluteDielectric=1.0, solventDielectric=78.5
    )
    native = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(custom))
    replace_custom_obc2_with_native(native)
    assert "GBSAOBCForce" in _force_names(native) and "CustomGBForce" not in _force_names(native)
    assert _energy(native, villin.positions) == pytest.approx(_energy(custom, villin.positions), rel=1e-6)


def test_implicit_on_cpu_uses_native_obc2_and_says_why() -> None:
    built = build_system(MDSpec(structure="villin"), _villin(), "CPU")
    assert (built.implicit_model, built.gb_force) == ("obc2", "GBSAOBCForce")
    assert "GBSAOBCForce" in _force_names(built.system)
    assert built.notes == ["implicit model auto → OBC2 on every platform, computed with GBSAOBCForce"]


@pytest.mark.parametrize("platform", ["CUDA", "OpenCL", "HIP", "Reference"])
def test_implicit_auto_is_the_same_physics_on_every_platform(platform: str) -> None:
    spec = MDSpec(structure="villin")
    assert choose_implicit_model(spec, platform) == choose_implicit_model(spec, "CPU")
    assert choose_implicit_model(spec, platform)[0] == "obc2"
    villin = _villin()
    elsewhere, here = build_system(spec, villin, platform), build_system(spec, villin, "CPU")
    assert (elsewhere.implicit_model, elsewhere.gb_force) == ("obc2", "GBSAOBCForce")
    serialize = openmm.XmlSerializer.serialize
    assert serialize(elsewhere.system) == serialize(here.system)  # force for force, parameter for parameter


def test_requested_custom_gb_model_on_cpu_is_honoured_with_a_warning() -> None:
    built = build_system(MDSpec(structure="villin", implicit_model="gbn2"), _villin(), "CPU")
    assert (built.implicit_model, built.gb_force) == ("gbn2", "CustomGBForce")
    assert "5x slower" in built.notes[0]


def test_requested_custom_gb_model_on_a_gpu_platform_is_honoured() -> None:
    built = build_system(MDSpec(structure="villin", implicit_model="gbn2"), _villin(), "CUDA")
    assert (built.implicit_model, built.gb_force) == ("gbn2", "CustomGBForce")
    assert "CustomGBForce" in _force_names(built.system) and "GBSAOBCForce" not in _force_names(built.system)
    assert built.notes == ["implicit model gbn2 as requested (CustomGBForce)"]


def test_requested_obc2_uses_the_native_force_on_a_gpu_platform() -> None:
    built = build_system(MDSpec(structure="villin", implicit_model="obc2"), _villin(), "CUDA")
    assert (built.implicit_model, built.gb_force) == ("obc2", "GBSAOBCForce")
    assert "GBSAOBCForce" in _force_names(built.system)


def test_vacuum_has_no_solvent_force() -> None:
    built = build_system(MDSpec(structure="villin", solvent="vacuum"), _villin(), "CPU")
    assert not _force_names(built.system) & {"GBSAOBCForce", "CustomGBForce", "MonteCarloBarostat"}


def test_explicit_solvent_adds_water_ions_pme_and_a_seeded_barostat() -> None:
    spec = MDSpec(
        structure="villin", solvent="explicit", padding_nm=0.5, ionic_strength_molar=0.15, seed=4242
    )
    built = build_system(spec, _villin(), "CPU")
    residues = [r.name for r in built.topology.residues()]
    assert (residues.count("HOH") > 500 and "CL" in residues) or "Cl" in residues
    barostat = next(f for f in built.system.getForces() if isinstance(f, openmm.MonteCarloBarostat))
    assert barostat.getRandomNumberSeed() == 4242  # the spec's seed, as for velocities and thermostat
    nonbonded = next(f for f in built.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert built.system.usesPeriodicBoundaryConditions()


def test_constraints_and_hydrogen_mass_follow_the_spec() -> None:
    villin = _villin()
    free = build_system(MDSpec(structure="villin", constraints="none"), villin, "CPU").system
    hmr = build_system(MDSpec(structure="villin", hydrogen_mass_amu=3.0), villin, "CPU").system
    assert free.getNumConstraints() == 0 and hmr.getNumConstraints() > 0
    hydrogen = next(a.index for a in villin.topology.atoms() if a.element.symbol == "H")
    assert hmr.getParticleMass(hydrogen).value_in_unit(unit.amu) == pytest.approx(3.0)


@pytest.mark.parametrize("forcefield", ["amber99sbildn", "charmm36"])
def test_other_force_fields_build(forcefield: str) -> None:
    built = build_system(
        MDSpec(structure="villin", forcefield=forcefield, solvent="vacuum"), _villin(), "CPU"
    )
    assert built.system.getNumParticles() == 582


def test_a_residue_without_template_is_a_clear_spec_error() -> None:
    villin = _villin()
    modeller = app.Modeller(villin.topology, villin.positions)
    modeller.delete(
        [a for a in modeller.topology.atoms() if a.residue.index == 5 and a.element.symbol == "H"]
    )
    broken = PreparedStructure(modeller.topology, modeller.positions, villin.record)
    with pytest.raises(SpecError, match="cannot parameterise") as caught:
        build_system(MDSpec(structure="villin"), broken, "CPU")
    assert "\n" not in str(caught.value)
