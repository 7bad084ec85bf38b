"""Run tasks at a remote site through Globus Compute, behind the same Executor protocol as the rest.

Why it looks the way it does:

- **One seam.** The SDK's ``globus_compute_sdk.Executor`` is a ``concurrent.futures.Executor``;
  building it (``executor_factory``) is the only boundary, so a test puts a process pool there and
  everything above it (size checks, error mapping, wall limits, re-attach) is this module's code.
- **Small values only.** The service refuses task payloads and results over 10 MB. Arguments are
  measured with the SDK's own serializer (dill, base64) before anything is sent; a result over the
  endpoint's limit comes back as a ``TaskRaised`` saying to leave trajectories on the remote
  filesystem and return paths.
- **Limits are client-side.** Globus Compute neither reports when a task starts nor stops one it
  has sent. ``timeout_s`` therefore counts from submission (a batch job's queue wait included) and,
  when it passes, the task reads ``TaskTimedOut`` here while the remote work may run to its end;
  ``cancel`` is the same. Each task reads PENDING until it finishes.
- **Re-attach.** Tasks belong to a task group; journal ``task_group_id`` and ``remote_task_id`` and
  a later process picks the tasks up again with ``reattach`` (the SDK's ``reload_tasks``).
- **Errors are mapped at the boundary** (``_globus_errors``), by type: the remote exception (it
  arrives as traceback text) becomes ``TaskRaised``, a lost worker ``WorkerLost``, refused
  credentials or an unknown endpoint ``ConfigError``, an unreachable service ``WorkerLost``.
"""

from __future__ import annotations

import functools
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from sciagent.compute._globus_errors import map_error
from sciagent.compute.base import TaskHandle, TaskState, TaskTable, check_timeout, final_state
from sciagent.compute.errors import TaskCancelled, TaskTimedOut, WorkerLost
from sciagent.errors import UserError

__all__ = ["MAX_PAYLOAD_BYTES", "GlobusExecutor", "check_python_version"]

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
"""The Globus Compute service's limit on a task's payload and on its result."""


@dataclass(eq=False)
class _Task:
    task_id: str
    timeout_s: float | None = None
    remote: futures.Future | None = None  # the SDK's ComputeFuture, once sent
    deadline: float | None = None
    future: futures.Future = field(default_factory=futures.Future)  # ours: a value or a TaskError


def check_python_version(endpoint_python: str | None) -> str | None:
    """A warning when this Python's major.minor is not the endpoint's; None if they match or it is unknown.

    Functions, arguments and results travel as dill pickles, which do not survive a change of
    Python minor version: a mismatch shows up later as obscure (de)serialization failures.
    """
    if not endpoint_python:
        return None
    remote = ".".join(endpoint_python.strip().split(".")[:2])
    if remote == f"{sys.version_info.major}.{sys.version_info.minor}":
        return None
    return (
        f"the endpoint runs Python {endpoint_python} and this is Python {platform.python_version()}: "
        f"tasks travel as dill pickles, which break across Python versions; use Python {remote} here "
        "or rebuild the endpoint's environment with this one"
    )


def _sdk_executor(*, endpoint_id: str, task_group_id: str | None, client: Any = None) -> futures.Executor:
    from globus_compute_sdk import Executor  # heavy; and building it may ask the user to log in

    return Executor(endpoint_id=endpoint_id, task_group_id=task_group_id, client=client)


class GlobusExecutor(TaskTable[_Task]):
    """Submits tasks to a Globus Compute endpoint; see the module docstring for what that implies.

    Args:
        endpoint_id: the endpoint's UUID (``globus-compute-endpoint list`` shows it).
        name: names this executor in handles and logs.
        capacity: how many tasks the workflow should keep in flight (the endpoint's workers and
            blocks decide what actually runs at once; it queues the rest).
        task_group_id: the task group to submit into and to ``reattach`` to; None: the service
            assigns one with the first submission.
        executor_factory: builds the ``concurrent.futures.Executor`` standing for the service,
            called as ``factory(endpoint_id=..., task_group_id=...)``; defaults to
            ``globus_compute_sdk.Executor``. Tests pass a process-pool stand-in here.
        client: a ``globus_compute_sdk.Client`` (or anything with ``get_endpoint_metadata``) for
            the Python version check; defaults to the SDK executor's own client.
        max_payload_bytes: the largest serialized arguments accepted.

    Raises:
        ValueError: no endpoint id, or a capacity or payload limit below 1.
    """

    def __init__(
        self,
        endpoint_id: str,
        *,
        name: str = "globus",
        capacity: int = 4,
        task_group_id: str | None = None,
        executor_factory: Callable[..., futures.Executor] | None = None,
        client: Any = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if not endpoint_id:
            raise ValueError("endpoint_id is required: the UUID that `globus-compute-endpoint list` shows")
        if capacity < 1 or max_payload_bytes < 1:
            raise ValueError(
                f"capacity and max_payload_bytes must be 1 or more: {capacity}, {max_payload_bytes}"
            )
        # An RLock: a future may run our callback in the thread that settles it.
        super().__init__(name, capacity, threading.RLock())
        self.endpoint_id = str(endpoint_id)
        self.max_payload_bytes = max_payload_bytes
        self._factory = executor_factory or functools.partial(_sdk_executor, client=client)
        self._client = client
        self._group = str(task_group_id) if task_group_id else None
        self._sdk: futures.Executor | None = None  # built on first use: building it may need a login
        self._checked = False

    @property
    def task_group_id(self) -> str | None:
        """The task group of this executor's tasks, for the journal; None until the service assigns one."""
        group = getattr(self._sdk, "task_group_id", None) or self._group
        return str(group) if group else None

    def remote_task_id(self, handle: TaskHandle) -> str | None:
        """Globus Compute's id for the task, for the journal; None until the service has accepted it."""
        with self._lock:
            remote = self._lookup(handle).remote
        task_id = getattr(remote, "task_id", None)
        return str(task_id) if task_id else None

    # --- the Executor protocol -------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        task_id: str | None = None,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> TaskHandle:
        """Send ``fn(*args, **kwargs)`` to the endpoint; see ``Executor.submit`` and the module docstring.

        An unreachable service is not raised here: the task fails with ``WorkerLost`` (transient).

        Raises:
            TypeError: the arguments cannot be serialized.
            ValueError: serialized arguments over ``max_payload_bytes``, a duplicate ``task_id`` or a
                ``timeout_s`` that is not positive.
            ConfigError: Globus Compute refused the credentials or does not know the endpoint.
            RuntimeError: the executor is shut down.
        """
        check_timeout(timeout_s)
        self._check_payload(fn, args, kwargs)
        sdk = self._remote()
        self._check_endpoint(sdk)
        with self._lock:
            task = self._add(task_id, lambda new_id: _Task(new_id, timeout_s))
        task_id = task.task_id
        try:
            remote = sdk.submit(fn, *args, **kwargs)
        except Exception as exc:
            error = map_error(task_id, self.endpoint_id, exc)
            if isinstance(error, WorkerLost):  # the service is unreachable: a transient task failure
                task.future.set_exception(error)
                return TaskHandle(task_id, self.name)
            with self._lock:
                del self._tasks[task_id]
            if isinstance(error, UserError):
                raise error from exc
            raise
        self._attach(task, remote)
        return TaskHandle(task_id, self.name)

    def status(self, handle: TaskHandle) -> TaskState:
        """The task's state as seen here; the service does not report starts, so never RUNNING."""
        with self._lock:
            task = self._lookup(handle)
            self._expire(task, time.monotonic())
            return final_state(task.future.exception()) if task.future.done() else TaskState.PENDING

    def cancel(self, handle: TaskHandle) -> bool:
        """Stop waiting for the task: it ends here as cancelled, but an endpoint may still run it."""
        with self._lock:
            task = self._lookup(handle)
            if task.future.done():
                return False
            task.future.set_exception(TaskCancelled(task.task_id))
        log.warning("task %s cancelled here; Globus Compute cannot stop a task it has sent", task.task_id)
        return True

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop accepting tasks; wait for the rest, or with ``cancel`` stop waiting (remote work goes on)."""
        with self._lock:
            self._closing = True
            pending = [task for task in self._tasks.values() if not task.future.done()]
            if cancel:
                for task in pending:
                    task.future.set_exception(TaskCancelled(task.task_id, "cancelled: executor shut down"))
        if cancel and pending:
            log.warning("executor %s: %d tasks cancelled here may run on", self.name, len(pending))
        while pending := [task for task in pending if not task.future.done()]:
            self._wait(pending, None)
        if self._sdk is not None:
            self._sdk.shutdown(wait=False, cancel_futures=cancel)

    # --- re-attach -------------------------------------------------------------------------------

    def reattach(
        self, task_group_id: str | None = None, *, task_ids: Mapping[str, str] | None = None
    ) -> list[TaskHandle]:
        """Pick up the tasks of a task group sent earlier, by another process or before a restart.

        Args:
            task_group_id: the group to reload; defaults to the one given to the constructor.
            task_ids: our task id -> Globus Compute's (as journaled from ``remote_task_id``); those
                tasks get their old handles back, the others are named by Globus Compute's id.

        Returns:
            A handle for each task of the group that this executor did not know yet. Their wall
            limits are not restored: when they were sent is not known here.

        Raises:
            ValueError: no task group id at all.
            ConfigError: credentials refused, or the task group is not known.
            ConnectionError: Globus Compute could not be reached; try again later.
        """
        group = str(task_group_id or self._group or "")
        if not group:
            raise ValueError("reattach needs a task group id: the one journaled from `task_group_id`")
        sdk = self._remote()
        if not hasattr(sdk, "reload_tasks"):
            raise TypeError(f"{type(sdk).__name__} cannot reload tasks by task group")
        try:
            remotes = list(sdk.reload_tasks(group))
        except Exception as exc:
            error = map_error("", self.endpoint_id, exc)
            if isinstance(error, UserError):
                raise error from exc
            raise ConnectionError(f"could not reload task group {group} from Globus Compute: {exc}") from exc
        self._group = group
        ours = {remote: local for local, remote in (task_ids or {}).items()}
        handles = []
        for remote in remotes:
            remote_id = str(remote.task_id)
            task_id = ours.get(remote_id, remote_id)
            with self._lock:
                known = {str(getattr(task.remote, "task_id", "")) for task in self._tasks.values()}
                if task_id in self._tasks or remote_id in known:
                    continue
                task = self._tasks[task_id] = _Task(task_id)
            self._attach(task, remote)
            handles.append(TaskHandle(task_id, self.name))
        return handles

    # --- internals -------------------------------------------------------------------------------

    def _remote(self) -> futures.Executor:
        """The SDK executor, built on first use."""
        with self._lock:
            if self._sdk is None:
                try:
                    self._sdk = self._factory(endpoint_id=self.endpoint_id, task_group_id=self._group)
                except Exception as exc:
                    error = map_error("", self.endpoint_id, exc)
                    if isinstance(error, UserError):
                        raise error from exc
                    raise
            return self._sdk

    def _check_payload(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        """Measure the arguments as the SDK will send them (dill, base64), before anything is sent."""
        from globus_compute_sdk.serialize import ComputeSerializer

        name = getattr(fn, "__qualname__", repr(fn))
        serializer = ComputeSerializer()
        try:
            size = len(serializer.serialize(args)) + len(serializer.serialize(kwargs))
        except Exception as exc:
            raise TypeError(f"cannot send the arguments of {name} to Globus Compute: {exc}") from exc
        if size > self.max_payload_bytes:
            raise ValueError(
                f"payload too large: the arguments of {name} serialize to {size:,} bytes, over the limit of "
                f"{self.max_payload_bytes:,}: pass paths on the remote filesystem, not data"
            )

    def _check_endpoint(self, sdk: futures.Executor) -> None:
        """Once, before the first submission: warn when the endpoint's Python is not ours."""
        client = self._client if self._client is not None else getattr(sdk, "client", None)
        if self._checked or client is None:
            return
        try:
            metadata = client.get_endpoint_metadata(self.endpoint_id) or {}
        except Exception as exc:
            error = map_error("", self.endpoint_id, exc)
            if isinstance(error, UserError):
                raise error from exc
            log.warning("endpoint %s: no metadata (%s), Python versions not compared", self.endpoint_id, exc)
            metadata = {}
        self._checked = True
        python = metadata.get("python_version") or (metadata.get("metadata") or {}).get("python_version")
        warning = check_python_version(python)
        if warning:
            log.warning("Globus Compute endpoint %s: %s", self.endpoint_id, warning)

    def _attach(self, task: _Task, remote: futures.Future) -> None:
        task.remote = remote
        if task.timeout_s is not None:
            task.deadline = time.monotonic() + task.timeout_s
        remote.add_done_callback(functools.partial(self._settle, task))

    def _settle(self, task: _Task, remote: futures.Future) -> None:
        """The SDK's future is done: settle ours, unless it already ended here (timeout, cancel)."""
        if remote.cancelled():
            value, error = None, TaskCancelled(task.task_id, "cancelled by the Globus Compute SDK")
        elif remote.exception() is not None:
            value, error = None, map_error(task.task_id, self.endpoint_id, remote.exception())
        else:
            value, error = remote.result(), None
        with self._lock:
            if task.future.done():
                return
            if error is None:
                task.future.set_result(value)
            else:
                task.future.set_exception(error)

    def _expire(self, task: _Task, now: float) -> None:
        """Fail the task with ``TaskTimedOut`` once its deadline has passed; call with the lock held."""
        if task.deadline is not None and now >= task.deadline and not task.future.done():
            task.future.set_exception(TaskTimedOut(task.task_id, task.timeout_s or 0.0))
            log.warning(
                "task %s passed its %g s limit; the endpoint may still run it", task.task_id, task.timeout_s
            )

    def _wait(self, tasks: list[_Task], timeout: float | None) -> list[_Task]:
        """Wait until one of ``tasks`` has ended, its deadline included, or ``timeout``; the ended ones.

        Overrides the table's wait: a task past its client-side limit ends here before its future does.
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                now = time.monotonic()
                for task in tasks:
                    self._expire(task, now)
                done = [task for task in tasks if task.future.done()]
                wakes = [task.deadline for task in tasks if task.deadline is not None and task not in done]
            if done or (end is not None and now >= end):
                return done
            wake = min([*wakes, *([end] if end is not None else [])], default=None)
            pending = [task.future for task in tasks]
            futures.wait(pending, None if wake is None else max(0.0, wake - now), futures.FIRST_COMPLETED)
