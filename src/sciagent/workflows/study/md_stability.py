"""The md-stability workflow: plan → fit → simulate → evaluate and adapt → report.

A model proposes a thermal-stability study; guardrails make it sound and fit it to the budget for a
verdict, at a measured speed: the workspace's speed book, or a probe when the plan has cheaper physics
to choose; the cheapest plan with no measured speed is fitted provisionally and its runs start at once
(``probe.py``). Every condition runs on the executor in parallel and is adapted in bounded rounds
(``condition_runner``); each finished run's speed goes into the speed book for the next study; then
the report is written. The phase reached is saved with the state after every change and every step
is journalled, so ``resume`` continues a run killed or stopped (``stopping.py``) in any phase: a
recorded plan is not asked for again, a speed taken is reused, finished simulations are kept and
interrupted ones continue from their checkpoints.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

from sciagent.errors import SciagentError
from sciagent.report.models import GuardrailChange
from sciagent.science.simulate import SimulationOutcome
from sciagent.science.structures import resolve_structure
from sciagent.workflows.study import prompts
from sciagent.workflows.study.condition_runner import ConditionRunner
from sciagent.workflows.study.context import Study, StudyContext
from sciagent.workflows.study.goal import dropped_by_the_fit, goal_values, hold_goal, with_held_conditions
from sciagent.workflows.study.guardrails import Allowance, cheaper_plan, fit_plan, physical_checks
from sciagent.workflows.study.outlook import verdict_outlook
from sciagent.workflows.study.plans import StudyPlan
from sciagent.workflows.study.probe import ThroughputProbe, check_budget_covers_a_run
from sciagent.workflows.study.report import write_report
from sciagent.workflows.study.specs import SpecBuilder
from sciagent.workflows.study.speeds import SPEEDS_FILE, SpeedBook, measured, step_cost_system, this_machine
from sciagent.workflows.study.state import Phase, StudyState
from sciagent.workflows.study.stopping import raise_if_stop_requested
from sciagent.workflows.study.timing import study_time_breakdown

DEFAULT_GOAL = (
    "Assess the thermal stability of the villin headpiece at physiological and elevated temperature"
)
FALLBACK_PLAN = StudyPlan(
    reference_temperature_k=300,
    elevated_temperatures_k=[400],
    replicas=1,
    timestep_fs=4,
    hydrogen_mass_repartitioning=True,
    constraints="hbonds",
    production_ps=100,
    solvent="implicit",
    rationale="fallback plan (no model answer validated): physiological 300 K and elevated 400 K, "
    "one replica each, 4 fs with hydrogen mass repartitioning and H-bond constraints, implicit solvent",
)
_PHASES: tuple[Phase, ...] = ("plan", "fit", "simulate", "report", "done")
# The report's share of the budget: the interpretation (estimated from the plan call's latency) plus
# plotting and rendering; bounded so one slow first call neither starves nor swallows the runs.
INTERPRETATION_TOKENS = 200
INTERPRETATION_LATENCY_FACTOR = 1.5
RENDER_S = 8.0
MIN_REPORT_RESERVE_S = 15.0
MAX_REPORT_RESERVE_S = 90.0


class StabilityStudy:
    """Sequences one study's phases, from a fresh start or from wherever its saved state stopped."""

    def __init__(self, state: StudyState, context: StudyContext) -> None:
        self.study = Study(state, context)
        threads = getattr(context.executor, "threads_per_worker", None)
        self.specs = SpecBuilder(
            state.structure,
            platform=context.platform,
            cpu_threads=threads,
            remove_unknown_residues=context.remove_unknown_residues,
            stop_file=context.stop_file,
        )
        self.speeds = SpeedBook(context.run_dir.parent / SPEEDS_FILE, self._warn)

    @property
    def state(self) -> StudyState:
        return self.study.state

    def run(self) -> Path:
        """Carry the study to its report; return the run directory."""
        self.study.save()
        work: dict[Phase, Callable[[], None]] = {
            "plan": self._plan,
            "fit": self._fit,
            "simulate": self._simulate,
            "report": self._report,
        }
        for phase, following in itertools.pairwise(_PHASES):
            if _PHASES.index(self.state.phase) > _PHASES.index(phase):
                continue
            raise_if_stop_requested(self.study.ctx.run_dir)  # before the model, the probe, the report
            self._timed(phase, work[phase])
            self.state.phase = following
            self.study.save()
        return self.study.ctx.run_dir

    # --- phases -----------------------------------------------------------------------------------
    def _plan(self) -> None:
        if self.state.plan is not None:  # recorded before a kill: never asked for twice
            return
        check_budget_covers_a_run(self.study)
        resolve_structure(self.state.structure)  # a bad structure fails here, before any model call
        goal_values(self.state.goal)  # and so does a goal that one study cannot run
        journal, run_id = self.study.ctx.journal, self.state.run_id
        step = journal.start_step(run_id, "plan", "model proposes the study")
        messages = prompts.plan_messages(self.state.goal, self.state.structure, self.state.budget_s)
        decision = self.study.ctx.advisor.decide(
            "plan", messages, StudyPlan, lambda: FALLBACK_PLAN, step, tolerate_model_errors=False
        )
        held, changes = self._checked(decision.value)
        self.state.plan, self.state.plan_source = decision.value, decision.source
        self.state.guardrail_changes = changes
        self._size_the_report_reserve()
        self.study.save()
        summary = f"plan from the {decision.source}: {decision.value.describe()}"
        if held.describe() != decision.value.describe():
            summary += f"; held to the goal and physical limits: {held.describe()}"
        journal.finish_step(step, "completed", summary, decision.value.model_dump(mode="json"))
        for change in changes:
            journal.add_event(run_id, "info", f"guardrail: {change.field}: {change.reason}")
        self.study.notify("plan", summary)

    def _fit(self) -> None:
        assert self.state.plan is not None
        limits, journal = self.study.ctx.guardrails, self.study.ctx.journal
        plan, _ = self._checked(self.state.plan)
        step = journal.start_step(self.state.run_id, "fit", "fit the plan to the budget at a measured speed")
        runs = len(plan.temperatures_k) * plan.replicas
        choice = cheaper_plan(plan, "") is not None  # a probe only where its speed can change the physics
        probe = ThroughputProbe(self.study, self.specs, runs, self.speeds, probe_if_unknown=choice)
        cap = self.study.ctx.max_simulation_time_s
        try:
            fitted, changes = fit_plan(
                plan, lambda: Allowance(self.study.runs_allowance(), cap), probe.measure, limits
            )
        except SciagentError as exc:
            journal.finish_step(step, "failed", str(exc))
            raise
        goal = goal_values(self.state.goal)
        changes += dropped_by_the_fit(goal, fitted, changes)
        fitted = with_held_conditions(fitted, goal)
        self.state.fitted = fitted
        self.state.guardrail_changes += changes
        self.state.conditions = self.specs.conditions(fitted)
        self.study.save()
        summary = (
            f"{self._speed_taken()}; {len(self.state.conditions)} runs, each expected to produce "
            f"{fitted.production_ps:g} ps (at most {fitted.max_production_ps:g} ps)"
            + ("" if fitted.estimated_wall_s is None else f", estimated {fitted.estimated_wall_s:.0f} s")
        )
        if fitted.verdict_possible is False:
            summary += f" (a verdict needs {fitted.min_production_ps:g} ps)"
        journal.finish_step(step, "completed", summary, fitted.model_dump(mode="json"))
        for change in changes:
            journal.add_event(self.state.run_id, "info", f"guardrail: {change.field}: {change.reason}")
            self.study.notify("guardrails", f"{change.field}: {change.proposed} → {change.applied}")
        self.study.notify("guardrails", summary)

    def _speed_taken(self) -> str:
        assert self.state.fitted is not None
        record = self.state.probe_for(self.state.fitted.solvent)
        if record is None:
            return "no measured speed yet: a provisional fit, the runs measure their own as they go"
        where = f"probe round {record.round}"
        if record.source == "book":
            where = f"speed book: {record.measured_by}"
        return f"{record.steps_per_s:.0f} steps/s per worker ({where})"

    def _simulate(self) -> None:
        try:
            ConditionRunner(self.study).run()
        finally:  # a stopped study's finished runs measured their speed too
            self._record_speeds()

    def _record_speeds(self) -> None:
        """Put each finished run's measured speed in the speed book, for the next study here."""
        machine = this_machine(max(1, min(self.study.ctx.executor.capacity, len(self.state.conditions))))
        for condition in self.state.conditions:
            for task, outcome in condition.outcomes(self.study.ctx.run_dir).items():
                measurement = measured(outcome.result, self.state.run_id, task)
                if measurement is not None:
                    self.speeds.record(step_cost_system(outcome.result.spec), machine, measurement)

    def _warn(self, message: str) -> None:
        self.study.ctx.journal.add_event(self.state.run_id, "warning", message)
        self.study.notify("speed", message)

    def _checked(self, plan: StudyPlan) -> tuple[StudyPlan, list[GuardrailChange]]:
        """The model's plan held to physical limits, then to the values its goal states (which win)."""
        checked, changes = physical_checks(plan, self.study.ctx.guardrails)
        held, stated = hold_goal(checked, goal_values(self.state.goal))
        return held, changes + stated

    def _size_the_report_reserve(self) -> None:
        """Keep enough of the budget for the model to interpret the results at the speed it just showed.

        The interpretation is about as long as the plan (a short paragraph against a JSON plan with its
        rationale), so the plan call's latency, with a margin, estimates it.
        """
        latency = self.study.ctx.advisor.last_latency_s
        if latency is not None:
            self.state.model_latency_s = latency
            needed = RENDER_S + INTERPRETATION_LATENCY_FACTOR * latency
            self.state.report_reserve_s = min(MAX_REPORT_RESERVE_S, max(MIN_REPORT_RESERVE_S, needed))

    def _report(self) -> None:
        began = time.monotonic()
        journal = self.study.ctx.journal
        step = journal.start_step(self.state.run_id, "report", "interpret and write the report")
        files = write_report(
            self.state,
            self.study.ctx,
            step,
            outlook=verdict_outlook(self.state, self._outcomes(), self._command(), self.study.ctx.guardrails),
            max_tokens=self._interpretation_tokens(),
            time_breakdown=lambda: study_time_breakdown(self.study, began),
        )
        for kind, path in files.items():
            journal.add_artifact(self.state.run_id, kind, str(path))
        journal.finish_step(step, "completed", f"report at {files['report_html']}")
        self.study.notify("report", f"{files['report_html']}")

    def _interpretation_tokens(self) -> int:
        """The interpretation's tokens, cut in proportion when less time is left than it should take."""
        latency = self.state.model_latency_s
        if latency is None:
            return INTERPRETATION_TOKENS
        share = (self.study.remaining() - RENDER_S) / (INTERPRETATION_LATENCY_FACTOR * latency)
        return max(0, int(INTERPRETATION_TOKENS * min(1.0, share)))

    def _outcomes(self) -> dict[str, SimulationOutcome]:
        run_dir = self.study.ctx.run_dir
        outcomes = {
            c.name: c.latest_outcome(run_dir) for c in self.state.conditions if c.status == "completed"
        }
        return {name: outcome for name, outcome in outcomes.items() if outcome is not None}

    def _command(self) -> list[str]:
        """The ``sciagent run`` command line of this study (without ``--budget``), to suggest a longer one."""
        ctx, state = self.study.ctx, self.state
        command = ["sciagent", "run"] + ([] if state.goal == DEFAULT_GOAL else [state.goal])
        command += ["--structure", state.structure, "--llm", state.llm_profile, "--site", ctx.site]
        if ctx.max_simulation_time_s:
            command += ["--max-simulation-time", f"{ctx.max_simulation_time_s:g}"]
        if ctx.remove_unknown_residues:
            command.append("--remove-unknown-residues")
        if ctx.guardrails.constrain_hydrogens_above_fs is None:
            command.append("--allow-unconstrained")
        return command

    def _timed(self, phase: str, work: Callable[[], None]) -> None:
        began = time.monotonic()
        try:
            work()
        finally:
            self.state.add_phase_time(phase, time.monotonic() - began)
            self.study.save()
