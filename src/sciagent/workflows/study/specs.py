"""From a plan to ``MDSpec``s: the probe's spec and one spec per condition, built in one place."""

from __future__ import annotations

from dataclasses import dataclass

from sciagent.science.spec import MDSpec
from sciagent.workflows.study.guardrails import FittedPlan
from sciagent.workflows.study.plans import StudyPlan
from sciagent.workflows.study.state import ConditionState

PROBE_STEPS = 300
_MINIMIZE_ITERATIONS = 500  # enough to relax a prepared structure; unbounded minimisation can take minutes
_CHECKPOINTS_PER_RUN = 20  # a killed run loses at most 1/20 of its steps


def condition_seed(temperature: float, replica: int) -> int:
    """Distinct for every condition (independent noise), and the same on every rerun of the study."""
    return replica * 1000 + round(temperature)


@dataclass(frozen=True)
class SpecBuilder:
    """What every spec of the study shares: the structure, the platform, the threads per worker, and the
    stop request's file (``workflows/study/stopping.py``) where the simulations share this filesystem."""

    structure: str
    platform: str = "auto"
    cpu_threads: int | None = None
    remove_unknown_residues: bool = False
    stop_file: str | None = None

    def probe(self, plan: StudyPlan) -> MDSpec:
        """A short run of the plan's system at its lowest temperature, at safe settings.

        The probe measures speed, not stability: bonds to H constrained and 2 fs whatever the plan
        says (the cost of a step does not depend on the timestep), the same system size and solvent.
        """
        return self._spec(
            plan.temperatures_k[0],
            timestep_fs=2.0,
            hydrogen_mass_amu=None,
            constraints="hbonds",
            solvent=plan.solvent,
            production_steps=PROBE_STEPS,
            report_interval=100,
        )

    def conditions(self, fitted: FittedPlan) -> list[ConditionState]:
        """One pending condition per (temperature, replica), each with a seed of its own."""
        return [
            ConditionState(
                name=f"T{temperature:g}-r{replica}",
                temperature_k=temperature,
                replica=replica,
                spec=self.condition(fitted, temperature, replica),
            )
            for temperature, replica in fitted.conditions
        ]

    def condition(self, fitted: FittedPlan, temperature: float, replica: int) -> MDSpec:
        """The run may produce the plan's maximum; frames and checkpoints are sized from the expected
        production, so a run its deadline ends near there still has the frames the analysis needs."""
        checkpoint_every = max(
            fitted.report_interval,
            fitted.production_steps
            // _CHECKPOINTS_PER_RUN
            // fitted.report_interval
            * fitted.report_interval,
        )
        return self._spec(
            temperature,
            timestep_fs=fitted.timestep_fs,
            hydrogen_mass_amu=fitted.hydrogen_mass_amu,
            constraints=fitted.constraints,
            solvent=fitted.solvent,
            production_steps=fitted.max_steps,
            equilibration_steps=fitted.equilibration_steps,
            report_interval=fitted.report_interval,
            checkpoint_interval=checkpoint_every,
            seed=condition_seed(temperature, replica),
            **{k: v for k, v in (("ph", fitted.ph), ("pressure_bar", fitted.pressure_bar)) if v is not None},
        )

    def _spec(self, temperature: float, **fields: object) -> MDSpec:
        return MDSpec(
            structure=self.structure,
            temperature_k=float(temperature),
            platform=self.platform,
            cpu_threads=self.cpu_threads,
            remove_unknown_residues=self.remove_unknown_residues,
            stop_file=self.stop_file,
            minimize_max_iterations=_MINIMIZE_ITERATIONS,
            **fields,
        )
