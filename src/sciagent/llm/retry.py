"""How long to wait between HTTP attempts to a model endpoint.

This is the only place that decides HTTP back-off (one owner per retry, see STYLE.md habit 8): the
OpenAI SDK's own retries are switched off, the structured-output layer re-asks the model with its own
budget, and neither sleeps for network trouble. Servers that know better (a rate limiter saying
``Retry-After: 20``) are believed, within ``max_delay_s`` so a confused proxy cannot stall a run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter for transient endpoint failures.

    Attributes:
        max_retries: retries after the first attempt (so ``max_retries + 1`` attempts in all).
        base_delay_s: the wait after the first failure; it doubles with each further failure.
        max_delay_s: the longest single wait, also the cap on a server's ``Retry-After``.
        jitter: relative spread (0.25 → ±25 %) so many clients do not retry in lock-step.
    """

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (0 disables retries), got {self.max_retries}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("base_delay_s and max_delay_s must be >= 0 seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction between 0 and 1, got {self.jitter}")

    @property
    def attempts(self) -> int:
        """How many attempts in all: the first one plus the retries."""
        return self.max_retries + 1

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        A server's ``Retry-After`` wins over our own schedule (it knows its rate limits), without
        jitter, capped at ``max_delay_s``.
        """
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_delay_s)
        backoff = min(self.base_delay_s * 2 ** max(attempt - 1, 0), self.max_delay_s)
        spread = 1.0 + random.uniform(-self.jitter, self.jitter)
        return min(backoff * spread, self.max_delay_s)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110).

    Returns None for a missing or unreadable header, so the caller falls back to its own back-off;
    a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _seconds_until_http_date(text: str) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are always UTC
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)
