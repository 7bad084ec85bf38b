"""Run one simulation: ``run_md(spec, workdir) -> MDResult``.

Minimise, equilibrate, produce, writing a DCD trajectory, a state CSV and atomic checkpoints. A
work directory that already holds a checkpoint of the same spec is continued from it, which is what
batch-queue walltime limits and pre-emption need; a stop file (``MDSpec.stop_file``) stops a run at a
report step with a checkpoint of exactly that step, and every call appends its steps to the segment
ledger (``science/segments.py``), so no step is computed twice across jobs. A production deadline
(``MDSpec.production_deadline_unix``) ends production the same way but completes the run: the time
left, not a guessed length, decides how much is produced, and ``production_steps`` is the most there may
be. Failures come back as a failed ``MDResult`` with a class and a message a person understands; nothing
non-finite is ever written.

Each checkpoint is OpenMM's own (``checkpoint.chk``: exact, random-number state included, but readable
only by the same platform, hardware and OpenMM build) plus a portable saved state (``saved_state.xml``:
positions, velocities, box, parameters, step). A checkpoint that will not load here, or a resume on
another platform, continues from the saved state instead, and the result says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import openmm
from openmm import app, unit
from pydantic import BaseModel

from sciagent.atomic import write_atomic
from sciagent.errors import RunFailure, UserError
from sciagent.science.outputs import RunFiles, truncate_csv, truncate_dcd
from sciagent.science.platforms import PlatformChoice, available_platforms, platform_candidates, precision_of
from sciagent.science.preparation import PreparationRecord, prepare_structure
from sciagent.science.reporters import (
    CheckpointReporter,
    CsvSink,
    DcdReporter,
    DeadlineReached,
    InstabilityDetected,
    MDProgress,
    NanGuard,
    ProgressReporter,
    StateCsvReporter,
    StopFileGuard,
    StopRequested,
    WallClockGuard,
    WallTimeReached,
    first_non_finite,
)
from sciagent.science.segments import append_segment
from sciagent.science.spec import MDSpec
from sciagent.science.structures import resolve_structure
from sciagent.science.system_builder import build_system

log = logging.getLogger(__name__)

FailureClass = Literal["instability", "setup", "timeout", "platform", "stopped"]
ResumedFrom = Literal["checkpoint", "saved_state"]
EndedBy = Literal["max", "deadline"]
ProgressCallback = Callable[[MDProgress], None]


class MDResult(BaseModel):
    """What happened in one ``run_md`` call; JSON-serialisable so it can travel back from a worker."""

    status: Literal["completed", "failed"]
    failure_class: FailureClass | None = None
    message: str
    ended_by: EndedBy | None = None  # completed runs: production reached its maximum or its deadline
    failed_at_step: int | None = None
    steps_completed: int = 0
    production_steps_completed: int = 0
    simulated_ns: float = 0.0
    ns_per_day: float | None = None
    platform: str | None = None
    precision: str | None = None
    openmm_version: str = openmm.__version__
    choices: list[str] = []
    implicit_model: str | None = None
    gb_force: str | None = None
    resumed_from_step: int | None = None
    resumed_from: ResumedFrom | None = None
    wall_time_s: float = 0.0
    timings_s: dict[str, float] = {}  # this call's wall seconds: setup, equilibration, production (those run)
    spec: MDSpec
    preparation: PreparationRecord | None = None
    workdir: str
    files: dict[str, str] = {}

    @property
    def ok(self) -> bool:
        return self.status == "completed"


class _Session:
    """The live pieces of one run, and what has been recorded about it so far."""

    def __init__(self, spec: MDSpec, files: RunFiles) -> None:
        self.spec = spec
        self.files = files
        self.simulation: app.Simulation | None = None
        self.preparation: PreparationRecord | None = None
        self.choices: list[str] = []  # how the run was set up; kept with the checkpoint
        self.resume_note: str | None = None  # how this call continued it; this call's result only
        self.implicit_model: str | None = None
        self.gb_force: str | None = None
        self.resumed_from_step: int | None = None
        self.resumed_from: ResumedFrom | None = None
        self.timings_s: dict[str, float] = {}  # wall seconds of this call's setup and phases
        self.production_steps_run = 0  # production steps this call computed

    @property
    def step(self) -> int:
        return self.simulation.currentStep if self.simulation else 0


def run_md(spec: MDSpec, workdir: Path | str, progress: ProgressCallback | None = None) -> MDResult:
    """Run ``spec`` in ``workdir`` (created if needed), resuming from a checkpoint found there."""
    started = time.monotonic()
    files = RunFiles(Path(workdir).resolve())
    files.workdir.mkdir(parents=True, exist_ok=True)
    session = _Session(spec, files)
    wall_limit = started + spec.max_wall_time_s if spec.max_wall_time_s else None
    from_step: int | None = None
    try:
        try:
            if files.checkpoint_meta.exists():
                _resume(session)
            else:
                _start_fresh(session)
            write_atomic(files.spec, spec.model_dump_json(indent=2))
        finally:
            session.timings_s["setup"] = time.monotonic() - started
        from_step = session.step
        _run_phases(session, progress, wall_limit)
        _finish(session)
        result = _result(session, "completed", None, _completed_message(session, from_step))
        result.ended_by = "max" if session.step >= spec.total_steps else "deadline"
    except RunFailure as failure:
        result = _result(session, "failed", failure.failure_class, failure.message)
        if failure.failure_class == "instability":
            result.failed_at_step = session.step
    except UserError as exc:
        result = _result(session, "failed", "setup", str(exc))
    result.wall_time_s = time.monotonic() - started
    write_atomic(files.result, result.model_dump_json(indent=2))
    began_at = session.step if from_step is None else from_step  # None: it failed before any step
    append_segment(files.workdir, began_at, session.step, result.wall_time_s, session.timings_s)
    result.files = files.existing()
    return result


def _start_fresh(session: _Session) -> None:
    spec, files = session.spec, session.files
    structure = resolve_structure(spec.structure)
    prepared = prepare_structure(
        structure,
        chains=spec.chains,
        keep_water=spec.keep_water,
        ph=spec.ph,
        remove_unknown_residues=spec.remove_unknown_residues,
    )
    session.preparation = prepared.record
    write_atomic(files.preparation, prepared.record.model_dump_json(indent=2))
    failures = []
    for candidate in platform_candidates(spec.platform, spec.precision, spec.cpu_threads):
        built = build_system(spec, prepared, candidate.name)
        try:
            simulation = app.Simulation(
                built.topology, built.system, _integrator(spec), candidate.platform, candidate.properties
            )
        except openmm.OpenMMException as exc:
            failures.append(f"{candidate.name}: {_first_line(exc)}")
            continue
        session.simulation = simulation
        session.choices = [f"platform {candidate.name} ({candidate.reason})", *failures, *built.notes]
        session.implicit_model, session.gb_force = built.implicit_model, built.gb_force
        break
    else:
        raise RunFailure("platform", "no OpenMM platform could run this system: " + "; ".join(failures))
    with open(files.start_pdb, "w") as handle:
        app.PDBFile.writeFile(built.topology, built.positions, handle, keepIds=True)
    write_atomic(files.system_xml, openmm.XmlSerializer.serialize(built.system))
    simulation.context.setPositions(built.positions)
    if spec.minimize:
        _minimize(session)
    simulation.context.setVelocitiesToTemperature(spec.temperature_k * unit.kelvin, spec.seed)
    _write_checkpoint(session)


def _resume(session: _Session) -> None:
    spec, files = session.spec, session.files
    meta = json.loads(files.checkpoint_meta.read_text())
    if meta["restart_key"] != spec.restart_key():
        raise UserError(
            f"{files.workdir} holds a checkpoint of a different simulation: "
            "use a new output directory, or the same settings to resume it"
        )
    candidate = _resume_platform(spec, meta["platform"], files)
    system = openmm.XmlSerializer.deserialize(files.system_xml.read_text())
    topology = app.PDBFile(str(files.start_pdb)).topology
    try:
        simulation = app.Simulation(
            topology, system, _integrator(spec), candidate.platform, candidate.properties
        )
    except openmm.OpenMMException as exc:
        raise RunFailure(
            "platform", f"could not resume on the {candidate.name} platform: {_first_line(exc)}"
        ) from exc
    session.simulation = simulation
    session.resumed_from, session.resume_note = _load_restart(simulation, files, meta["platform"])
    session.preparation = PreparationRecord.model_validate_json(files.preparation.read_text())
    session.choices = meta["choices"]
    session.implicit_model, session.gb_force = meta["implicit_model"], meta["gb_force"]
    session.resumed_from_step = step = simulation.currentStep
    frames_kept = max(0, (step - spec.equilibration_steps) // spec.report_interval)
    truncate_dcd(files.trajectory, frames_kept)
    truncate_csv(files.state_csv, step)


def _resume_platform(spec: MDSpec, written_on: str, files: RunFiles) -> PlatformChoice:
    """Where to continue: the checkpoint's platform, or another one when a portable saved state allows it.

    Raises:
        UserError: another platform was asked for and there is no saved state to carry the run there.
    """
    portable = files.saved_state.exists()
    if spec.platform in ("auto", written_on):
        moved = spec.platform == "auto" and portable and written_on not in available_platforms()
        requested = "auto" if moved else written_on  # e.g. written on a GPU node, resumed on a CPU node
    elif portable:
        requested = spec.platform
    else:
        raise UserError(
            f"the checkpoint in {files.workdir} was written on {written_on} and can only continue there: "
            f"use --platform auto or {written_on}"
        )
    return platform_candidates(requested, spec.precision, spec.cpu_threads)[0]


def _load_restart(simulation: app.Simulation, files: RunFiles, written_on: str) -> tuple[ResumedFrom, str]:
    """Load the checkpoint if this platform can, else the portable saved state; say which, and why.

    Raises:
        UserError: neither loads.
    """
    here = simulation.context.getPlatform().getName()
    if here == written_on:
        try:
            simulation.loadCheckpoint(str(files.checkpoint))
        except (openmm.OpenMMException, OSError) as exc:  # another GPU model or OpenMM build, or no file
            why = f"checkpoint could not be loaded on {here} ({_first_line(exc)})"
        else:
            return "checkpoint", f"resumed from the checkpoint at step {simulation.currentStep}"
    else:
        why = f"checkpoint was written on {written_on} and cannot be loaded on {here}"
    try:
        # The state carries its own step count, the step of exactly these coordinates.
        simulation.context.setState(openmm.XmlSerializer.deserialize(files.saved_state.read_text()))
    except (ValueError, OSError, openmm.OpenMMException) as exc:
        raise UserError(
            f"{why}, and the portable saved state could not be loaded either ({_first_line(exc)}): "
            "start again in a new output directory"
        ) from exc
    return "saved_state", f"{why}: resumed from the portable saved state at step {simulation.currentStep}"


def _integrator(spec: MDSpec) -> openmm.Integrator:
    integrator = openmm.LangevinMiddleIntegrator(
        spec.temperature_k * unit.kelvin,
        spec.friction_per_ps / unit.picosecond,
        spec.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(spec.seed)
    return integrator


def _minimize(session: _Session) -> None:
    simulation = session.simulation
    assert simulation is not None
    try:
        simulation.minimizeEnergy(maxIterations=session.spec.minimize_max_iterations)
    except openmm.OpenMMException as exc:
        raise _classify_openmm_error(session, exc) from exc
    what = first_non_finite(simulation.context.getState(getPositions=True, getEnergy=True))
    if what:
        raise RunFailure(
            "setup", f"energy minimisation produced a non-finite state ({what}): check the structure"
        )


def _run_phases(session: _Session, progress: ProgressCallback | None, wall_limit: float | None) -> None:
    spec = session.spec
    remaining_equilibration = spec.equilibration_steps - session.step
    if remaining_equilibration > 0:
        _run_phase(session, "equilibration", 0, remaining_equilibration, progress, wall_limit)
    remaining_production = spec.total_steps - session.step
    if remaining_production > 0:
        _run_phase(
            session, "production", spec.equilibration_steps, remaining_production, progress, wall_limit
        )


def _run_phase(
    session: _Session,
    phase: str,
    start_step: int,
    steps: int,
    progress: ProgressCallback | None,
    wall_limit: float | None,
) -> None:
    """Step through one phase with its reporters; map what can go wrong to a ``RunFailure``.

    The guards come last, so a step's rows, frame and checkpoint are written before one of them ends the
    run, and in this order: a stop request (stopped), then the production deadline (completed), then the
    wall-time limit (timeout), the safety net for when a run does not end the planned way.
    """
    spec, files, simulation = session.spec, session.files, session.simulation
    assert simulation is not None
    every = spec.report_interval
    # Checkpoints fall on report steps, after the NaN guard and the writers of that step.
    checkpoint_every = max(every, spec.checkpoint_interval // every * every)
    sink = CsvSink(files.state_csv, append=True)
    dcd = (
        DcdReporter(files.trajectory, simulation.topology, every, start_step)
        if phase == "production"
        else None
    )
    reporters: list = [NanGuard(every, start_step)]
    reporters += [dcd] if dcd else []
    reporters += [
        StateCsvReporter(sink, phase, simulation.system, every, start_step),
        CheckpointReporter(lambda: _write_checkpoint(session), checkpoint_every, start_step),
    ]
    if progress:
        reporters.append(ProgressReporter(progress, phase, every, spec.total_steps))
    if spec.stop_file:
        reporters.append(StopFileGuard(Path(spec.stop_file), every, start_step))
    if phase == "production" and spec.production_deadline_unix is not None:
        deadline = spec.production_deadline_unix  # at its first report step if it has already passed
        reporters.append(WallClockGuard(deadline, every, start_step, time.time, DeadlineReached))
    if wall_limit is not None:
        reporters.append(WallClockGuard(wall_limit, every, start_step))
    simulation.reporters = reporters
    began, first_step = time.monotonic(), session.step
    try:
        simulation.step(steps)
    except DeadlineReached:
        log.info("production reached its deadline at step %d of %d", session.step, spec.total_steps)
    except InstabilityDetected as exc:
        raise RunFailure("instability", _instability_message(exc.what, exc.step, every)) from exc
    except openmm.OpenMMException as exc:
        raise _classify_openmm_error(session, exc) from exc
    except WallTimeReached as exc:
        _write_checkpoint(session)
        raise RunFailure(
            "timeout",
            f"stopped at the wall-time limit ({spec.max_wall_time_s:g} s) at step {session.step} of "
            f"{spec.total_steps}; a checkpoint was saved: run again with the same output directory to resume",
        ) from exc
    except StopRequested as exc:
        _write_checkpoint(session)
        raise RunFailure(
            "stopped",
            f"stopped on request at step {session.step} of {spec.total_steps} ({exc.reason}); a checkpoint "
            "of that step was saved: run again with the same output directory to resume",
        ) from exc
    finally:
        simulation.reporters = []
        sink.close()
        if dcd:
            dcd.close()
        session.timings_s[phase] = time.monotonic() - began
        if phase == "production":
            session.production_steps_run = session.step - first_step


def _instability_message(what: str, step: int, every: int) -> str:
    return (
        f"the simulation blew up: {what} at step {step} (last finite check at step {max(0, step - every)}); "
        "use a smaller timestep, turn on constraints, or minimise first"
    )


def _classify_openmm_error(session: _Session, exc: openmm.OpenMMException) -> RunFailure:
    """An OpenMM error is an instability when the state holds NaN/inf, otherwise a platform failure."""
    simulation = session.simulation
    assert simulation is not None
    # Positions only: computing energies from a blown-up state raises the same error again.
    positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    if not np.isfinite(positions.value_in_unit(unit.nanometer)).all():
        what = "non-finite coordinates"
        return RunFailure(
            "instability", _instability_message(what, session.step, session.spec.report_interval)
        )
    platform = simulation.context.getPlatform().getName()
    return RunFailure("platform", f"OpenMM failed on the {platform} platform: {_first_line(exc)}")


def _write_checkpoint(session: _Session) -> None:
    """Checkpoint now: OpenMM's checkpoint, the portable saved state, then the metadata to match them.

    Each file is replaced atomically; the metadata goes last, and each restart file carries its own step,
    so a crash between two writes leaves a set that still resumes correctly.
    """
    simulation = session.simulation
    assert simulation is not None
    context = simulation.context
    write_atomic(session.files.checkpoint, context.createCheckpoint())
    state = context.getState(
        getPositions=True, getVelocities=True, getParameters=True, getIntegratorParameters=True
    )
    write_atomic(session.files.saved_state, openmm.XmlSerializer.serialize(state))
    meta = {
        "restart_key": session.spec.restart_key(),
        "step": simulation.currentStep,
        "platform": context.getPlatform().getName(),
        "openmm_version": openmm.__version__,
        "choices": session.choices,
        "implicit_model": session.implicit_model,
        "gb_force": session.gb_force,
    }
    write_atomic(session.files.checkpoint_meta, json.dumps(meta, indent=2))


def _finish(session: _Session) -> None:
    simulation = session.simulation
    assert simulation is not None
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    what = first_non_finite(state)
    if what:
        raise RunFailure(
            "instability", _instability_message(what, session.step, session.spec.report_interval)
        )
    _write_checkpoint(session)
    with open(session.files.final_pdb, "w") as handle:
        app.PDBFile.writeFile(simulation.topology, state.getPositions(), handle, keepIds=True)


def _completed_message(session: _Session, from_step: int) -> str:
    """What the trajectory holds now, how much of it this call computed, and why production ended."""
    spec, step = session.spec, session.step
    ns = max(0, step - spec.equilibration_steps) * spec.timestep_fs * 1e-6
    message = f"completed {step} steps ({ns:.4g} ns of production at {spec.temperature_k:g} K)"
    if from_step:
        message += f", {step - from_step} of them in this call"
    if step < spec.total_steps:
        message += f"; production ended at its deadline, before its maximum of {spec.total_steps} steps"
    return message


def _result(session: _Session, status: str, failure_class: FailureClass | None, message: str) -> MDResult:
    spec = session.spec
    simulation = session.simulation
    production_done = max(0, session.step - spec.equilibration_steps)
    steps, seconds = session.production_steps_run, session.timings_s.get("production", 0.0)
    measured = status == "completed" and steps > 0 and seconds > 0  # a failed run's speed is not reported
    dt_ns = spec.timestep_fs * 1e-6
    return MDResult(
        status=status,
        failure_class=failure_class,
        message=message,
        steps_completed=session.step,
        production_steps_completed=production_done,
        simulated_ns=production_done * dt_ns,
        ns_per_day=steps * dt_ns / seconds * 86400 if measured else None,
        platform=simulation.context.getPlatform().getName() if simulation else None,
        precision=precision_of(simulation.context) if simulation else None,
        choices=[*session.choices, *([session.resume_note] if session.resume_note else [])],
        implicit_model=session.implicit_model,
        gb_force=session.gb_force,
        resumed_from_step=session.resumed_from_step,
        resumed_from=session.resumed_from,
        timings_s=dict(session.timings_s),
        spec=spec,
        preparation=session.preparation,
        workdir=str(session.files.workdir),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
