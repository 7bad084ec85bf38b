"""sciagent's exceptions, all in one place.

The tree (three families, so callers can tell who has to act):

    SciagentError
    ├── UserError            the user's input or configuration is wrong; the message says what to do
    │   ├── StructureError   a structure could not be found, fetched or read
    │   ├── SpecError        a simulation request is invalid or unsupported
    │   ├── ConfigError      a setting or profile is missing or invalid
    │   ├── SandboxUnavailable model-written code cannot run safely here (no bubblewrap)
    │   └── ModelAuthError   the model endpoint rejected the credentials (also a ModelError)
    ├── ModelError           talking to a language model failed
    │   ├── ModelUnavailable the endpoint could not be reached or kept failing after the retries
    │   ├── ModelRequestError the endpoint refused the request (4xx other than auth): not retried
    │   └── StructuredOutputError the model's answers never validated; carries every raw reply
    ├── RunFailure           work was attempted and failed (carried in results, not raised across workers)
    ├── StudyStopped         a study stopped on request (a stop file, SIGTERM) with its work saved: it resumes
    └── InternalError        a bug: an exception that is none of the above; its traceback is in a log file

``Terminated`` is a ``KeyboardInterrupt`` (not a ``SciagentError``): SIGTERM interrupting the main thread
takes the Ctrl-C path, with the reason it carries instead of "interrupted by the user".

Signals to the language model (retry with this message) join this tree with the agent layer.
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


class ConfigError(UserError):
    """A setting, profile or credential source is missing or invalid."""


class SandboxUnavailable(UserError):
    """Model-written code cannot run safely here: the message names what is missing and the fix."""


class ModelError(SciagentError):
    """A language-model call failed."""


class ModelAuthError(ModelError, UserError):
    """The endpoint rejected the credentials: the user must log in or fix the key."""


class ModelUnavailable(ModelError):
    """The endpoint could not be reached, timed out, or kept failing after the retries."""


class ModelRequestError(ModelError):
    """The endpoint refused the request as invalid (a 4xx other than auth or rate limits)."""


class RequestRejected(ModelRequestError):
    """The server read the request and said it was invalid (HTTP 400/422, or a 5xx saying so).

    Another shape of the same request may be accepted, so a structured request is asked again in the
    next ``response_format`` style; anything else is reported in the server's own words.
    """


class StructuredOutputError(ModelError):
    """The model's answers never validated against the requested schema.

    Attributes:
        raw_replies: every reply the model gave, in order, for the journal and for debugging.
        errors: the validation error for each reply.
        responses: the ``ChatResponse`` of each reply (latency, tokens), when the caller has them.
    """

    def __init__(
        self, message: str, raw_replies: list[str], errors: list[str], responses: list | None = None
    ) -> None:
        super().__init__(message)
        self.raw_replies = raw_replies
        self.errors = errors
        self.responses = responses or []


class RunFailure(SciagentError):
    """Work was attempted and failed; ``failure_class`` says how (``instability``, ``setup``, ...)."""

    def __init__(self, failure_class: str, message: str) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message


class StudyStopped(SciagentError):
    """A study stopped taking work because a stop was requested; everything done so far is saved.

    Attributes:
        reason: why the stop was requested, in words (e.g. the batch job's time limit).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"stopped: {reason}")
        self.reason = reason


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the work: the Ctrl-C path records it, naming ``reason`` instead of the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InternalError(SciagentError):
    """An exception that is not one of ours reached a command: a bug, reported in one line.

    Attributes:
        type_name: the original exception's type.
        log_path: the file holding the full traceback.
    """

    def __init__(self, type_name: str, message: str, log_path: str) -> None:
        super().__init__(f"internal error: {type_name}: {message} (traceback in {log_path})")
        self.type_name = type_name
        self.log_path = log_path
