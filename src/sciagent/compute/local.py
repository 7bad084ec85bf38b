"""Run tasks on this machine, each in a child process of its own.

Why a process per task rather than a pool: a task's wall limit or a cancel must end exactly that
task, and anything it started, without breaking the workers of the others. Each child starts its
own session (``setsid``), so SIGTERM/SIGKILL go to its whole process group; the group is also
killed when the task ends, so nothing a task leaves behind outlives it. Children are started with
``spawn`` (OpenMM's threads and ``fork`` don't mix): a fresh interpreter per task, which costs
about 0.1-0.3 s plus importing the task's module, and means the function must be importable by
name (a module-level function, not a lambda or a function defined in an interactive session).

Thread counts: OpenMM's CPU platform reads ``OPENMM_CPU_THREADS`` once, when ``openmm`` is imported,
so the child sets it (and ``OMP_NUM_THREADS``) before it unpickles the function, i.e. before the
task's module is imported (see ``_process``).

One monitor thread owns the child processes: it starts queued tasks (FIFO) while fewer than
``workers`` run, enforces wall limits, carries out cancels and collects results. The public methods
only change task records under the one lock and wake it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sciagent.compute._process import GRACE_S, THREAD_VARIABLES, TaskProcess, signal_group
from sciagent.compute.base import TaskHandle, TaskState, TaskTable, final_state, pickle_call
from sciagent.compute.errors import TaskCancelled, TaskError, WorkerLost

__all__ = ["GRACE_S", "THREAD_VARIABLES", "LocalExecutor"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Task:
    """One task's record: its pickled call until it starts, then its process."""

    task_id: str
    payload: bytes
    timeout_s: float | None
    future: futures.Future = field(default_factory=futures.Future)
    proc: TaskProcess | None = None


class LocalExecutor(TaskTable[_Task]):
    """Runs each task in a spawned child process on this machine, at most ``workers`` at once.

    Args:
        workers: tasks that run at once; defaults to the number of cores this process may use.
        threads_per_worker: CPU threads each task may use (``OPENMM_CPU_THREADS``,
            ``OMP_NUM_THREADS``); defaults to the cores divided among the workers, at least 1.
        start_method: multiprocessing start method; keep ``spawn`` for OpenMM.
        grace_s: how long a task being cancelled or timed out has after SIGTERM (time to write a
            checkpoint, say) before SIGKILL.
        name: names this executor in handles and logs.

    Raises:
        ValueError: a count below 1, a negative grace period or an unknown start method.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        threads_per_worker: int | None = None,
        start_method: str = "spawn",
        grace_s: float = GRACE_S,
        name: str = "local",
    ) -> None:
        cores = _usable_cores()
        workers = cores if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        threads = max(1, cores // workers) if threads_per_worker is None else threads_per_worker
        if threads < 1:
            raise ValueError(f"threads_per_worker must be at least 1, got {threads}")
        if grace_s < 0:
            raise ValueError(f"grace_s must be zero or more seconds, got {grace_s}")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"unknown start method {start_method!r}: use one of "
                f"{', '.join(multiprocessing.get_all_start_methods())} (spawn is safe with OpenMM)"
            )
        super().__init__(name, workers, threading.Lock())
        self.threads_per_worker = threads
        self.grace_s = grace_s
        self._context = multiprocessing.get_context(start_method)
        self._queue: deque[_Task] = deque()
        self._running: dict[str, _Task] = {}
        self._wake_r, wake_w = os.pipe()
        self._wake_w: int | None = wake_w  # None once the monitor has stopped and closed the pipe
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        self._monitor = threading.Thread(target=self._monitor_loop, name=f"{name}-monitor", daemon=True)
        self._monitor.start()
        atexit.register(self._shutdown_at_exit)

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
        """Queue ``fn(*args, **kwargs)`` to run in its own process; see ``Executor.submit``.

        Raises:
            TypeError: the function or its arguments cannot be pickled.
            ValueError: a duplicate ``task_id`` or a ``timeout_s`` that is not positive.
            RuntimeError: the executor is shut down.
        """
        payload = pickle_call(fn, args, kwargs, timeout_s, "a worker process")
        with self._lock:
            task = self._add(task_id, lambda new_id: _Task(new_id, payload, timeout_s))
            self._queue.append(task)
            self._wake()
        return TaskHandle(task.task_id, self.name)

    def status(self, handle: TaskHandle) -> TaskState:
        """The task's state now; RUNNING lasts until its process is gone."""
        with self._lock:
            task = self._lookup(handle)
            if task.future.done():
                return final_state(task.future.exception())
            return TaskState.PENDING if task.proc is None else TaskState.RUNNING

    def cancel(self, handle: TaskHandle) -> bool:
        """Drop a queued task, or terminate a running one's process group (SIGTERM, then SIGKILL).

        Returns True if the task will end as cancelled; a running task is reported CANCELLED once
        its process is gone (``result`` waits for that). False if it had already finished.
        """
        with self._lock:
            task = self._lookup(handle)
            if task.future.done():
                return False
            if task.proc is None:
                self._queue.remove(task)
                task.future.set_exception(TaskCancelled(task.task_id))
                return True
            if not task.proc.request_stop("cancel"):
                return task.proc.stop_reason == "cancel"
            self._wake()
        return True

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop accepting tasks, then wait for the rest, or with ``cancel`` end them now.

        With ``cancel``, queued tasks are dropped and every running process group is terminated;
        either way this returns once no child process of this executor is left.
        """
        with self._lock:
            self._closing = True
            if cancel:
                while self._queue:
                    task = self._queue.popleft()
                    task.future.set_exception(TaskCancelled(task.task_id, "cancelled: executor shut down"))
                for task in self._running.values():
                    task.proc.request_stop("shutdown")
            self._wake()
        if self._monitor is not threading.current_thread():
            self._monitor.join()
        atexit.unregister(self._shutdown_at_exit)

    # --- internals -------------------------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the monitor's wait; call with the lock held."""
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError):  # the pipe is full: a wake-up is pending anyway
                os.write(self._wake_w, b"x")

    def _shutdown_at_exit(self) -> None:
        self.shutdown(cancel=True)

    def _monitor_loop(self) -> None:
        try:
            while self._monitor_step():
                pass
        except BaseException as exc:  # never leave a caller waiting on a future nobody will settle
            log.exception("executor %s: monitor failed; ending every task", self.name)
            self._abort(exc)
        finally:
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w or -1)
                self._wake_w = None

    def _monitor_step(self) -> bool:
        """One round: start what fits, enforce limits, wait for an event, handle it. False: stop."""
        with self._lock:
            if self._closing and not self._queue and not self._running:
                return False
            while self._queue and len(self._running) < self.capacity:
                self._start(self._queue.popleft())
            now = time.monotonic()
            deadlines = [task.proc.enforce(now) for task in self._running.values()]
            watched = {obj: task for task in self._running.values() for obj in task.proc.watched()}
        due = [deadline for deadline in deadlines if deadline is not None]
        ready = wait([self._wake_r, *watched], max(0.0, min(due) - now) if due else None)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        for obj in ready:  # results first: a child that sent one and exited has both ready
            if isinstance(obj, Connection):
                watched[obj].proc.receive()
        for obj in ready:
            if obj in watched and not isinstance(obj, Connection):
                self._finish(watched[obj])
        return True

    def _start(self, task: _Task) -> None:
        try:
            task.proc = TaskProcess(
                self._context,
                task.task_id,
                task.payload,
                threads=self.threads_per_worker,
                timeout_s=task.timeout_s,
                grace_s=self.grace_s,
            )
        except Exception as exc:  # OSError: out of processes or descriptors (transient); RuntimeError:
            # spawn from a script that lacks an ``if __name__ == "__main__":`` guard (not transient)
            message = f"could not start a process: {exc}"
            lost = isinstance(exc, OSError)
            task.future.set_exception(
                WorkerLost(task.task_id, None, message) if lost else TaskError(task.task_id, message)
            )
            return
        task.payload = b""
        self._running[task.task_id] = task
        log.debug("executor %s: task %s started (pid %d)", self.name, task.task_id, task.proc.pid)

    def _finish(self, task: _Task) -> None:
        """The task's child has exited: collect it and settle the task's future."""
        value, error = task.proc.reap()
        with self._lock:
            del self._running[task.task_id]
            if error is None:
                task.future.set_result(value)
            else:
                task.future.set_exception(error)
        state, elapsed = final_state(error).value, time.monotonic() - task.proc.started
        log.debug("executor %s: task %s %s after %.2f s", self.name, task.task_id, state, elapsed)

    def _abort(self, exc: BaseException) -> None:
        with self._lock:
            self._closing = True
            for task in [*self._running.values(), *self._queue]:
                if task.proc is not None:
                    signal_group(task.proc.pid, signal.SIGKILL)
                if not task.future.done():
                    task.future.set_exception(TaskError(task.task_id, f"the local executor failed: {exc!r}"))
            self._queue.clear()
            self._running.clear()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
