"""Ask the model for a structured decision, journal every call, and fall back when it never validates.

A fallback is never silent: the decision says it came from the fallback, the journal records the
model's invalid replies and a ``fallback`` entry, and reports label the value accordingly. An
endpoint that cannot be reached or refuses the request is not a validation problem: before any work is
done (``tolerate_model_errors=False``, the plan) that error stops the run with its one-line message;
once simulations have run, it is recorded and the fallback used, so the results still get a report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from sciagent.agent.journal import Journal, ModelCall, digest_messages
from sciagent.errors import ModelError, StructuredOutputError
from sciagent.llm.base import ChatModel, ChatResponse, Message
from sciagent.llm.structured import ask_structured
from sciagent.report.models import Source

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Decision(Generic[T]):
    """A validated value, who decided it, and why a fallback was needed (if it was)."""

    value: T
    source: Source
    error: str | None = None


class ModelAdvisor:
    """The one place a workflow talks to its model."""

    def __init__(self, model: ChatModel, journal: Journal, run_id: str, retries: int = 2) -> None:
        self.model = model
        self._journal = journal
        self._run_id = run_id
        self._retries = retries
        self.last_latency_s: float | None = None  # of the last valid answer, for time budgets

    def decide(
        self,
        purpose: str,
        messages: list[Message],
        output: type[T],
        fallback: Callable[[], T],
        step_id: int | None = None,
        tolerate_model_errors: bool = True,
        max_tokens: int | None = None,
    ) -> Decision[T]:
        """Ask for ``output``; after the repair retries, use ``fallback()`` and record that it did."""
        digest = digest_messages(messages)
        try:
            answer = ask_structured(
                self.model, messages, output, retries=self._retries, max_tokens=max_tokens
            )
        except StructuredOutputError as exc:
            for attempt, (raw, error) in enumerate(zip(exc.raw_replies, exc.errors, strict=False), start=1):
                response = exc.responses[attempt - 1] if attempt <= len(exc.responses) else None
                self._record(
                    purpose,
                    step_id,
                    digest,
                    attempt,
                    raw_reply=raw,
                    outcome="invalid",
                    error=error,
                    response=response,
                )
            last_error = exc.errors[-1] if exc.errors else str(exc)
            reason = f"no valid answer after {len(exc.raw_replies)} attempts: {last_error}"
            self._record(
                purpose,
                step_id,
                digest,
                len(exc.raw_replies) + 1,
                raw_reply="",
                outcome="fallback",
                error=reason,
            )
            return Decision(fallback(), "fallback", reason)
        except ModelError as exc:
            if not tolerate_model_errors:
                raise
            reason = f"the model could not be asked: {exc}"
            self._record(purpose, step_id, digest, 1, raw_reply="", outcome="error", error=reason)
            return Decision(fallback(), "fallback", reason)
        last = len(answer.responses)
        for attempt, (response, raw) in enumerate(
            zip(answer.responses, answer.raw_replies, strict=False), start=1
        ):
            outcome = "valid" if attempt == last else "invalid"
            self._record(purpose, step_id, digest, attempt, raw_reply=raw, outcome=outcome, response=response)
        final = answer.responses[-1] if answer.responses else None
        if final is not None and final.latency_s > 0:
            self.last_latency_s = final.latency_s
        return Decision(answer.value, "model")

    def fall_back(
        self, purpose: str, messages: list[Message], value: T, reason: str, step_id: int | None = None
    ) -> Decision[T]:
        """Use the documented fallback without asking the model (e.g. no time is left), and record why."""
        digest = digest_messages(messages)
        self._record(purpose, step_id, digest, 1, raw_reply="", outcome="fallback", error=reason)
        return Decision(value, "fallback", reason)

    def _record(
        self,
        purpose: str,
        step_id: int | None,
        digest: str,
        attempt: int,
        *,
        raw_reply: str,
        outcome: str,
        error: str | None = None,
        response: ChatResponse | None = None,
    ) -> None:
        call = ModelCall.of(
            purpose, self.model.model_id, digest, response,
            raw_reply=raw_reply, outcome=outcome, error=error, attempt=attempt,
        )  # fmt: skip
        self._journal.record_model_call(self._run_id, step_id, call)
