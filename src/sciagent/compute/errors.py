"""How a task can fail, as seen by whoever waits for its result.

The tree (every executor raises these, whatever engine runs the task):

    SciagentError
    └── TaskError            a submitted task did not produce a result
        ├── WorkerLost       the process running it died (signal, out-of-memory kill, hard exit):
        │                    transient, worth a retry elsewhere or later
        ├── TaskTimedOut     it ran past its own wall limit (``timeout_s``) and was terminated
        ├── TaskCancelled    it was cancelled, or the executor shut down with ``cancel=True``
        └── TaskRaised       the function itself raised; carries the exception's type name, message
                             and traceback as text, because the exception may not unpickle here

Waiting too long in ``Executor.result(handle, timeout=...)`` is not a task failure: that raises
``concurrent.futures.TimeoutError`` and the task keeps running.

Retries are the workflow layer's job (one owner per retry): it asks ``is_transient(exc)``.
Every error pickles with its attributes, so an engine can pass it between processes or machines.
"""

from __future__ import annotations

import signal
from typing import Any

from sciagent.errors import SciagentError


class TaskError(SciagentError):
    """A submitted task did not produce a result.

    Attributes:
        task_id: the id of the task (``TaskHandle.task_id``).
        message: what happened, without the task id.
    """

    def __init__(self, task_id: str, message: str) -> None:
        super().__init__(f"task {task_id}: {message}")
        self.task_id = task_id
        self.message = message

    def _ctor_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays ``self.args``, which is not our constructor's signature.
        return (type(self), self._ctor_args())


class WorkerLost(TaskError):
    """The worker process died before returning a result: transient, worth a retry.

    Attributes:
        exitcode: the process's exit code; negative means it was killed by signal ``-exitcode``;
            None when the engine cannot tell.
    """

    def __init__(self, task_id: str, exitcode: int | None, detail: str = "") -> None:
        super().__init__(task_id, detail or describe_exit(exitcode))
        self.exitcode = exitcode
        self.detail = detail

    def _ctor_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.exitcode, self.detail)


class TaskTimedOut(TaskError):
    """The task ran past its wall limit and was terminated.

    Attributes:
        timeout_s: the limit it was given, in seconds.
    """

    def __init__(self, task_id: str, timeout_s: float) -> None:
        super().__init__(task_id, f"ran past its wall limit of {timeout_s:g} s and was terminated")
        self.timeout_s = timeout_s

    def _ctor_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.timeout_s)


class TaskCancelled(TaskError):
    """The task was cancelled before it finished (or before it started)."""

    def __init__(self, task_id: str, reason: str = "cancelled") -> None:
        super().__init__(task_id, reason)
        self.reason = reason

    def _ctor_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.reason)


class TaskRaised(TaskError):
    """The task's function raised.

    Attributes:
        type_name: the exception's class, qualified by module unless builtin (``ValueError``,
            ``openmm.OpenMMException``).
        error_message: ``str()`` of the exception.
        traceback_text: the formatted traceback from the worker, for the journal and for debugging.
    """

    def __init__(self, task_id: str, type_name: str, error_message: str, traceback_text: str) -> None:
        super().__init__(task_id, f"raised {type_name}: {error_message}")
        self.type_name = type_name
        self.error_message = error_message
        self.traceback_text = traceback_text

    def _ctor_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.type_name, self.error_message, self.traceback_text)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same task may succeed: only a lost worker is, the rest are deterministic."""
    return isinstance(exc, WorkerLost)


def qualified_type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``module.Class`` otherwise."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def describe_exit(exitcode: int | None) -> str:
    """A sentence for how a worker process ended without a result."""
    if exitcode is None:
        return "the worker process was lost before returning a result"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (SIGKILL is often the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        return f"the worker process was killed by {name} (exit code {exitcode}){hint}"
    return f"the worker process exited with code {exitcode} before returning a result"
