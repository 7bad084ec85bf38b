"""Start or resume an md-stability study: build the journal, model and executor, and record the ending.

Whatever stops a run (bad input, an unreachable model, Ctrl-C, SIGTERM, a stop request, a bug) ends up in
the journal as the run's status and an event before the error reaches the person; nothing computed is
deleted. A run stopped on request or by a signal is ``interrupted`` with the reason, and resumes. A bug (an
exception that is not one of ours) becomes an ``InternalError`` whose traceback is in the run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.agent.ownership import owning
from sciagent.compute.sites import make_executor, resolve_site
from sciagent.config import Settings
from sciagent.crash import record_internal_error
from sciagent.errors import SciagentError, StudyStopped, Terminated, UserError
from sciagent.llm.base import ChatModel
from sciagent.llm.profiles import make_model, resolve_profile
from sciagent.workflows.dialects import recall_dialect, remember_dialect
from sciagent.workflows.study.advisor import ModelAdvisor
from sciagent.workflows.study.context import Notify, StudyContext
from sciagent.workflows.study.guardrails import DEFAULT_LIMITS, Limits
from sciagent.workflows.study.md_stability import DEFAULT_GOAL, StabilityStudy
from sciagent.workflows.study.policy import RetryLimits
from sciagent.workflows.study.state import StudyState, new_state
from sciagent.workflows.study.stopping import clear_stop

JOURNAL_FILE = "journal.sqlite"
DEFAULT_BUDGET_S = 300.0


@dataclass
class RunOptions:
    """What the person asked for on the command line."""

    goal: str = DEFAULT_GOAL
    structure: str = "villin"
    llm: str | None = None
    site: str = "local"
    budget_s: float | None = None  # None: a new run gets DEFAULT_BUDGET_S, a resumed one keeps its own
    max_simulation_time_s: float | None = None
    allow_unconstrained: bool = False  # keep a plan's free bonds to H above 1 fs (to test recovery)
    remove_unknown_residues: bool = False  # remove unknown residues from inside chains, splitting them
    approve: Callable[[str], bool] | None = None
    takeover: bool = False  # resume though the owner recorded on another host never released the run
    notify: Notify = field(default=lambda phase, message: None)
    model: ChatModel | None = None  # built by the caller (a batch job's, still loading); else the profile's
    run_id: str | None = None  # filled in once the journal has the run, so errors can name it


@dataclass(frozen=True)
class StudyRun:
    """Where a finished study lives."""

    run_id: str
    run_dir: Path
    state: StudyState

    @property
    def unfinished(self) -> list[str]:
        """Conditions that did not complete (failed or not run): the study did not fully answer."""
        return [c.name for c in self.state.conditions if c.status != "completed"]


def start_study(options: RunOptions, settings: Settings) -> StudyRun:
    """Create a run in the journal and carry the study through to its report.

    With ``options.run_id`` set, the run already exists: queued by ``sciagent submit`` for a batch job,
    or stopped by its job before it saved any state. It is started under that id instead.
    """
    workspace = settings.workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    with Journal(workspace / JOURNAL_FILE) as journal:
        config = {
            "goal": options.goal,
            "structure": options.structure,
            "llm": options.llm,
            "site": options.site,
            "budget_s": options.budget_s or DEFAULT_BUDGET_S,
            "max_simulation_time_s": options.max_simulation_time_s,
            "allow_unconstrained": options.allow_unconstrained,
            "remove_unknown_residues": options.remove_unknown_residues,
        }
        if options.run_id:
            run_id = _take_queued_run(journal, workspace, options.run_id, config)
        else:
            run_id = options.run_id = journal.create_run(options.goal, config)
        with owning(journal, run_id, what="study"):
            return _carry(journal, run_id, workspace / run_id, options, settings, state=None)


def _take_queued_run(journal: Journal, workspace: Path, run_id: str, config: dict[str, object]) -> str:
    run = journal.get_run(run_id)
    if run.status not in ("queued", "interrupted"):
        raise UserError(f"run {run.id} is {run.status}: only a queued run can be started under its id")
    journal.update_run_config(run.id, {**run.config, **config})
    journal.set_run_status(run.id, "running")
    clear_stop(workspace / run.id)  # a request left by a job that stopped before the study started
    return run.id


def resume_study(run_id: str, options: RunOptions, settings: Settings) -> StudyRun:
    """Continue an interrupted run: completed simulations are kept, interrupted ones resume.

    The run keeps what was left of its own budget (only working time counts); ``options.budget_s``,
    when given, is the time it may take from now on instead. A run another process owns is refused
    before anything is read or written (``sciagent.agent.ownership``). The stop request that ended
    the last session, if any, is withdrawn first.
    """
    workspace = settings.workspace.resolve()
    with Journal(workspace / JOURNAL_FILE) as journal, ExitStack() as owned:
        run = journal.get_run(run_id)
        options.run_id = run.id
        owned.enter_context(owning(journal, run.id, what="study", takeover=options.takeover))
        run_dir = workspace / run.id
        state_path = run_dir / "state.json"
        if not state_path.exists():
            raise UserError(f"run {run.id} has no saved state in {run_dir}: it cannot be resumed")
        state = StudyState.load(state_path)
        options.llm = options.llm or state.llm_profile
        options.site = options.site or run.config.get("site", "local")
        options.max_simulation_time_s = options.max_simulation_time_s or run.config.get(
            "max_simulation_time_s"
        )
        options.allow_unconstrained = options.allow_unconstrained or bool(
            run.config.get("allow_unconstrained")
        )
        if options.budget_s is not None:
            state.budget_s = state.spent_s + options.budget_s
        clear_stop(run_dir)
        journal.close_open_steps(run.id, "interrupted: the process stopped before this step finished")
        journal.set_run_status(run.id, "running")
        left = state.budget_s - state.spent_s
        journal.add_event(run.id, "info", f"resumed in phase {state.phase}, {left:.0f} s of the budget left")
        return _carry(journal, run.id, run_dir, options, settings, state=state)


def _carry(
    journal: Journal,
    run_id: str,
    run_dir: Path,
    options: RunOptions,
    settings: Settings,
    state: StudyState | None,
) -> StudyRun:
    executor = model = None
    try:
        site = resolve_site(options.site, settings.sites)
        if options.model is not None:  # the caller's, e.g. a batch job's model that is still loading
            model, profile_name = options.model, options.llm or options.model.model_id
        else:
            profile_name, _ = resolve_profile(options.llm or settings.default_llm, settings.llm)
            model = make_model(profile_name, settings.llm, workspace=settings.workspace)
        recall_dialect(journal, model)
        if state is None:
            budget = options.budget_s or DEFAULT_BUDGET_S
            state = new_state(run_id, options.goal, options.structure, profile_name, model.model_id, budget)
        executor = make_executor(options.site, settings.sites, run_dir=run_dir / "parsl")
        context = StudyContext(
            journal=journal,
            advisor=ModelAdvisor(model, journal, run_id),
            executor=executor,
            run_dir=run_dir,
            notify=options.notify,
            approve=options.approve,
            max_simulation_time_s=options.max_simulation_time_s,
            limits=RetryLimits(**settings.study.model_dump(exclude={"min_production_ps"})),
            guardrails=_guardrail_limits(options, settings.study.min_production_ps),
            remote_root=Path(site.remote_workdir) / run_id if site.remote_workdir else None,
            platform=site.platform,
            site=options.site,
            remove_unknown_residues=options.remove_unknown_residues,
        )
        StabilityStudy(state, context).run()
    except StudyStopped as exc:
        _record_interruption(journal, run_id, exc.reason)
        raise
    except SciagentError as exc:
        _record_failure(journal, run_id, str(exc))
        raise
    except KeyboardInterrupt as exc:
        reason = exc.reason if isinstance(exc, Terminated) else "interrupted by the user"
        _record_interruption(journal, run_id, reason)
        raise
    except Exception as exc:  # a bug: one line for the person, the traceback in the run directory
        internal = record_internal_error(exc, run_dir)
        _record_failure(journal, run_id, str(internal))
        raise internal from exc
    finally:
        if model is not None:
            remember_dialect(journal, model)
        if executor is not None:
            executor.shutdown(cancel=True)
    run = StudyRun(run_id, run_dir, state)
    unfinished = run.unfinished
    journal.set_run_status(
        run_id, "completed", error=f"not completed: {', '.join(unfinished)}" if unfinished else None
    )
    return run


def _guardrail_limits(options: RunOptions, min_production_ps: float | None) -> Limits:
    limits = DEFAULT_LIMITS
    if options.allow_unconstrained:
        limits = replace(limits, constrain_hydrogens_above_fs=None)
    if min_production_ps is not None:  # [study] min_production_ps: a quick look, not a verdict
        limits = replace(limits, min_production_ps=min_production_ps)
    return limits


def _record_interruption(journal: Journal, run_id: str, reason: str) -> None:
    """Stopped with its work saved (the state is saved after every change): ``interrupted``, resumable."""
    journal.add_event(run_id, "warning", f"{reason}; `sciagent resume {run_id}` continues it")
    journal.set_run_status(run_id, "interrupted", error=reason)


def _record_failure(journal: Journal, run_id: str, message: str) -> None:
    journal.add_event(run_id, "error", message)
    journal.set_run_status(run_id, "failed", error=message)
