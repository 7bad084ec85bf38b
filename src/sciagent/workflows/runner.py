"""Start or resume an md-stability study: build the journal, model and executor, and record the ending.

Whatever stops a run (bad input, an unreachable model, Ctrl-C) ends up in the journal as the run's
status and an event, before the error reaches the person; nothing computed is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.compute.sites import make_executor, resolve_site
from sciagent.config import Settings
from sciagent.errors import SciagentError, UserError
from sciagent.llm.profiles import make_model, resolve_profile
from sciagent.workflows.advisor import ModelAdvisor
from sciagent.workflows.md_stability import DEFAULT_GOAL, Notify, StabilityStudy, StudyContext
from sciagent.workflows.study_state import StudyState, new_state

JOURNAL_FILE = "journal.sqlite"


@dataclass
class RunOptions:
    """What the person asked for on the command line."""

    goal: str = DEFAULT_GOAL
    structure: str = "villin"
    llm: str | None = None
    site: str = "local"
    budget_s: float = 300.0
    max_simulation_time_s: float | None = None
    approve: Callable[[str], bool] | None = None
    notify: Notify = field(default=lambda phase, message: None)


@dataclass(frozen=True)
class StudyRun:
    """Where a finished study lives."""

    run_id: str
    run_dir: Path
    state: StudyState


def start_study(options: RunOptions, settings: Settings) -> StudyRun:
    """Create a run in the journal and carry the study through to its report."""
    workspace = settings.workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    with Journal(workspace / JOURNAL_FILE) as journal:
        config = {
            "goal": options.goal,
            "structure": options.structure,
            "llm": options.llm,
            "site": options.site,
            "budget_s": options.budget_s,
            "max_simulation_time_s": options.max_simulation_time_s,
        }
        run_id = journal.create_run(options.goal, config)
        return _carry(journal, run_id, workspace / run_id, options, settings, state=None)


def resume_study(run_id: str, options: RunOptions, settings: Settings) -> StudyRun:
    """Continue an interrupted run: completed simulations are kept, interrupted ones resume."""
    workspace = settings.workspace.resolve()
    with Journal(workspace / JOURNAL_FILE) as journal:
        run = journal.get_run(run_id)
        run_dir = workspace / run.id
        state_path = run_dir / "state.json"
        if not state_path.exists():
            raise UserError(f"run {run.id} has no saved state in {run_dir}: it cannot be resumed")
        state = StudyState.load(state_path)
        options.llm = options.llm or state.llm_profile
        options.site = options.site or run.config.get("site", "local")
        journal.set_run_status(run.id, "running")
        journal.add_event(run.id, "info", "resumed")
        return _carry(journal, run.id, run_dir, options, settings, state=state)


def _carry(
    journal: Journal,
    run_id: str,
    run_dir: Path,
    options: RunOptions,
    settings: Settings,
    state: StudyState | None,
) -> StudyRun:
    executor = None
    try:
        site = resolve_site(options.site, settings)
        profile_name, _ = resolve_profile(options.llm, settings)
        model = make_model(profile_name, settings)
        if state is None:
            state = new_state(
                run_id, options.goal, options.structure, profile_name, model.model_id, options.budget_s
            )
        else:
            state.budget_s = options.budget_s
        executor = make_executor(options.site, settings, run_dir=run_dir / "parsl")
        context = StudyContext(
            journal=journal,
            advisor=ModelAdvisor(model, journal, run_id),
            executor=executor,
            run_dir=run_dir,
            notify=options.notify,
            approve=options.approve,
            max_simulation_time_s=options.max_simulation_time_s,
            remote_root=Path(site.remote_workdir) / run_id if site.remote_workdir else None,
            platform=site.platform,
        )
        StabilityStudy(state, context).run()
    except SciagentError as exc:
        journal.add_event(run_id, "error", str(exc))
        journal.set_run_status(run_id, "failed", error=str(exc))
        raise
    except KeyboardInterrupt:
        journal.add_event(run_id, "warning", "interrupted by the user; `sciagent resume` continues it")
        journal.set_run_status(run_id, "interrupted", error="interrupted")
        raise
    finally:
        if executor is not None:
            executor.shutdown(cancel=True)
    failed = [c.name for c in state.conditions if c.status != "completed"]
    journal.set_run_status(
        run_id, "completed", error=f"not completed: {', '.join(failed)}" if failed else None
    )
    return StudyRun(run_id, run_dir, state)
