"""What to do after a simulation attempt: the retry policy by failure class, in one place.

| outcome                                          | action                                        |
| ------------------------------------------------ | --------------------------------------------- |
| completed, too short or RMSD still drifting      | EXTEND production, if the time left allows    |
| completed otherwise                              | ACCEPT                                        |
| failed / instability                             | ADAPT: the model (or the fallback) changes it |
| failed / platform, or the worker died            | RETRY from its checkpoint, with backoff       |
| failed / setup                                   | STOP that condition and report why            |
| failed / timeout (the budget ran out)            | STOP; the checkpoint stays for a later resume |

Each retry has one owner: the workflow asks this module and counts attempts; executors never retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sciagent.science.simulate import SimulationOutcome
from sciagent.science.stability import Failure


class Action(str, Enum):
    ACCEPT = "accept"
    EXTEND = "extend"
    ADAPT = "adapt"
    RETRY = "retry"
    STOP = "stop"


@dataclass(frozen=True)
class RetryLimits:
    """How many times each kind of second chance is given to one condition.

    ``transient_retries`` is the one owner of retries after a lost worker: executors do not retry
    (Parsl's ``retries`` is 0 at every site), so a task whose worker always dies runs 1 + this many
    times. A deterministic failure (``platform``, ``setup``) is not retried at all.
    """

    transient_retries: int = 2
    adaptation_rounds: int = 2
    extensions: int = 1
    backoff_base_s: float = 2.0
    backoff_max_s: float = 30.0

    def backoff_s(self, retry: int) -> float:
        """Delay before transient retry number ``retry`` (1-based): exponential, capped."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))


DEFAULT_RETRY_LIMITS = RetryLimits()


# Failed stability criteria that more production can settle: the analysis decides which failed.
EXTENDABLE_FAILURES: frozenset[Failure] = frozenset({"too short", "still drifting"})
# A run still drifting at its end needs at least as much again (twice its length) to be judged.
DRIFT_LENGTH_FACTOR = 2.0


def needs_longer_production(outcome: SimulationOutcome) -> bool:
    """Whether a longer production could turn this run's "inconclusive" into a verdict.

    True when the analysis found the run too short or its RMSD still drifting. An "unstable" run is
    never extended: its fold is lost, and running longer will not bring it back. The rule for each
    criterion lives in the analysis; this only reads which criteria failed.
    """
    analysis = outcome.analysis
    if analysis is None:
        return False
    assessment = analysis.assessment
    return assessment.verdict == "inconclusive" and not EXTENDABLE_FAILURES.isdisjoint(assessment.failed)


def next_action(outcome: SimulationOutcome | None, *, worker_lost: bool = False) -> Action:
    """The action for one attempt's ``outcome`` (None with ``worker_lost`` when the worker died)."""
    if outcome is None:
        return Action.RETRY if worker_lost else Action.STOP
    result = outcome.result
    if result.ok:
        return Action.EXTEND if needs_longer_production(outcome) else Action.ACCEPT
    return {
        "instability": Action.ADAPT,
        "platform": Action.STOP,  # the platform failed the same way on this site: again would too
        "setup": Action.STOP,
        "timeout": Action.STOP,
    }[result.failure_class or "setup"]
