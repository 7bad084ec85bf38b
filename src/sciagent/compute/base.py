"""The Executor protocol: the one boundary between a workflow and whatever runs its tasks.

Kept small and engine-neutral on purpose (Parsl's executor base is the model): only strings, ids,
the ``TaskState`` enum, and picklable callables and values cross it, so a process pool on this
machine, Parsl on a batch cluster and Globus Compute at a remote site all fit behind it. Failures
come back as the errors in ``sciagent.compute.errors``; retrying them is the workflow's job.
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

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


def check_timeout(timeout_s: float | None) -> None:
    """Refuse a task wall limit that is not a positive number of seconds (None: no limit)."""
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive seconds or None, got {timeout_s}")


def pickle_call(
    fn: Callable[..., Any], args: tuple, kwargs: dict, timeout_s: float | None, where: str
) -> bytes:
    """Check a submission the way every executor must, and pickle it for the worker.

    Raises:
        ValueError: ``timeout_s`` is not positive.
        TypeError: the function or its arguments cannot be pickled (``where`` names the worker).
    """
    check_timeout(timeout_s)
    try:
        return pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise TypeError(
            f"cannot send {getattr(fn, '__qualname__', fn)!r} to {where}: {exc}; use a "
            "module-level function and picklable arguments"
        ) from exc


class TaskRecord(Protocol):
    """What every executor keeps per task: its id and the future that settles with its outcome."""

    task_id: str
    future: futures.Future


RecordT = TypeVar("RecordT", bound=TaskRecord)
TableT = TypeVar("TableT", bound="TaskTable")


class TaskTable(Generic[RecordT]):
    """What the three executors share: the task table under one lock, waiting, the context manager.

    Each task's outcome is a ``concurrent.futures.Future`` settled with its value or ``TaskError``;
    an engine decides when to settle it. ``_wait`` is the one hook an engine overrides when a task
    can end without its future being settled first (Globus Compute's client-side wall limits).

    Args:
        name: names the executor in handles and logs.
        capacity: how many tasks run at once.
        lock: the table's lock; an engine whose futures may settle inside its own calls needs an RLock.
    """

    def __init__(self, name: str, capacity: int, lock: threading.Lock | threading.RLock) -> None:
        self.name = name
        self.capacity = capacity
        self._lock = lock
        self._tasks: dict[str, RecordT] = {}
        self._closing = False

    def result(self, handle: TaskHandle, timeout: float | None = None) -> Any:
        """Wait for the task's value or raise its ``TaskError``; see ``Executor.result``."""
        with self._lock:
            task = self._lookup(handle)
        if not self._wait([task], timeout):
            raise futures.TimeoutError(f"task {task.task_id} did not finish within {timeout} s")
        return task.future.result()

    def wait_any(self, handles: Iterable[TaskHandle], timeout: float | None = None) -> list[TaskHandle]:
        """The handles whose tasks have finished, in the order given; waits for at least one."""
        handles = list(handles)
        with self._lock:
            tasks = [self._lookup(handle) for handle in handles]
        done = self._wait(tasks, timeout) if tasks else []
        return [handle for handle, task in zip(handles, tasks, strict=True) if task in done]

    def shutdown(self, *, cancel: bool = False) -> None:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def __enter__(self: TableT) -> TableT:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving on an error (Ctrl-C included) ends the tasks rather than waiting for them.
        self.shutdown(cancel=exc_type is not None)

    def _lookup(self, handle: TaskHandle) -> RecordT:
        task = self._tasks.get(handle.task_id) if handle.executor == self.name else None
        if task is None:
            raise KeyError(f"executor {self.name} has no task {handle.task_id!r} (from {handle.executor})")
        return task

    def _add(self, task_id: str | None, record: Callable[[str], RecordT]) -> RecordT:
        """Register a new task under ``task_id`` (or a fresh id); call it with the lock held.

        Raises:
            RuntimeError: the executor is shut down.
            ValueError: ``task_id`` is already used here.
        """
        if self._closing:
            raise RuntimeError(f"executor {self.name} is shut down: cannot submit")
        task_id = uuid.uuid4().hex if task_id is None else task_id
        if task_id in self._tasks:
            raise ValueError(f"task id {task_id!r} is already used in executor {self.name}")
        task = self._tasks[task_id] = record(task_id)
        return task

    def _wait(self, tasks: list[RecordT], timeout: float | None) -> list[RecordT]:
        """Wait until one of ``tasks`` has ended or ``timeout`` passed; return the ended ones."""
        done, _ = futures.wait([task.future for task in tasks], timeout, futures.FIRST_COMPLETED)
        return [task for task in tasks if task.future in done]
