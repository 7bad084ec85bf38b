"""The md-stability workflow: plan → guardrails → probe → simulate → evaluate → adapt → report.

A model proposes a thermal-stability study; guardrails make it sound and fit it to the budget using a
measured throughput probe; every condition runs on the executor in parallel; each result is evaluated
and, in bounded rounds, adapted (a blow-up gets a model-chosen or fallback fix, a drifting RMSD gets a
longer production, a dead worker a retry); then the report is written. The study's state is saved
after every change and every step is journalled, so ``resume`` continues a run that was killed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sciagent.agent.guardrails import FittedPlan, Throughput, cheaper_plan, fit_to_budget, physical_checks
from sciagent.agent.journal import Journal
from sciagent.agent.policy import DEFAULT_RETRY_LIMITS, Action, RetryLimits, next_action
from sciagent.compute.base import Executor, TaskHandle
from sciagent.compute.errors import TaskError, WorkerLost
from sciagent.errors import UserError
from sciagent.report.models import Adaptation, GuardrailChange
from sciagent.science.md import run_md
from sciagent.science.simulate import SimulationOutcome, simulate_and_analyze
from sciagent.science.spec import MDSpec
from sciagent.science.structures import resolve_structure
from sciagent.workflows import prompts
from sciagent.workflows.adjustments import fallback_adjustment, rescaled_for_timestep
from sciagent.workflows.advisor import ModelAdvisor
from sciagent.workflows.remote_tasks import reattach_remote_tasks, record_remote_ids
from sciagent.workflows.study_report import write_report
from sciagent.workflows.study_schemas import Adjustment, StudyPlan
from sciagent.workflows.study_state import ConditionState, StudyState

log = logging.getLogger(__name__)

DEFAULT_GOAL = (
    "Assess the thermal stability of the villin headpiece at physiological and elevated temperature"
)
PROBE_STEPS = 300
PROBE_COST_S = 20.0  # a probe run: worker start, preparation, minimisation, PROBE_STEPS steps
REPORT_RESERVE_S = 25.0  # analysis is done in the tasks; this covers the interpretation and the report
FALLBACK_PLAN = StudyPlan(
    reference_temperature_k=300,
    elevated_temperatures_k=[400],
    replicas=1,
    timestep_fs=2,
    hydrogen_mass_repartitioning=False,
    constraints="hbonds",
    production_ps=100,
    solvent="implicit",
    rationale="fallback plan (no model answer validated): physiological 300 K and elevated 400 K, "
    "one replica each, 2 fs with H-bond constraints, implicit solvent",
)
Notify = Callable[[str, str], None]  # (phase, message) for the person watching


@dataclass
class StudyContext:
    """The collaborators a study uses; the CLI builds them, tests can build them too."""

    journal: Journal
    advisor: ModelAdvisor
    executor: Executor
    run_dir: Path
    notify: Notify = lambda phase, message: None
    approve: Callable[[str], bool] | None = None
    max_simulation_time_s: float | None = None
    limits: RetryLimits = DEFAULT_RETRY_LIMITS
    remote_root: Path | None = None  # where simulations write on a remote site; None: the run directory
    platform: str = "auto"  # the OpenMM platform the site's workers use

    @property
    def work_root(self) -> Path:
        """The root of the simulations' work directories, as the executing machine sees it."""
        return self.remote_root or self.run_dir


class StabilityStudy:
    """One study, from a fresh start or resumed from its saved state."""

    def __init__(self, state: StudyState, context: StudyContext) -> None:
        self.state = state
        self.ctx = context
        self.deadline = time.monotonic() + state.budget_s
        self._handles: dict[TaskHandle, ConditionState] = {}

    @property
    def state_path(self) -> Path:
        return self.ctx.run_dir / "state.json"

    def run(self) -> Path:
        """Carry the study to its report; return the run directory."""
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        self._save()
        if self.state.fitted is None:
            self._check_budget_covers_the_probe()
            self._timed("plan", self._plan)
            self._timed("probe", self._probe_and_fit)
        self._timed("simulate", self._simulate)
        self._timed("report", self._report)
        return self.ctx.run_dir

    # --- phases -----------------------------------------------------------------------------------
    def _plan(self) -> None:
        resolve_structure(self.state.structure)  # a bad structure fails here, before any model call
        step = self.ctx.journal.start_step(self.state.run_id, "plan", "model proposes the study")
        messages = prompts.plan_messages(self.state.goal, self.state.structure, self.state.budget_s)
        decision = self.ctx.advisor.decide(
            "plan", messages, StudyPlan, lambda: FALLBACK_PLAN, step, tolerate_model_errors=False
        )
        _, changes = physical_checks(decision.value)
        self.state.plan, self.state.plan_source = decision.value, decision.source
        self.state.guardrail_changes = changes
        self._save()
        summary = f"plan from the {decision.source}: {decision.value.describe()}"
        self.ctx.journal.finish_step(step, "completed", summary, decision.value.model_dump(mode="json"))
        self.ctx.notify("plan", summary)

    def _probe_and_fit(self) -> None:
        assert self.state.plan is not None
        plan, _ = physical_checks(self.state.plan)
        step = self.ctx.journal.start_step(self.state.run_id, "probe", f"{PROBE_STEPS}-step throughput probe")
        fitted, changes = self._fit(plan, step)
        self.state.fitted = fitted
        self.state.guardrail_changes += changes
        self.state.conditions = [self._condition(t, r, fitted) for t, r in fitted.conditions]
        self._save()
        summary = (
            f"{self.state.steps_per_s:.0f} steps/s per worker; {len(self.state.conditions)} runs of "
            f"{fitted.production_ps:g} ps, estimated {fitted.estimated_wall_s:.0f} s"
        )
        self.ctx.journal.finish_step(step, "completed", summary, fitted.model_dump(mode="json"))
        for change in self.state.guardrail_changes:
            self.ctx.journal.add_event(
                self.state.run_id, "info", f"guardrail: {change.field}: {change.reason}"
            )
        self.ctx.notify("guardrails", summary)

    def _fit(self, plan: StudyPlan, step: int) -> tuple[FittedPlan, list[GuardrailChange]]:
        """Probe and fit; when even one minimal run does not fit, make the plan cheaper and try again."""
        measured_solvent = None
        while True:
            if plan.solvent != measured_solvent:
                self._check_budget_covers_the_probe()
                self.state.steps_per_s = self._measure_throughput(plan, step)
                measured_solvent = plan.solvent
            throughput = Throughput(
                self.state.steps_per_s or 0.0,
                self.ctx.executor.capacity,
                plan.solvent,
                self.state.run_overhead_s,
            )
            try:
                return fit_to_budget(plan, self._remaining() - REPORT_RESERVE_S, throughput)
            except UserError as exc:
                left = self._remaining() - REPORT_RESERVE_S
                why = (
                    f"{plan.solvent} solvent at {plan.timestep_fs} fs cannot fit one minimal run in the "
                    f"{left:.0f} s left at {throughput.steps_per_s:.0f} steps/s"
                )
                cheaper = cheaper_plan(plan, why)
                if cheaper is None:
                    self.ctx.journal.finish_step(step, "failed", str(exc))
                    raise
                plan, change = cheaper
                self.state.guardrail_changes.append(change)
                self.ctx.notify(
                    "guardrails", f"{change.field}: {change.proposed} → {change.applied} to fit the budget"
                )

    def _measure_throughput(self, plan: StudyPlan, step: int) -> float:
        """Steps/s of one run while every worker is busy, as the real runs will be (the slowest probe)."""
        # The probe measures speed, not stability: safe settings, the same system size and solvent.
        safe = plan.model_copy(update={"constraints": "hbonds", "timestep_fs": 2})
        spec = self._spec(plan.temperatures_k[0], safe, production_steps=PROBE_STEPS, report_interval=100)
        workers = min(self.ctx.executor.capacity, len(plan.temperatures_k) * plan.replicas)
        handles = [
            self.ctx.executor.submit(run_md, spec, self.ctx.work_root / f"probe{i}", task_id=f"probe{i}")
            for i in range(1, workers + 1)
        ]
        results = [self.ctx.executor.result(handle) for handle in handles]
        failed = next((r for r in results if not r.ok or not r.ns_per_day), None)
        if failed is not None:
            self.ctx.journal.finish_step(step, "failed", failed.message)
            raise UserError(f"the throughput probe failed ({failed.failure_class}): {failed.message}")
        steps_per_s = min(r.ns_per_day for r in results) / (spec.timestep_fs * 1e-6 * 86400)
        # What each run spends before stepping (solvating and minimising 9,000 atoms takes tens of seconds).
        self.state.run_overhead_s = max(r.wall_time_s - PROBE_STEPS / steps_per_s for r in results)
        return steps_per_s

    def _check_budget_covers_the_probe(self) -> None:
        if self._remaining() < PROBE_COST_S + REPORT_RESERVE_S:
            raise UserError(
                f"the budget of {self.state.budget_s:.0f} s is too small for even the throughput probe "
                f"(about {PROBE_COST_S + REPORT_RESERVE_S:.0f} s with the report): raise --budget"
            )

    def _simulate(self) -> None:
        step = self.ctx.journal.start_step(self.state.run_id, "simulate", "run every condition")
        waiting = [c for c in self.state.conditions if c.status in ("pending", "running")]
        for condition in self.state.conditions:
            if condition.status == "completed" and condition.stored_outcome(self.ctx.run_dir) is None:
                waiting.append(condition)  # its files are gone: run it again
        if waiting and not self._approved(waiting, "start"):
            for condition in waiting:
                self._finish(condition, "not run", "the user declined the batch")
            waiting = []
        settled = self._settle_finished_attempts([c for c in waiting if c.status == "running"])
        reattached = self._reattach([c for c in waiting if c.status == "running" and c not in settled])
        for condition in waiting:
            if condition not in reattached and condition not in settled:
                self._submit(condition, resumed=condition.status == "running")
        while self._handles:
            finished = self.ctx.executor.wait_any(list(self._handles), timeout=5.0)
            self._record_remote_ids()
            for handle in finished:
                self._collect(handle)
        done = sum(c.status == "completed" for c in self.state.conditions)
        self.ctx.journal.finish_step(step, "completed", f"{done} of {len(self.state.conditions)} completed")

    def _report(self) -> None:
        step = self.ctx.journal.start_step(self.state.run_id, "report", "interpret and write the report")
        files = write_report(self.state, self.ctx, step)
        for kind, path in files.items():
            self.ctx.journal.add_artifact(self.state.run_id, kind, str(path))
        self.ctx.journal.finish_step(step, "completed", f"report at {files['report_html']}")
        self.ctx.notify("report", f"{files['report_html']}")

    # --- conditions -------------------------------------------------------------------------------
    def _submit(self, condition: ConditionState, resumed: bool = False) -> None:
        journal, run_id = self.ctx.journal, self.state.run_id
        if not resumed:
            condition.attempts += 1
        wall = self._remaining() - REPORT_RESERVE_S
        if self.ctx.max_simulation_time_s:
            wall = min(wall, self.ctx.max_simulation_time_s)
        condition.spec = condition.spec.model_copy(update={"max_wall_time_s": max(1.0, wall)})
        existing = journal.find_task(run_id, condition.task_key)
        if existing is None:
            task_id = journal.add_task(
                run_id, condition.task_key, condition.spec.model_dump(mode="json"), self.ctx.executor.name
            )
        else:
            task_id = existing.id
        journal.update_task(task_id, status="running", attempts=(existing.attempts + 1) if existing else 1)
        workdir = condition.workdir(self.ctx.work_root)
        handle = self.ctx.executor.submit(
            simulate_and_analyze, condition.spec, workdir, task_id=condition.task_key, timeout_s=wall + 300
        )
        self._handles[handle] = condition
        condition.status = "running"
        self._save()
        self.ctx.notify("simulate", f"{condition.task_key} started ({condition.temperature_k:g} K)")

    def _reattach(self, running: list[ConditionState]) -> list[ConditionState]:
        picked = reattach_remote_tasks(self.ctx.executor, self.ctx.journal, self.state, running)
        for handle, condition in picked.items():
            self._handles[handle] = condition
            self.ctx.notify("simulate", f"{handle.task_id} re-attached on {self.ctx.executor.name}")
        return list(picked.values())

    def _record_remote_ids(self) -> None:
        if record_remote_ids(self.ctx.executor, self.ctx.journal, self.state, self._handles):
            self._save()

    def _collect(self, handle: TaskHandle) -> None:
        condition = self._handles.pop(handle)
        outcome, worker_lost, error = None, False, None
        try:
            outcome = self.ctx.executor.result(handle)
        except WorkerLost as exc:
            worker_lost, error = True, str(exc)
        except TaskError as exc:
            error = str(exc)
        if outcome is not None:
            condition.save_outcome(self.ctx.run_dir, outcome)
        self._journal_attempt(condition, outcome, error)
        self._decide(condition, outcome, worker_lost, error)

    def _settle_finished_attempts(self, running: list[ConditionState]) -> list[ConditionState]:
        """On resume: an attempt the journal saw finish (its outcome kept) is decided on, not run again.

        A run killed between journalling a result and saving the study state leaves such a condition.
        """
        settled = []
        for condition in running:
            task = self.ctx.journal.find_task(self.state.run_id, condition.task_key)
            outcome = condition.stored_outcome(self.ctx.run_dir)
            if task is not None and task.status in ("completed", "failed") and outcome is not None:
                settled.append(condition)
                self._decide(condition, outcome, worker_lost=False, error=None)
        return settled

    def _decide(
        self,
        condition: ConditionState,
        outcome: SimulationOutcome | None,
        worker_lost: bool,
        error: str | None,
    ) -> None:
        """Apply the retry policy to one attempt's result."""
        action = next_action(outcome, worker_lost=worker_lost)
        error = error or (outcome.result.message if outcome else None)
        {
            Action.ACCEPT: lambda: self._finish(condition, "completed"),
            Action.EXTEND: lambda: self._extend(condition),
            Action.ADAPT: lambda: self._adapt(condition, error or ""),
            Action.RETRY: lambda: self._retry(condition, error or ""),
            Action.STOP: lambda: self._finish(condition, "failed", error),
        }[action]()

    def _journal_attempt(
        self, condition: ConditionState, outcome: SimulationOutcome | None, error: str | None
    ) -> None:
        task = self.ctx.journal.find_task(self.state.run_id, condition.task_key)
        if task is None:
            return
        ok = outcome is not None and outcome.result.ok
        self.ctx.journal.update_task(
            task.id,
            status="completed" if ok else "failed",
            result_path=outcome.result.workdir if outcome else None,
            error=None if ok else (error or (outcome.result.message if outcome else "unknown")),
        )
        verdict = outcome.analysis.assessment.verdict if outcome and outcome.analysis else None
        status = "completed" if ok else f"failed ({error or outcome.result.failure_class if outcome else ''})"
        self.ctx.notify("simulate", f"{condition.task_key} {status}" + (f", {verdict}" if verdict else ""))

    def _extend(self, condition: ConditionState) -> None:
        fitted = self.state.fitted
        assert fitted is not None and self.state.steps_per_s
        extra = fitted.production_steps
        needed = extra / self.state.steps_per_s + 10.0
        if (
            condition.extensions >= self.ctx.limits.extensions
            or needed > self._remaining() - REPORT_RESERVE_S
        ):
            self.ctx.journal.add_event(
                self.state.run_id,
                "info",
                f"{condition.name}: still drifting, not extended: no budget or extension already used",
            )
            self._finish(condition, "completed")
            return
        condition.extensions += 1
        production = condition.spec.production_steps + extra
        self._record_adaptation(
            condition,
            "inconclusive",
            None,
            "policy",
            {"production_steps": production},
            "backbone RMSD still drifting at the end: production extended",
        )
        condition.spec = condition.spec.model_copy(update={"production_steps": production})
        self._resubmit(condition)

    def _adapt(self, condition: ConditionState, error: str) -> None:
        if condition.adaptation_rounds >= self.ctx.limits.adaptation_rounds:
            self._finish(
                condition,
                "failed",
                f"still unstable after {condition.adaptation_rounds} adjustments: {error}",
            )
            return
        condition.adaptation_rounds += 1
        messages = prompts.adjustment_messages(
            condition.task_key, error, condition.spec.model_dump(mode="json")
        )
        decision = self.ctx.advisor.decide(
            "adjust", messages, Adjustment, lambda: fallback_adjustment(condition.spec)
        )
        adjustment = decision.value
        changes = {
            "timestep_fs": float(adjustment.timestep_fs),
            "constraints": adjustment.constraints,
            "minimize": adjustment.minimize,
        }
        self._record_adaptation(
            condition, "instability", error, decision.source, changes, adjustment.rationale
        )
        affordable = int((self._remaining() - REPORT_RESERVE_S - 10.0) * (self.state.steps_per_s or 0))
        condition.spec = condition.spec.model_copy(
            update=rescaled_for_timestep(condition.spec, changes, affordable)
        )
        condition.lineage += 1
        self._resubmit(condition)

    def _retry(self, condition: ConditionState, error: str) -> None:
        if condition.transient_retries >= self.ctx.limits.transient_retries:
            self._finish(condition, "failed", f"failed {condition.transient_retries + 1} times: {error}")
            return
        condition.transient_retries += 1
        delay = self.ctx.limits.backoff_s(condition.transient_retries)
        self._record_adaptation(
            condition,
            "transient",
            error,
            "policy",
            {"retry_after_s": delay},
            "the worker or platform failed: the same run continues from its checkpoint",
        )
        time.sleep(delay)
        self._resubmit(condition)

    def _resubmit(self, condition: ConditionState) -> None:
        if self._approved([condition], "adapt"):
            self._submit(condition)
        else:
            self._finish(condition, "not run", "the user declined the adapted run")

    def _finish(self, condition: ConditionState, status: str, failure: str | None = None) -> None:
        condition.status, condition.failure = status, failure  # type: ignore[assignment]
        self._save()

    def _record_adaptation(
        self,
        condition: ConditionState,
        trigger: str,
        error: str | None,
        decided_by: str,
        changes: dict,
        why: str | None,
    ) -> None:
        adaptation = Adaptation(
            condition=condition.name,
            round=len([a for a in self.state.adaptations if a.condition == condition.name]) + 1,
            trigger=trigger,
            error=error,
            decided_by=decided_by,
            changes=changes,
            rationale=why,
        )
        self.state.adaptations.append(adaptation)
        self.ctx.journal.add_event(
            self.state.run_id,
            "warning" if trigger != "inconclusive" else "info",
            f"adapt {condition.name} ({trigger}, decided by {decided_by}): {changes}",
            adaptation.model_dump(mode="json"),
        )
        self.ctx.notify("adapt", f"{condition.name}: {trigger} → {changes} ({decided_by})")
        self._save()

    # --- helpers ----------------------------------------------------------------------------------
    def _condition(self, temperature: float, replica: int, fitted: FittedPlan) -> ConditionState:
        spec = self._spec(
            temperature,
            fitted,
            production_steps=fitted.production_steps,
            report_interval=fitted.report_interval,
            equilibration_steps=fitted.equilibration_steps,
            seed=replica,
        )
        return ConditionState(
            name=f"T{temperature:g}-r{replica}", temperature_k=temperature, replica=replica, spec=spec
        )

    def _spec(self, temperature: float, plan: StudyPlan | FittedPlan, **fields: object) -> MDSpec:
        hmr = (
            plan.hydrogen_mass_amu
            if isinstance(plan, FittedPlan)
            else (3.0 if plan.hydrogen_mass_repartitioning else None)
        )
        threads = getattr(self.ctx.executor, "threads_per_worker", None)
        return MDSpec(
            structure=self.state.structure,
            temperature_k=float(temperature),
            timestep_fs=float(plan.timestep_fs),
            hydrogen_mass_amu=hmr,
            constraints=plan.constraints,
            solvent=plan.solvent,
            platform=self.ctx.platform,
            cpu_threads=threads,
            minimize_max_iterations=500,
            **fields,
        )

    def _approved(self, conditions: list[ConditionState], batch: str) -> bool:
        if self.ctx.approve is None:
            return True
        fitted = self.state.fitted
        steps = sum(c.spec.total_steps for c in conditions)
        estimate = (
            steps / self.state.steps_per_s / max(1, self.ctx.executor.capacity)
            if self.state.steps_per_s
            else 0
        )
        names = ", ".join(c.name for c in conditions)
        detail = f"{fitted.production_ps:g} ps each, " if fitted and batch == "start" else ""
        return self.ctx.approve(
            f"Run {len(conditions)} simulation(s) [{names}]: {detail}about {estimate:.0f} s?"
        )

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _timed(self, phase: str, work: Callable[[], None]) -> None:
        began = time.monotonic()
        try:
            work()
        finally:
            self.state.add_phase_time(phase, time.monotonic() - began)
            self._save()

    def _save(self) -> None:
        self.state.save(self.state_path)
