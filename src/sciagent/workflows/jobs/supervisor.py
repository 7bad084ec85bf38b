"""One batch job of a run, owned by one process: the model server, the study, the walltime, the teardown.

``sciagent job run --spec PATH`` is what the job script execs, so this process is the job's batch
process and receives the scheduler's signals. It

- splits the node: the model server gets the first ``--llm-devices`` GPUs (or CPU threads), the
  simulations the rest (``devices.split_node``);
- starts the model server and holds it to a two-stage health gate; a failure puts the server's log tail
  in the journal and either switches to the fallback profile (checked reachable first) or ends the job
  with the reason. A continuation, whose plan is fixed, starts its simulations while the model loads;
- runs the study in the journal (starting the queued run, or resuming it);
- stops the study a margin before the allocation ends (the scheduler's own end time), or at the
  scheduler's signal, so its simulations checkpoint at their current step; then submits a dependent
  continuation sized from what is left, up to ``max_continuations``;
- stops every child at the end and on any signal, and records the job's allocation (what every device
  did) in the journal and in the report's allocation table.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

from sciagent.agent.journal import Journal
from sciagent.agent.steps import Budget
from sciagent.compute.sites import SiteConfig, resolve_site
from sciagent.config import Settings
from sciagent.errors import SciagentError, StudyStopped, Terminated
from sciagent.llm.base import ChatModel
from sciagent.llm.embedded import bundled_model_path
from sciagent.llm.profiles import make_model
from sciagent.report.models import JobAllocation
from sciagent.report.render import load_record, render_report
from sciagent.workflows.jobs.allocation import JobClock, job_allocation, segments
from sciagent.workflows.jobs.children import stop_descendants
from sciagent.workflows.jobs.continuation import (
    continuation_walltime,
    remaining_simulation_s,
    submit_continuation,
)
from sciagent.workflows.jobs.devices import NodeSplit, pin, split_node
from sciagent.workflows.jobs.model_server import (
    SERVED_PROFILE,
    HealthGateFailed,
    ServedModel,
    check_reachable,
    serve_model,
)
from sciagent.workflows.jobs.pending_model import ModelWhenReady
from sciagent.workflows.jobs.records import jobs_of, record_ended, record_started, record_submitted
from sciagent.workflows.jobs.spec import JobSpec
from sciagent.workflows.jobs.walltime import current_job_id, job_end_time, stop_margin_s
from sciagent.workflows.sessions.ask import AskOptions, ask
from sciagent.workflows.sessions.ask import resume as resume_session
from sciagent.workflows.study.context import Notify
from sciagent.workflows.study.runner import JOURNAL_FILE, RunOptions, StudyRun, resume_study, start_study
from sciagent.workflows.study.state import StudyState
from sciagent.workflows.study.stopping import request_stop

NODE_SITE = "job-node"  # the simulations' site inside the job: this node's devices left by the model
# A simulation asked to stop checkpoints at its next report (a fraction of a minute in a study's runs);
# then the study saves its state and the next job is submitted.
REPORT_WAIT_S, STOP_S = 30.0, 15.0
SIGNAL_REASONS = {
    signal.SIGUSR1: "the scheduler's warning before the walltime (SIGUSR1): stopped to continue later",
    signal.SIGTERM: "SIGTERM from the scheduler (the walltime, or the job was cancelled)",
    signal.SIGINT: "interrupted (SIGINT)",
}
INTERRUPT = signal.SIGUSR2  # sent to our own main thread to interrupt a session at a stop
STOP_SIGNALS = (*SIGNAL_REASONS, INTERRUPT)


@dataclass(frozen=True)
class JobEnd:
    """How the job ended: the exit code for the scheduler and one line for its log."""

    exit_code: int
    message: str


def run_job(spec_path: Path, settings: Settings, notify: Notify) -> JobEnd:
    """Carry one job of a run (see the module's docstring); never leaves a child running."""
    spec = JobSpec.load(spec_path)
    with Journal(spec.workspace / JOURNAL_FILE) as journal:
        return Supervisor(spec, settings, journal, notify).run()


class Supervisor:
    """The job's one owner; ``run`` is its whole life."""

    def __init__(self, spec: JobSpec, settings: Settings, journal: Journal, notify: Notify) -> None:
        self.spec, self.settings, self.journal, self.notify = spec, settings, journal, notify
        self.site: SiteConfig = resolve_site(spec.site, settings.sites)
        self.job_id = current_job_id() or f"local-{os.getpid()}"  # `sciagent job run` outside a batch job
        self.clock = JobClock()
        self.split: NodeSplit | None = None
        self.served: ServedModel | None = None
        self.stop_reason: str | None = None
        self.model_failure: str | None = None  # the served model failed in the background, with no fallback
        self._interrupt_on_stop = False  # a session is running: a stop interrupts the main thread
        self._timer: threading.Timer | None = None
        self._margin_s = 0.0

    def run(self) -> JobEnd:
        run = self.journal.get_run(self.spec.run_id)
        index = self.spec.continuation
        ends_at = job_end_time()
        record_started(self.journal, run.id, self.job_id, index, socket.gethostname(), ends_at)
        if run.status in ("completed", "failed"):
            return self._end(f"run {run.id} is already {run.status}: this job had nothing to do", 0)
        try:
            with self._stop_signals_handled():
                self.split = split_node(self.site, self.spec.model_in_job)
                margin = stop_margin_s(REPORT_WAIT_S, STOP_S, self.spec.margin_s)
                self._margin_s = margin
                self._arm_walltime(ends_at)
                return self._carry(margin)
        except SciagentError as exc:
            self.journal.add_event(run.id, "error", f"job {self.job_id}: {exc}")
            if self.journal.get_run(run.id).status in ("queued", "running"):
                has_state = (self.spec.run_dir / "state.json").exists()
                self.journal.set_run_status(run.id, "interrupted" if has_state else "failed", error=str(exc))
            return self._end(str(exc), 1, self._allocation())
        finally:
            self._teardown()

    # -- the study ------------------------------------------------------------------------------

    def _carry(self, margin_s: float) -> JobEnd:
        if self.spec.kind == "ask":
            return self._carry_session(margin_s)
        state_path = self.spec.run_dir / "state.json"
        state = StudyState.load(state_path) if state_path.exists() else None
        model = self._model(plan_fixed=state is not None and state.phase == "simulate")
        settings = self._settings_in_job()
        options = RunOptions(
            goal=self.spec.goal,
            structure=self.spec.structure or "villin",
            llm=SERVED_PROFILE if model is not None else self._profile_name(),
            site=NODE_SITE,
            budget_s=self.spec.budget_s if state is None else None,
            notify=self.notify,
            model=model,
            run_id=self.spec.run_id,
        )
        if self.split is not None:
            pin(self.split.simulation_cpus)  # the study and its workers; the model server has its own
        try:
            if state is not None:
                study = resume_study(self.spec.run_id, options, settings)
            else:
                study = start_study(options, settings)
        except StudyStopped as stopped:
            if self.model_failure:
                raise SciagentError(self.model_failure) from stopped
            return self._continue(stopped.reason, margin_s)
        return self._finish(study)

    def _carry_session(self, margin_s: float) -> JobEnd:
        """An ``ask`` session: it looks for no stop file, so a stop interrupts it (``Terminated``) and the
        session, marked interrupted, is resumed by the next job (no finished tool call runs again)."""
        self._model(plan_fixed=False)
        started = bool(self.journal.steps(self.spec.run_id))
        options = AskOptions(
            llm=self._profile_name(),
            site=NODE_SITE,
            budget=Budget(wall_time_s=self.spec.budget_s),
            queued_id=None if started else self.spec.run_id,
        )
        if self.split is not None:
            pin(self.split.simulation_cpus)
        settings = self._settings_in_job()
        self._interrupt_on_stop = True
        try:
            if started:
                answered = resume_session(self.spec.run_id, options, settings)
            else:
                answered = ask(self.spec.goal, options, settings)
        except Terminated as stopped:
            return self._continue(stopped.reason, margin_s)
        finally:
            self._interrupt_on_stop = False
        outcome = answered.outcome
        message = f"session {answered.session_id} ended: {outcome.status}"
        return self._end(message, 0 if outcome.status == "answered" else 1, self._allocation())

    def _finish(self, study: StudyRun) -> JobEnd:
        allocation = self._allocation()
        self._add_allocation_to_report(allocation)
        unfinished = study.unfinished
        message = f"run {study.run_id} completed"
        if unfinished:
            message += f" without {', '.join(unfinished)}"
        return self._end(message, 1 if unfinished else 0, allocation)

    def _continue(self, reason: str, margin_s: float) -> JobEnd:
        spec = self.spec
        if spec.continuation >= spec.max_continuations:
            message = (
                f"stopped ({reason}) and no continuation is left (--max-continuations "
                f"{spec.max_continuations}): `sciagent resume {spec.run_id}` continues it"
            )
            return self._end(message, 1, self._allocation())
        state_path = spec.run_dir / "state.json"
        state = StudyState.load(state_path) if state_path.exists() else None
        simulation_devices = len(self.split.simulation_devices) if self.split else 1
        walltime_s = continuation_walltime(
            spec,
            remaining_sim_s=remaining_simulation_s(spec.run_dir, self.job_id, max(1, simulation_devices)),
            startup_s=(self.clock.model_ready or self.clock.started) - self.clock.started,
            margin_s=margin_s,
            budget_left_s=state.budget_s - state.spent_s if state else spec.budget_s,
        )
        following = submit_continuation(
            spec, self.site, after_job=self.job_id, walltime_s=walltime_s, margin_s=margin_s
        )
        record_submitted(self.journal, spec.run_id, following.job_id, following.index, following.script_path)
        waiting = f"continues in job {following.job_id}: {reason}"
        self.journal.set_run_status(spec.run_id, "queued", error=waiting)
        message = f"stopped ({reason}); continues in job {following.job_id} ({walltime_s / 60:.0f} min asked)"
        return self._end(message, 0, self._allocation())

    def _profile_name(self) -> str | None:
        """The profile the study uses: the model served here, else the fallback taken, else the remote one."""
        if self.spec.model_in_job is None:
            return self.spec.llm
        return SERVED_PROFILE if self.served is not None else self.spec.fallback_llm

    # -- the model ------------------------------------------------------------------------------

    def _model(self, *, plan_fixed: bool) -> ModelWhenReady | None:
        """Start the job's model server: in the background when the plan is fixed, else before the study.

        Returns the stand-in the study is handed while the model loads, or None when the study builds
        its model from a profile (served and ready, a fallback, or a remote one).
        """
        served_in_job = self.spec.model_in_job
        if served_in_job is None:
            self.clock.model_ready = self.clock.started
            return None
        if not plan_fixed:
            self._serve()
            return None
        pending = ModelWhenReady(
            model_id=self._served_model_id(),
            base_url=None,
            supports_native_tools=False,
            response_format_style="json_object" if served_in_job.backend == "llama-cpp" else "json_schema",
            guided=served_in_job.backend == "llama-cpp",
            connect=self._connect,
            wait_s=served_in_job.ready_timeout_s,
        )

        def serve_in_background() -> None:
            try:
                self._serve()
            except SciagentError as exc:
                self.model_failure = f"the model server failed: {exc}"
                pending.fail(self.model_failure)
                self._stop(self.model_failure)
            else:
                pending.ready.set()

        threading.Thread(target=serve_in_background, name="model-server", daemon=True).start()
        return pending

    def _serve(self) -> None:
        model = self.spec.model_in_job
        assert model is not None and self.split is not None
        try:
            self.served = serve_model(model, self.split, self.spec.workspace)
        except HealthGateFailed as failed:
            self.journal.add_event(self.spec.run_id, "error", f"job {self.job_id}: {failed}")
            if not self.spec.fallback_llm:
                raise
            check_reachable(self.spec.fallback_llm, self.settings)
            self.journal.add_event(
                self.spec.run_id, "warning", f"using the fallback profile {self.spec.fallback_llm}"
            )
        else:
            ready_s = time.monotonic() - self.clock.started
            passed = f"job {self.job_id}: the model server passed its health gate ({ready_s:.1f} s)"
            self.journal.add_event(self.spec.run_id, "info", passed)
        self.clock.model_ready = time.monotonic()

    def _connect(self) -> ChatModel:
        name = self._profile_name()
        assert name is not None
        return make_model(name, self._settings_in_job().llm, workspace=self.spec.workspace)

    def _served_model_id(self) -> str:
        model = self.spec.model_in_job
        assert model is not None
        if model.backend == "llama-cpp":  # the server's alias for its model: the file's stem
            return Path(model.model).stem if model.model else bundled_model_path().stem
        return model.model or "vllm"

    def _settings_in_job(self) -> Settings:
        llm = dict(self.settings.llm)
        if self.served is not None:
            llm[SERVED_PROFILE] = self.served.profile
        sites = dict(self.settings.sites)
        if self.split is not None:
            sites[NODE_SITE] = self.split.simulation_site
        return self.settings.model_copy(update={"llm": llm, "sites": sites, "workspace": self.spec.workspace})

    # -- stopping -------------------------------------------------------------------------------

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.clock.mark_stop()
            request_stop(self.spec.run_dir, reason)

    def _arm_walltime(self, ends_at: float | None) -> None:
        """Stop ``margin`` before ``ends_at`` (a timer, re-armed when the scheduler's end time changes)."""
        if ends_at is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        margin_s = self._margin_s
        delay = ends_at - margin_s - time.time()
        when = datetime.fromtimestamp(ends_at).strftime("%H:%M:%S")
        reason = f"the job's walltime ends at {when}: stopped {margin_s:.0f} s before it, to continue later"
        self._timer = threading.Timer(max(0.0, delay), self._walltime_reached, args=(reason,))
        self._timer.daemon = True
        self._timer.start()

    def _walltime_reached(self, reason: str) -> None:
        self._stop(reason)
        if self._interrupt_on_stop:  # the handler below raises in the main thread
            signal.pthread_kill(threading.main_thread().ident or 0, INTERRUPT)

    def _scheduler_warned(self) -> None:
        """Slurm sends its warning up to 60 s early, and an administrator may shorten a job: the end time
        is read again, and the stop comes at the margin before it (at once if that is already past)."""
        try:
            ends_at = job_end_time()
        except SciagentError:
            ends_at = None
        if ends_at is not None and ends_at - self._margin_s - time.time() > 1.0:
            self._arm_walltime(ends_at)
            stop_at = datetime.fromtimestamp(ends_at - self._margin_s).strftime("%H:%M:%S")
            early = f"job {self.job_id}: the scheduler warned early (SIGUSR1); the stop stays at {stop_at}"
            self.journal.add_event(self.spec.run_id, "info", early)
            return
        self._walltime_reached(SIGNAL_REASONS[signal.SIGUSR1])

    @contextmanager
    def _stop_signals_handled(self) -> Iterator[None]:
        """Each stop signal requests the stop, whatever disposition the job inherited (nohup ignores some)."""

        def on_signal(number: int, frame: FrameType | None) -> None:
            if number == signal.SIGUSR1 and self.stop_reason is None:  # off the handler: it runs a command
                threading.Thread(target=self._scheduler_warned, name="walltime", daemon=True).start()
                return
            if number != INTERRUPT:
                self._stop(SIGNAL_REASONS[signal.Signals(number)])
            if self._interrupt_on_stop and self.stop_reason is not None:
                raise Terminated(self.stop_reason)

        previous = {number: signal.signal(number, on_signal) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    # -- the end --------------------------------------------------------------------------------

    def _allocation(self) -> JobAllocation:
        self.clock.ended = time.monotonic()
        split = self.split
        model_devices = 0
        if split is not None and self.spec.model_in_job is not None:
            model_devices = len(split.model_devices) or len(split.model_cpus)
        simulation_devices = len(split.simulation_devices) or len(split.simulation_cpus) if split else 1
        simulating = sum(s.wall_s for s in segments(self.spec.run_dir) if s.job_id == self.job_id)
        return job_allocation(
            index=self.spec.continuation,
            job_id=self.job_id,
            model_devices=model_devices,
            simulation_devices=simulation_devices,
            clock=self.clock,
            simulating_s=simulating,
        )

    def _add_allocation_to_report(self, allocation: JobAllocation) -> None:
        results = self.spec.run_dir / "results.json"
        if not results.exists():
            return
        earlier = [job.allocation for job in jobs_of(self.journal, self.spec.run_id) if job.allocation]
        earlier = [JobAllocation.model_validate(a) for a in earlier if a.get("job_id") != self.job_id]
        record = load_record(results)
        record.allocation = sorted([*earlier, allocation], key=lambda a: a.index)
        render_report(record, self.spec.run_dir)

    def _end(self, message: str, code: int, allocation: JobAllocation | None = None) -> JobEnd:
        record_ended(
            self.journal,
            self.spec.run_id,
            self.job_id,
            self.spec.continuation,
            message,
            allocation.model_dump() if allocation else None,
        )
        return JobEnd(code, message)

    def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.served is not None:
            self.served.stop()
        left = stop_descendants(os.getpid())
        if left:
            stray = f"job {self.job_id}: stopped process(es) left running: {', '.join(left)}"
            self.journal.add_event(self.spec.run_id, "warning", stray)
