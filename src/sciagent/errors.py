"""sciagent's exceptions, all in one place.

The tree (three families, so callers can tell who has to act):

    SciagentError
    ├── UserError            the user's input or configuration is wrong; the message says what to do
    │   ├── StructureError   a structure could not be found, fetched or read
    │   └── SpecError        a simulation request is invalid or unsupported
    └── RunFailure           work was attempted and failed (carried in results, not raised across workers)

Signals to the language model (retry with this message) join this tree with the LLM layer.
This module imports nothing so that ``science/`` can use it on a bare remote worker.
"""

from __future__ import annotations


class SciagentError(Exception):
    """Base of every exception sciagent raises on purpose."""


class UserError(SciagentError):
    """Bad input or configuration. The message names the problem and the fix, in one line."""


class StructureError(UserError):
    """A structure could not be resolved, downloaded or parsed."""


class SpecError(UserError):
    """A simulation request is invalid or cannot be honoured as asked."""


class RunFailure(SciagentError):
    """Work was attempted and failed; ``failure_class`` says how (``instability``, ``setup``, ...)."""

    def __init__(self, failure_class: str, message: str) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message
