"""Run tasks through Parsl's HighThroughputExecutor (HTEX): this machine, PBS Pro or Slurm, one code path.

Each ``ParslExecutor`` owns a ``DataFlowKernel`` of its own (not Parsl's global one), so several
sites can be open at once. Tasks wait in our FIFO queue and at most ``capacity`` are handed to Parsl
at a time: that keeps PENDING honest (Parsl cannot tell a task queued in its interchange from a
running one) and lets a queued task be cancelled. RUNNING therefore means "handed to Parsl"; on a
batch provider that includes waiting for the block's job to start.

Retries have one owner per failure kind. Parsl re-runs a task only when its worker, manager or block
was lost (``retry_cost``): a node failure, or a batch job killed at its walltime. The task runs again
with the same arguments, hence the same work directory, so ``run_md`` resumes from its checkpoint.
An exception raised by the task is never retried here; physics failures are not exceptions anyway
(``run_md`` returns a failed ``MDResult``), and the workflow layer decides what to do about them.

Parsl caveats, each deliberate:
- ``timeout_s`` is Parsl's ``walltime``: an ``AppTimeout`` injected into the worker's thread. It
  lands at the next Python bytecode, so a long blocking C call (``time.sleep``, one long
  ``integrator.step``) delays it; ``run_md`` steps in chunks, so it stops at the next chunk. The worker
  process survives (it serves the next task) and anything the task started keeps running.
- A running task cannot be cancelled (Parsl has no such call); ``cancel`` says False for it.
- Parsl's ``WorkerLost`` carries no exit code, so ours has ``exitcode=None``.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import zmq
from parsl.app.errors import AppTimeout
from parsl.app.python import PythonApp
from parsl.config import Config
from parsl.dataflow.dflow import DataFlowKernel
from parsl.executors import HighThroughputExecutor
from parsl.executors.errors import BadStateException
from parsl.executors.high_throughput.errors import ManagerLost
from parsl.executors.high_throughput.errors import WorkerLost as ParslWorkerLost
from parsl.providers import LocalProvider

from sciagent.compute.base import TaskHandle, TaskState, TaskTable, final_state, pickle_call
from sciagent.compute.errors import (
    TaskCancelled,
    TaskError,
    TaskRaised,
    TaskTimedOut,
    WorkerLost,
    qualified_type_name,
)

__all__ = ["LOST", "ParslExecutor", "local_htex", "retry_cost", "to_task_error"]

log = logging.getLogger(__name__)

LOST: tuple[type[Exception], ...] = (ManagerLost, ParslWorkerLost, BadStateException)
"""Parsl's ways of saying the task's process is gone, not that the task failed: worth a retry."""


def retry_cost(exception: Exception, task_record: Any) -> float:
    """Parsl ``retry_handler``: 1 for a lost worker, manager or block; never retry anything else.

    A lost worker/manager (node failure, out-of-memory kill, batch job killed at walltime) or an
    executor in a bad state (its blocks failed) costs 1, so ``retries`` re-runs resume from the
    checkpoint. Any other exception (a bug, a timeout) would fail the same way again: it costs more
    than the whole budget.
    """
    if isinstance(exception, LOST):
        return 1.0
    return float(task_record["dfk"].config.retries + 1)


def _run_task(payload: bytes, env: dict[str, str], task_id: str, walltime: float | None = None) -> Any:
    """Worker-side trampoline: apply ``env``, then unpickle and call the task.

    The call arrives pickled so that ``env`` (``OPENMM_CPU_THREADS``, read once when OpenMM is
    imported) is in place before the task's module is imported. An exception becomes ``TaskRaised``
    here, with the traceback as text, because its class may not be importable where the result is
    read. ``walltime`` is Parsl's: it wraps this call and is passed along, unused.
    """
    os.environ.update(env)
    try:
        fn, args, kwargs = pickle.loads(payload)
        return fn(*args, **kwargs)
    except AppTimeout:
        raise
    except (Exception, SystemExit) as exc:
        raise TaskRaised(task_id, qualified_type_name(exc), str(exc), traceback.format_exc()) from None


def to_task_error(task_id: str, exc: BaseException, timeout_s: float | None) -> TaskError:
    """Map what a Parsl app future raised to our most specific ``TaskError``."""
    if isinstance(exc, TaskError):
        return exc
    if isinstance(exc, AppTimeout):
        return TaskTimedOut(task_id, timeout_s or 0.0)
    if isinstance(exc, LOST):
        return WorkerLost(task_id, None, f"{type(exc).__name__}: {exc}")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskRaised(task_id, qualified_type_name(exc), str(exc), text)


@dataclass(eq=False)
class _Task:
    """One task: its pickled call until it is handed to Parsl, then Parsl's future."""

    task_id: str
    payload: bytes
    timeout_s: float | None
    future: futures.Future = field(default_factory=futures.Future)
    launched: bool = False


class ParslExecutor(TaskTable[_Task]):
    """The Executor protocol on a Parsl ``HighThroughputExecutor`` with a DataFlowKernel of its own.

    Args:
        htex: the HTEX to run on (``local_htex`` here; a PBS Pro or Slurm provider at a site).
        name: names this executor in handles and logs.
        run_dir: Parsl's run directory: ``NNN/parsl.log``, with the interchange's and the workers'
            logs beside it; Parsl's log records go only there.
        retries: re-runs Parsl may spend on a lost worker, manager or block (see ``retry_cost``).
            0 by default, and at every site: a study's lost-worker retries belong to the
            workflow (``RetryLimits.transient_retries``), which journals each attempt and resumes
            it from its checkpoint; two owners would multiply (1 + 2) x (1 + 2) executions, each
            possibly a new batch job. Set it only when using this executor on its own.
        capacity: tasks handed to Parsl at once; defaults to the HTEX's workers per node times the
            provider's nodes per block times its maximum blocks.
        worker_env: environment applied in the worker before each task is unpickled (thread counts);
            Parsl itself sets the accelerator variables from ``available_accelerators``.

    Raises:
        ValueError: a negative ``retries``, a ``capacity`` below 1, or no way to know the capacity.
    """

    def __init__(
        self,
        htex: HighThroughputExecutor,
        *,
        name: str = "parsl",
        run_dir: Path,
        retries: int = 0,
        capacity: int | None = None,
        worker_env: dict[str, str] | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be zero or more, got {retries}")
        capacity = _default_capacity(htex) if capacity is None else capacity
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        _put_venv_on_path()
        _keep_parsl_log_in_run_dir()
        # An RLock: it is re-entered when Parsl settles a future inside our own call.
        super().__init__(name, capacity, threading.RLock())
        self.run_dir = Path(run_dir)
        self._env = dict(worker_env or {})
        self._queue: deque[_Task] = deque()
        self._in_flight = 0
        self._dispatching = False
        self._closed = False
        config = Config(
            executors=[htex],
            run_dir=str(self.run_dir),
            retries=retries,
            retry_handler=retry_cost,
            strategy="simple",  # brings a replacement block up after one is lost; frees idle ones
            strategy_period=1,  # the first blocks start on the first tick (Parsl's default: after 5 s)
        )
        self._dfk = DataFlowKernel(config)
        self._app = PythonApp(_run_task, data_flow_kernel=self._dfk, executors=[htex.label])
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
        """Queue ``fn(*args, **kwargs)``; see ``Executor.submit``.

        Raises:
            TypeError: the function or its arguments cannot be pickled.
            ValueError: a duplicate ``task_id`` or a ``timeout_s`` that is not positive.
            RuntimeError: the executor is shut down.
        """
        payload = pickle_call(fn, args, kwargs, timeout_s, "a Parsl worker")
        with self._lock:
            task = self._add(task_id, lambda new_id: _Task(new_id, payload, timeout_s))
            self._queue.append(task)
            self._dispatch()
        return TaskHandle(task.task_id, self.name)

    def status(self, handle: TaskHandle) -> TaskState:
        """PENDING in our queue, RUNNING once handed to Parsl, then the final state."""
        with self._lock:
            task = self._lookup(handle)
            if task.future.done():
                return final_state(task.future.exception())
            return TaskState.RUNNING if task.launched else TaskState.PENDING

    def cancel(self, handle: TaskHandle) -> bool:
        """Drop a task still in our queue. Best effort: Parsl cannot stop a running task (False)."""
        with self._lock:
            task = self._lookup(handle)
            if task.future.done():
                return False
            if task.launched:
                log.warning(
                    "executor %s: task %s is running; Parsl cannot cancel it", self.name, task.task_id
                )
                return False
            self._queue.remove(task)
            task.future.set_exception(TaskCancelled(task.task_id))
            return True

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop accepting tasks, wait for the rest (or cancel them), then end Parsl's processes.

        With ``cancel``, queued and running tasks are settled as cancelled at once. Then the
        DataFlowKernel is cleaned up: the blocks are scaled in (a LocalProvider kills the block's
        process group: pool, workers and what tasks started) and the interchange is stopped.
        Idempotent.
        """
        with self._lock:
            self._closing = True
            if cancel:
                for task in [*self._queue, *(t for t in self._tasks.values() if t.launched)]:
                    if not task.future.done():
                        task.future.set_exception(
                            TaskCancelled(task.task_id, "cancelled: executor shut down")
                        )
                self._queue.clear()
            pending = [task.future for task in self._tasks.values()]
        futures.wait(pending)
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._dfk.cleanup()
        atexit.unregister(self._shutdown_at_exit)

    # --- internals -------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand queued tasks to Parsl while fewer than ``capacity`` are there; call with the lock."""
        if self._dispatching:  # a future settled inside our own loop below: that loop continues
            return
        self._dispatching = True
        try:
            while self._queue and self._in_flight < self.capacity:
                task = self._queue.popleft()
                task.launched = True
                self._in_flight += 1
                extra = {} if task.timeout_s is None else {"walltime": task.timeout_s}
                try:
                    app_future = self._app(task.payload, self._env, task.task_id, **extra)
                except Exception as exc:  # the DataFlowKernel refused it (cleaned up, say)
                    self._in_flight -= 1
                    task.future.set_exception(TaskError(task.task_id, f"Parsl refused the task: {exc!r}"))
                    continue
                task.payload = b""
                app_future.add_done_callback(partial(self._settle, task))
        finally:
            self._dispatching = False

    def _settle(self, task: _Task, app_future: futures.Future) -> None:
        """Parsl finished the task (after its retries): map the outcome and launch the next one."""
        error = app_future.exception()
        with self._lock:
            self._in_flight -= 1
            if not task.future.done():  # already settled if cancelled by shutdown
                if error is None:
                    task.future.set_result(app_future.result())
                else:
                    task.future.set_exception(to_task_error(task.task_id, error, task.timeout_s))
            self._dispatch()  # after a plain shutdown too: queued tasks still run
        log.debug("executor %s: task %s %s", self.name, task.task_id, final_state(error).value)

    def _shutdown_at_exit(self) -> None:
        # Parsl's own exit hook only warns; without this, an interpreter exit would orphan the blocks.
        self.shutdown(cancel=True)


def local_htex(
    workers: int,
    *,
    label: str = "htex_local",
    threads_per_worker: int = 1,
    accelerators: list[str] | None = None,
    heartbeat_period: int = 2,
    heartbeat_threshold: int = 30,
) -> HighThroughputExecutor:
    """An HTEX on this machine: one block (a ``LocalProvider`` pool) of ``workers`` worker processes.

    ``threads_per_worker`` is exported as ``OPENMM_CPU_THREADS`` and ``OMP_NUM_THREADS`` in the pool's
    ``worker_init``, so every worker has it before OpenMM is imported. ``cores_per_worker`` is the
    cores divided by ``workers``, because HTEX caps the workers at cores / cores_per_worker.

    With ``accelerators`` (device ids), Parsl's worker pool pins worker *i* to the *i*-th id by setting
    ``CUDA_VISIBLE_DEVICES`` (NVIDIA; where ``nvidia-smi`` counts fewer GPUs than workers, integer ids
    are folded so several workers share a GPU, for MPS), ``ROCR_VISIBLE_DEVICES`` (AMD), and
    ``ZE_AFFINITY_MASK`` with ``ZE_ENABLE_PCI_ID_DEVICE_ORDER=1`` (Intel Level Zero: ids like ``"0.0"``,
    ``"0.1"`` select one tile, as a facility's Aurora examples do for its 12 tiles per node).

    The interchange is CurveZMQ-encrypted wherever pyzmq can do it: it listens on ``127.0.0.1``, which
    every user of the machine can reach (``sciagent.compute._site_builders`` says why a site's is not).

    The pool notices a dead worker within ``heartbeat_period`` seconds; the interchange declares the
    whole pool lost after ``heartbeat_threshold`` seconds of silence (kept generous: a false alarm
    re-runs a task that is still running).

    Raises:
        ValueError: a count below 1, or fewer accelerators than workers.
    """
    if workers < 1 or threads_per_worker < 1:
        raise ValueError(
            f"workers and threads_per_worker must be at least 1, got {workers}, {threads_per_worker}"
        )
    if accelerators is not None and len(accelerators) < workers:
        raise ValueError(
            f"{workers} workers but {len(accelerators)} accelerators: Parsl runs at most one worker per "
            "accelerator id; list an id per worker (repeat ids to share a device)"
        )
    threads = str(threads_per_worker)
    provider = LocalProvider(
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        worker_init=f"export OPENMM_CPU_THREADS={threads} OMP_NUM_THREADS={threads}",
    )
    return HighThroughputExecutor(
        label=label,
        provider=provider,
        address="127.0.0.1",
        encrypted=zmq.has("curve"),
        max_workers_per_node=workers,
        cores_per_worker=(os.cpu_count() or 1) / workers * (1 - 1e-9),  # floor() must not drop one
        available_accelerators=list(accelerators or ()),
        heartbeat_period=heartbeat_period,
        heartbeat_threshold=heartbeat_threshold,
    )


def _default_capacity(htex: HighThroughputExecutor) -> int:
    provider = htex.provider
    unknown = htex.max_workers_per_node == float("inf") and not htex.available_accelerators
    if unknown and getattr(provider, "cores_per_node", None) is None:
        raise ValueError(
            f"cannot tell how many workers HTEX {htex.label!r} will start: set its "
            "max_workers_per_node (or the provider's cores_per_node), or pass capacity="
        )
    nodes = getattr(provider, "nodes_per_block", 1) * getattr(provider, "max_blocks", 1)
    return max(1, int(htex.workers_per_node) * nodes)


def _keep_parsl_log_in_run_dir() -> None:
    """Keep Parsl's records in its own ``parsl.log`` (under ``run_dir``), out of the application's log.

    Parsl sets its logger to DEBUG for ``parsl.log``; propagated, every record would also reach the
    application's handlers (a ``logging.basicConfig`` handler lets all levels through), and its
    errors would repeat, in Parsl's words, what our ``TaskError`` already says at the boundary.
    """
    logging.getLogger("parsl").propagate = False


def _put_venv_on_path() -> None:
    """Prepend this interpreter's ``bin/`` to PATH when it is missing.

    HTEX starts ``interchange.py`` and (through the provider's shell) ``process_worker_pool.py`` by
    name; both are scripts installed next to this interpreter, which is not on PATH when the venv's
    Python is run without activating the venv (``.venv/bin/python``, a service, an IDE).
    """
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join(filter(None, [bin_dir, os.environ.get("PATH")]))
