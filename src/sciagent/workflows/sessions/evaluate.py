"""``sciagent eval``: a suite's tasks put to the agent one at a time, scored, and journalled as one run.

Each task is an ordinary ``ask`` session (its own directory with ``results.json`` and ``report.md``)
with every tool approved up front: an evaluation has no one at the terminal, and a refused simulation
would measure the approval policy instead of the model. The run (config ``kind: eval``) gets one
journal step per task holding its check results, and an event with the total.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from sciagent.agent.evaluation import EvalTask, Suite, TaskScore, load_suite, score_task
from sciagent.agent.journal import Journal
from sciagent.agent.ownership import owning
from sciagent.agent.session import EVAL_KIND
from sciagent.agent.steps import Budget
from sciagent.config import Settings
from sciagent.errors import SciagentError
from sciagent.workflows.catalogue import full_catalogue
from sciagent.workflows.sessions.ask import AskOptions, ask


@dataclass(frozen=True)
class EvalOptions:
    """What ``sciagent eval`` was given besides the suite."""

    llm: str | None = None
    site: str = "local"


@dataclass(frozen=True)
class SuiteResult:
    """A suite's scores, and their totals (what the score table's last line shows)."""

    run_id: str
    suite: Suite
    scores: list[TaskScore]

    @property
    def passed(self) -> int:
        return sum(score.passed for score in self.scores)

    @property
    def total(self) -> int:
        return sum(score.total for score in self.scores)

    @property
    def steps(self) -> int:
        return sum(score.steps for score in self.scores)

    @property
    def tokens(self) -> int:
        return sum(score.tokens for score in self.scores)

    @property
    def wall_time_s(self) -> float:
        return round(sum(score.wall_time_s for score in self.scores), 3)


def load(source: str) -> Suite:
    """A suite by name or path, its checks' tools looked up in the catalogue ``ask`` gives sessions.

    Raises:
        UserError: no such suite, or not a valid one.
    """
    return load_suite(source, tools=[tool.name for tool in full_catalogue()])


def evaluate_suite(
    suite: Suite,
    options: EvalOptions,
    settings: Settings,
    on_task: Callable[[TaskScore], None] | None = None,
) -> SuiteResult:
    """Run every task of ``suite`` and score it; ``on_task`` hears of each score as it is known.

    Raises:
        ConfigError, ModelError: the profile cannot be used (the run is journalled as failed).
    """
    options = EvalOptions(llm=options.llm or settings.default_llm, site=options.site)
    config = {"kind": EVAL_KIND, "suite": suite.name, "llm": options.llm, "site": options.site}
    with Journal.in_workspace(settings.workspace) as journal, ExitStack() as owned:
        run_id = journal.create_run(f"eval {suite.name}", config | {"tasks": [t.id for t in suite.tasks]})
        owned.enter_context(owning(journal, run_id, what="eval"))
        scores: list[TaskScore] = []
        try:
            for task in suite.tasks:
                step = journal.start_step(run_id, "eval_task", task.id, {"question": task.question})
                score = _run_task(task, options, settings)
                status = "completed" if score.passed == score.total else "failed"
                summary = f"{task.id}: {score.passed}/{score.total} checks"
                journal.finish_step(step, status, summary, score.model_dump(mode="json"))
                scores.append(score)
                if on_task is not None:
                    on_task(score)
        except SciagentError as exc:
            journal.close_open_steps(run_id, f"not scored: {exc}")
            journal.set_run_status(run_id, "failed", error=str(exc))
            raise
        except KeyboardInterrupt:
            journal.close_open_steps(run_id, "interrupted by the user")
            journal.set_run_status(run_id, "interrupted", error="interrupted")
            raise
        result = SuiteResult(run_id, suite, scores)
        totals = {"passed": result.passed, "total": result.total}
        journal.add_event(run_id, "info", f"score {result.passed}/{result.total} checks", totals)
        journal.set_run_status(run_id, "completed")
    return result


def _run_task(task: EvalTask, options: EvalOptions, settings: Settings) -> TaskScore:
    """One task's ``ask`` session, within the task's budget, scored."""
    budget = Budget(max_steps=task.max_steps, wall_time_s=task.timeout_s)
    ask_options = AskOptions(llm=options.llm, site=options.site, budget=budget, approve_all=True)
    asked = ask(task.question, ask_options, settings)
    return score_task(task, asked.outcome, asked.session_dir)

