"""The simulate phase: carry every condition to a final status, adapting each in bounded rounds.

Conditions run in parallel on the executor, at most as many at once as it has workers, each with a
production deadline set when it is submitted (``workflows/study/pacing.py``): production runs until
the deadline or the plan's maximum, so the budget goes to science rather than to a guessed length.
While they run, each local run's speed is read from its state CSV (``live_speed.py``); when the live
estimate says a run will not reach the production a verdict needs by its deadline, conditions are
dropped in the fit's order (replicas, then the mildest elevated temperature, never below
``Limits.min_conditions``), recorded as a guardrail change with the numbers (``live_drops.py``).

Each result is decided on as it arrives (the retry policy in ``workflows/study/policy.py``):
accepted, extended (short of a verdict, while the time left allows), adapted (blew up: the model's fix
or the documented fallback), retried (the worker was lost; scheduled, so a backoff never holds up
collecting the other runs) or stopped. Every submission and result is journalled and the state saved, so a run
killed at any moment resumes: a finished attempt is decided on, an interrupted one continues from its
checkpoint in the same work directory, a remote one is re-attached.

A stop request (``workflows/study/stopping.py``) ends the phase cleanly: nothing new is submitted, the
running simulations checkpoint at their current step and come back within one report interval, and
they are recorded as interrupted (no failed attempt, no adaptation, no retry counted); then
``StudyStopped`` is raised, and a resume continues each from its checkpoint.
"""

from __future__ import annotations

import time

from sciagent.agent.approvals import journalled_approval
from sciagent.compute.base import TaskHandle
from sciagent.compute.errors import TaskError, WorkerLost
from sciagent.errors import StudyStopped
from sciagent.report.models import Adaptation
from sciagent.science.simulate import SimulationOutcome, simulate_and_analyze
from sciagent.workflows.study import prompts
from sciagent.workflows.study.adjustments import fallback_adjustment, rescaled_for_timestep
from sciagent.workflows.study.context import Study
from sciagent.workflows.study.guardrails import Allowance, Throughput, affordable_steps
from sciagent.workflows.study.live_drops import SpeedWatch, next_drop
from sciagent.workflows.study.pacing import (
    ANALYSIS_ESTIMATE_S,
    ExtensionCase,
    measured_steps_per_s,
    needed_ps,
    production_share_s,
)
from sciagent.workflows.study.policy import Action, next_action
from sciagent.workflows.study.remote_tasks import reattach_remote_tasks, record_remote_ids
from sciagent.workflows.study.schemas import Adjustment
from sciagent.workflows.study.state import ConditionState
from sciagent.workflows.study.stopping import stop_reason

_WAIT_S = 5.0  # longest wait for results before checking on scheduled retries and remote ids
_TASK_TIMEOUT_SLACK_S = 300.0  # the executor's hard limit beyond the run's own clean wall-time stop


class ConditionRunner:
    """Runs the study's conditions to completed, failed or not run."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self._handles: dict[TaskHandle, ConditionState] = {}
        self._scheduled: list[tuple[float, ConditionState]] = []  # (monotonic time due, condition)
        self._stopping: str | None = None  # the stop request's reason, once seen: no decisions after it
        self._queue: list[tuple[ConditionState, bool]] = []  # (condition, resumed) waiting for a worker
        self._watch = SpeedWatch()
        self._analysis_s: float | None = None  # the longest analysis a run of this study measured
        self._speeds: dict[str, float] = {}  # production steps/s each condition measured on itself

    def run(self) -> None:
        state, journal = self.study.state, self.study.ctx.journal
        step = journal.start_step(state.run_id, "simulate", "run every condition")
        waiting = [c for c in state.conditions if c.status in ("pending", "running")]
        for condition in state.conditions:
            if condition.status == "completed" and condition.stored_outcome(self.study.ctx.run_dir) is None:
                waiting.append(condition)  # its files are gone: run it again
        if waiting and not self._approved(waiting, "start"):
            for condition in waiting:
                self._finish(condition, "not run", "the user declined the batch")
            waiting = []
        if self._stop_requested():
            self._stop(step)
        self._recall_measurements()
        settled = self._settle_finished_attempts([c for c in waiting if c.status == "running"])
        reattached = self._reattach([c for c in waiting if c.status == "running" and c not in settled])
        for condition in waiting:
            if condition not in reattached and condition not in settled and condition in state.conditions:
                self._queue.append((condition, condition.status == "running"))
        if self.study.ctx.remote_root is not None:
            journal.add_event(state.run_id, "info", "no live speed on a remote site (its files are not "
                              "here): conditions are not dropped while they run")  # fmt: skip
        while self._handles or ((self._scheduled or self._queue) and not self._stop_requested()):
            if not self._stop_requested():
                self._submit_due_retries()
                self._fill()
            if not self._handles:
                time.sleep(self._wait_s())
                continue
            finished = self.study.ctx.executor.wait_any(list(self._handles), timeout=self._wait_s())
            if record_remote_ids(self.study.ctx.executor, journal, state, self._handles):
                self.study.save()
            for handle in finished:
                self._collect(handle)
            if not self._stop_requested():
                self._watch_speed()
        if self._stop_requested():
            self._stop(step)
        done = sum(c.status == "completed" for c in state.conditions)
        journal.finish_step(step, "completed", f"{done} of {len(state.conditions)} completed")

    # --- submitting -------------------------------------------------------------------------------
    def _fill(self) -> None:
        """Submit waiting conditions while a worker is free: a queued run's deadline starts when it does."""
        while self._queue and len(self._handles) < max(1, self.study.ctx.executor.capacity):
            condition, resumed = self._queue.pop(0)
            self._submit(condition, resumed)

    def _share_s(self, extra: int = 0) -> float:
        """Production seconds a run submitted now gets (``extra``: runs not yet counted anywhere)."""
        runs_left = len(self._handles) + len(self._queue) + len(self._scheduled) + extra
        return production_share_s(
            self.study.runs_allowance(),
            self._analysis_s if self._analysis_s is not None else ANALYSIS_ESTIMATE_S,
            runs_left,
            self.study.ctx.executor.capacity,
            self.study.ctx.max_simulation_time_s,
        )

    def _submit(self, condition: ConditionState, resumed: bool = False) -> None:
        ctx, run_id = self.study.ctx, self.study.state.run_id
        if not resumed:
            condition.attempts += 1
        share = self._share_s(extra=1)
        wall = self.study.runs_allowance()  # the safety net: the deadline ends production before it
        if ctx.max_simulation_time_s:
            wall = min(wall, ctx.max_simulation_time_s)
        update = {
            "max_wall_time_s": max(1.0, wall),
            "stop_file": ctx.stop_file,
            "production_deadline_unix": time.time() + share,
        }
        condition.spec = condition.spec.model_copy(update=update)
        self._watch.forget(condition.name)
        existing = ctx.journal.find_task(run_id, condition.task_key)
        if existing is None:
            spec = condition.spec.model_dump(mode="json")
            task_id = ctx.journal.add_task(run_id, condition.task_key, spec, ctx.executor.name)
        else:
            task_id = existing.id
        ctx.journal.update_task(
            task_id, status="running", attempts=(existing.attempts + 1) if existing else 1
        )
        handle = ctx.executor.submit(
            simulate_and_analyze,
            condition.spec,
            condition.workdir(ctx.work_root),
            task_id=condition.task_key,
            timeout_s=wall + _TASK_TIMEOUT_SLACK_S,
        )
        self._handles[handle] = condition
        condition.status = "running"
        self.study.save()
        self.study.notify(
            "simulate",
            f"{condition.task_key} started ({condition.temperature_k:g} K): production until "
            f"{share:.0f} s from now or {condition.spec.production_steps} steps",
        )

    def _submit_due_retries(self) -> None:
        now = time.monotonic()
        due = [condition for when, condition in self._scheduled if when <= now]
        self._scheduled = [(when, c) for when, c in self._scheduled if when > now]
        for condition in due:
            self._resubmit(condition)
        self._fill()

    def _wait_s(self) -> float:
        if not self._scheduled:
            return _WAIT_S
        return max(0.05, min(_WAIT_S, min(due for due, _ in self._scheduled) - time.monotonic()))

    def _reattach(self, running: list[ConditionState]) -> list[ConditionState]:
        ctx = self.study.ctx
        picked = reattach_remote_tasks(ctx.executor, ctx.journal, self.study.state, running)
        for handle, condition in picked.items():
            self._handles[handle] = condition
            self.study.notify("simulate", f"{handle.task_id} re-attached on {ctx.executor.name}")
        return list(picked.values())

    # --- live speed -------------------------------------------------------------------------------
    def _watch_speed(self) -> None:
        """Drop conditions when the live speed says a running one falls short of a verdict."""
        ctx = self.study.ctx
        if ctx.remote_root is not None:
            return  # the state CSVs are on the remote site
        why = self._watch.short_of_a_verdict(list(self._handles.values()), ctx.work_root, ctx.guardrails)
        if why is not None and self._drop(why):
            self._watch.clear()

    def _drop(self, why: str) -> bool:
        """Drop one step of conditions in the fit's order (running ones are cancelled: their runs are
        not used); return whether any was dropped."""
        state, ctx = self.study.state, self.study.ctx
        drop = next_drop(state, ctx.guardrails, why)
        if drop is None:
            return False
        for condition in drop.conditions:
            self._withdraw(condition, why)
        state.fitted = drop.fitted
        state.conditions = [c for c in state.conditions if c not in drop.conditions]
        state.guardrail_changes.append(drop.change)
        self.study.save()
        ctx.journal.add_event(state.run_id, "warning", f"guardrail: conditions: {drop.change.reason}",
                              drop.change.model_dump(mode="json"))  # fmt: skip
        self.study.notify("guardrails", f"dropped {', '.join(c.name for c in drop.conditions)}: {why}")
        return True

    def _withdraw(self, condition: ConditionState, why: str) -> None:
        """Take a dropped condition out of the queue, the retries and the workers."""
        ctx = self.study.ctx
        self._queue = [(c, r) for c, r in self._queue if c is not condition]
        self._scheduled = [(w, c) for w, c in self._scheduled if c is not condition]
        for handle, running in list(self._handles.items()):
            if running is condition:
                ctx.executor.cancel(handle)
                del self._handles[handle]
        task = ctx.journal.find_task(self.study.state.run_id, condition.task_key)
        if task is not None and task.status in ("pending", "running"):
            ctx.journal.update_task(task.id, status="cancelled", error=f"dropped: {why}")

    # --- stopping ---------------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        if self._stopping is None:
            self._stopping = stop_reason(self.study.ctx.run_dir)
        return self._stopping is not None

    def _stop(self, step: int) -> None:
        """Every running simulation has come back: save where the study is, and end the phase."""
        assert self._stopping is not None
        self._scheduled = []  # still "pending" in the state: a resume submits them
        self.study.save()
        self.study.ctx.journal.finish_step(step, "failed", f"interrupted: {self._stopping}")
        raise StudyStopped(self._stopping)

    def _hold(self, condition: ConditionState, outcome: SimulationOutcome | None, error: str | None) -> None:
        """An attempt that came back while stopping: left for the resume, never decided on now.

        A finished one is journalled with its outcome (the resume settles it, as after a kill); one the
        stop interrupted, or whose worker the stop took down, is neither a failure nor a retry: its task
        goes back to pending and it continues from its checkpoint when the run resumes.
        """
        if outcome is not None and outcome.result.failure_class != "stopped":
            condition.save_outcome(self.study.ctx.run_dir, outcome)
            self._journal_attempt(condition, outcome, error)
            return
        why = outcome.result.message if outcome else f"{error} (while stopping)"
        task = self.study.ctx.journal.find_task(self.study.state.run_id, condition.task_key)
        if task is not None:
            self.study.ctx.journal.update_task(task.id, status="pending", error=why)
        self.study.save()
        self.study.notify("simulate", f"{condition.task_key} interrupted: {why}")

    # --- results ----------------------------------------------------------------------------------
    def _collect(self, handle: TaskHandle) -> None:
        condition = self._handles.pop(handle)
        outcome, worker_lost, error = None, False, None
        try:
            outcome = self.study.ctx.executor.result(handle)
        except WorkerLost as exc:
            worker_lost, error = True, str(exc)
        except TaskError as exc:
            error = str(exc)
        if outcome is not None and outcome.result.failure_class == "stopped":
            self._stopping = self._stopping or stop_reason(self.study.ctx.run_dir) or outcome.result.message
        if self._stopping is not None:
            self._hold(condition, outcome, error)
            return
        if outcome is not None:
            condition.save_outcome(self.study.ctx.run_dir, outcome)
            self._measured(condition, outcome)
        self._journal_attempt(condition, outcome, error)
        self._decide(condition, outcome, worker_lost, error)

    def _measured(self, condition: ConditionState, outcome: SimulationOutcome) -> None:
        """Keep what a run measured on itself: its production speed and its analysis time."""
        speed = measured_steps_per_s(outcome)
        if speed:
            self._speeds[condition.name] = speed
        if outcome.analysis_s is not None:
            self._analysis_s = max(self._analysis_s or 0.0, outcome.analysis_s)

    def _recall_measurements(self) -> None:
        """On resume: what the runs that already came back measured."""
        for condition in self.study.state.conditions:
            outcome = condition.latest_outcome(self.study.ctx.run_dir)
            if outcome is not None:
                self._measured(condition, outcome)

    def _settle_finished_attempts(self, running: list[ConditionState]) -> list[ConditionState]:
        """On resume: an attempt the journal saw finish (its outcome kept) is decided on, not run again.

        A run killed between journalling a result and saving the study state leaves such a condition.
        """
        settled = []
        for condition in running:
            task = self.study.ctx.journal.find_task(self.study.state.run_id, condition.task_key)
            outcome = condition.stored_outcome(self.study.ctx.run_dir)
            if task is not None and task.status in ("completed", "failed") and outcome is not None:
                settled.append(condition)
                self.study.notify("simulate", f"{condition.task_key} had finished: settled, not rerun")
                self._measured(condition, outcome)
                self._decide(condition, outcome, worker_lost=False, error=None)
        return settled

    def _journal_attempt(
        self, condition: ConditionState, outcome: SimulationOutcome | None, error: str | None
    ) -> None:
        journal = self.study.ctx.journal
        task = journal.find_task(self.study.state.run_id, condition.task_key)
        ok = outcome is not None and outcome.result.ok
        error = None if ok else (error or (outcome.result.message if outcome else "unknown"))
        if task is not None:
            result_path = outcome.result.workdir if outcome else None
            status = "completed" if ok else "failed"
            journal.update_task(task.id, status=status, result_path=result_path, error=error)
        verdict = outcome.analysis.assessment.verdict if outcome and outcome.analysis else None
        cause = outcome.result.failure_class if outcome and outcome.result.failure_class else error
        status_text = "completed" if ok else f"failed ({cause})"
        self.study.notify(
            "simulate", f"{condition.task_key} {status_text}" + (f", {verdict}" if verdict else "")
        )

    def _decide(
        self,
        condition: ConditionState,
        outcome: SimulationOutcome | None,
        worker_lost: bool,
        error: str | None,
    ) -> None:
        """Apply the retry policy to one attempt's result."""
        action = next_action(outcome, worker_lost=worker_lost)
        error = error or (outcome.result.message if outcome else None) or ""
        if action is Action.ACCEPT:
            self._finish(condition, "completed")
        elif action is Action.EXTEND:
            assert outcome is not None  # only a completed, analysed run is extended
            self._extend(condition, outcome)
        elif action is Action.ADAPT:
            self._adapt(condition, error)
        elif action is Action.RETRY:
            self._retry(condition, error)
        else:
            self._finish(condition, "failed", error)

    # --- second chances ---------------------------------------------------------------------------
    def _extend(self, condition: ConditionState, outcome: SimulationOutcome) -> None:
        """Continue a run short of a verdict when the time really left, at the speed measured on that
        run and less what resuming it costs, adds what it needs; say why not, with the numbers."""
        state, limits = self.study.state, self.study.ctx.limits
        assert state.fitted is not None
        result = outcome.result
        case = ExtensionCase(
            left_s=self._share_s(extra=1),
            resume_s=result.timings_s.get("setup", 0.0),
            steps_per_s=measured_steps_per_s(outcome),
            timestep_fs=result.spec.timestep_fs,
            needed_ps=needed_ps(outcome, self.study.ctx.guardrails.min_production_ps),
        )
        if condition.extensions >= limits.extensions or not case.granted:
            why = "extension already used" if condition.extensions >= limits.extensions else case.describe()
            self.study.ctx.journal.add_event(
                state.run_id, "info", f"{condition.name}: no verdict yet, not extended: {why}"
            )
            self._finish(condition, "completed")
            return
        condition.extensions += 1
        production = result.production_steps_completed + state.fitted.max_steps
        why = f"no verdict yet (too short or still drifting): extended to its deadline: {case.describe()}"
        self._record_adaptation(
            condition, "inconclusive", None, "policy", {"production_steps": production}, why
        )
        condition.spec = condition.spec.model_copy(update={"production_steps": production})
        self._resubmit(condition)

    def _adapt(self, condition: ConditionState, error: str) -> None:
        if condition.adaptation_rounds >= self.study.ctx.limits.adaptation_rounds:
            rounds = condition.adaptation_rounds
            self._finish(condition, "failed", f"still unstable after {rounds} adjustment(s): {error}")
            return
        condition.adaptation_rounds += 1
        messages = prompts.adjustment_messages(
            condition.task_key, error, condition.spec.model_dump(mode="json")
        )
        decision = self.study.ctx.advisor.decide(
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
        affordable = self._affordable_steps(condition)
        unbounded = affordable is None  # no speed measured yet: the deadline alone bounds it
        update = rescaled_for_timestep(condition.spec, changes, 2**31 - 1 if unbounded else affordable)
        if update is None:
            why = f"no budget left for the adjusted run ({affordable} steps affordable): {error}"
            self._finish(condition, "failed", why)
            return
        condition.spec = condition.spec.model_copy(update=update)
        condition.lineage += 1
        self._resubmit(condition)

    def _affordable_steps(self, condition: ConditionState) -> int | None:
        """Steps one more run of ``condition`` can take in its share of what is left, at the speed it
        measured (live, or on a finished production), else the study's; None: no speed is known yet
        (its deadline bounds it)."""
        share = self._share_s(extra=1)
        speed = self._speeds.get(condition.name) or self._watch.rate(condition.name) or self._speed()
        if share <= 0:
            return 0
        if speed is None:
            return None
        throughput = Throughput(speed, 1, condition.spec.solvent)
        return affordable_steps(Allowance(share), 1, throughput, self.study.ctx.guardrails)

    def _speed(self) -> float | None:
        """The slowest production speed the runs measured on themselves, else the plan's (the probe's
        or the speed book's)."""
        if self._speeds:
            return min(self._speeds.values())
        throughput = self.study.state.throughput
        return throughput.steps_per_s if throughput else None

    def _retry(self, condition: ConditionState, error: str) -> None:
        limits = self.study.ctx.limits
        if condition.transient_retries >= limits.transient_retries:
            self._finish(condition, "failed", f"failed {condition.transient_retries + 1} times: {error}")
            return
        condition.transient_retries += 1
        delay = limits.backoff_s(condition.transient_retries)
        why = "the worker or platform failed: the same run continues from its checkpoint"
        self._record_adaptation(condition, "transient", error, "policy", {"retry_after_s": delay}, why)
        condition.status = "pending"
        self.study.save()
        self._scheduled.append((time.monotonic() + delay, condition))

    def _resubmit(self, condition: ConditionState) -> None:
        if self._approved([condition], "adapt"):
            condition.status = "pending"
            self._queue.append((condition, False))
        else:
            self._finish(condition, "not run", "the user declined the adapted run")

    def _finish(self, condition: ConditionState, status: str, failure: str | None = None) -> None:
        condition.status, condition.failure = status, failure  # type: ignore[assignment]
        self.study.save()

    def _record_adaptation(
        self,
        condition: ConditionState,
        trigger: str,
        error: str | None,
        decided_by: str,
        changes: dict,
        why: str | None,
    ) -> None:
        state = self.study.state
        adaptation = Adaptation(
            condition=condition.name,
            round=len([a for a in state.adaptations if a.condition == condition.name]) + 1,
            trigger=trigger,
            error=error,
            decided_by=decided_by,
            changes=changes,
            rationale=why,
        )
        state.adaptations.append(adaptation)
        self.study.ctx.journal.add_event(
            state.run_id,
            "warning" if trigger != "inconclusive" else "info",
            f"adapt {condition.name} ({trigger}, decided by {decided_by}): {changes}",
            adaptation.model_dump(mode="json"),
        )
        self.study.notify("adapt", f"{condition.name}: {trigger} → {changes} ({decided_by})")
        self.study.save()

    def _approved(self, conditions: list[ConditionState], batch: str) -> bool:
        approve = self.study.ctx.approve
        if approve is None:
            return True
        state = self.study.state
        speed = self._speed()
        steps = sum(c.spec.total_steps for c in conditions)
        workers = max(1, self.study.ctx.executor.capacity)
        longest = self.study.runs_allowance()
        estimate = f"at most {min(longest, steps / speed / workers):.0f} s" if speed else "time unknown"
        names = ", ".join(c.name for c in conditions)
        fitted = state.fitted
        detail = (
            f"up to {fitted.max_production_ps:g} ps each (about {fitted.production_ps:g} expected), "
            if fitted and batch == "start"
            else ""
        )
        question = f"Run {len(conditions)} simulation(s) [{names}]: {detail}{estimate}?"
        return journalled_approval(self.study.ctx.journal, state.run_id, question, approve)
