"""The Executor protocol: the one boundary between a workflow and whatever runs its tasks.

Kept small and engine-neutral on purpose (Parsl's executor base is the model): only strings, ids,
the ``TaskState`` enum, and picklable callables and values cross it, so a process pool on this
machine, Parsl on a batch cluster and Globus Compute at a remote site all fit behind it. Failures
come back as the errors in ``sciagent.compute.errors``; retrying them is the workflow's job.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from sciagent.compute.errors import TaskCancelled


class TaskState(str, Enum):
    """Where a task is in its life; the last three are final."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True once the task will never change state again."""
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True)
class TaskHandle:
    """What ``submit`` gives back: plain strings, so it can be journaled and looked up after a resume."""

    task_id: str
    executor: str


def final_state(error: BaseException | None) -> TaskState:
    """The final state of a task that ended with ``error`` (None: it returned a value)."""
    if error is None:
        return TaskState.COMPLETED
    return TaskState.CANCELLED if isinstance(error, TaskCancelled) else TaskState.FAILED


@runtime_checkable
class Executor(Protocol):
    """Runs picklable functions somewhere and hands back their results.

    Attributes:
        name: names this executor in handles and logs (``"local"``, a site name).
        capacity: how many tasks run at once; more are queued in submission order.
    """

    name: str
    capacity: int

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        task_id: str | None = None,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> TaskHandle:
        """Queue ``fn(*args, **kwargs)``; ``timeout_s`` is the task's own wall limit once it runs.

        ``fn`` and the arguments are pickled at submission (later changes to them are not seen),
        so ``fn`` must be importable by name on the worker: a module-level function, not a lambda.
        ``task_id`` defaults to a fresh unique id; a given one must be unique in this executor.
        """
        ...

    def status(self, handle: TaskHandle) -> TaskState:
        """The task's state now (never blocks)."""
        ...

    def result(self, handle: TaskHandle, timeout: float | None = None) -> Any:
        """Wait for the task and return its value, or raise its ``TaskError``.

        ``timeout`` bounds only this wait: past it ``concurrent.futures.TimeoutError`` is raised and
        the task keeps running (its own limit is ``timeout_s`` at submission).
        """
        ...

    def cancel(self, handle: TaskHandle) -> bool:
        """Cancel a queued or running task; False if it had already finished."""
        ...

    def wait_any(self, handles: Iterable[TaskHandle], timeout: float | None = None) -> list[TaskHandle]:
        """Block until at least one of ``handles`` is finished (or ``timeout``); return the finished ones.

        Lets a workflow react to results as they arrive rather than in submission order.
        """
        ...

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop accepting tasks; wait for the rest, or with ``cancel`` end them all now. Idempotent."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def pickle_call(
    fn: Callable[..., Any], args: tuple, kwargs: dict, timeout_s: float | None, where: str
) -> bytes:
    """Check a submission the way every executor must, and pickle it for the worker.

    Raises:
        ValueError: ``timeout_s`` is not positive.
        TypeError: the function or its arguments cannot be pickled (``where`` names the worker).
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive seconds or None, got {timeout_s}")
    try:
        return pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise TypeError(
            f"cannot send {getattr(fn, '__qualname__', fn)!r} to {where}: {exc}; use a "
            "module-level function and picklable arguments"
        ) from exc


def claim_task_id(task_id: str | None, known: Mapping[str, object], executor: str) -> str:
    """``task_id``, or a fresh one; a duplicate is refused. Call it under the executor's lock."""
    task_id = uuid.uuid4().hex if task_id is None else task_id
    if task_id in known:
        raise ValueError(f"task id {task_id!r} is already used in executor {executor}")
    return task_id
