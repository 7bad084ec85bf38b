"""A stand-in for the Globus Compute service, placed at the SDK boundary, for the executor tests.

The Globus Compute cloud cannot be reached from here. The SDK's ``globus_compute_sdk.Executor`` is a
``concurrent.futures.Executor``, so the stand-in is one too: a ``ProcessPoolExecutor`` (spawned
processes, as an endpoint's workers are processes of their own) plus the little the SDK and the
service add that GlobusExecutor relies on, and nothing more:

- futures are the SDK's own ``ComputeFuture`` carrying a service-assigned ``task_id``;
- a task group is assigned with the first submission when none was given;
- a task's exception arrives as ``TaskExecutionFailed`` carrying the remote traceback as text, and a
  result over the endpoint's 10 MB limit as ``MaxResultSizeExceeded`` sent as its ``repr`` (what
  ``globus_compute_endpoint``'s ``execute_task`` and ``get_error_string`` do);
- ``reload_tasks(task_group_id)`` answers from a registry of every task sent, shared by all the
  executors one ``StandInService`` builds (the cloud's memory), which is what re-attach needs.

Everything above that boundary (``GlobusExecutor``) is the real code. A module of its own, so the
executor contract suite, the Globus tests and the re-attach tests share one stand-in.
"""

from __future__ import annotations

import multiprocessing
import traceback
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import Any

from globus_compute_sdk.errors import MaxResultSizeExceeded, TaskExecutionFailed
from globus_compute_sdk.sdk.asynchronous.compute_future import ComputeFuture
from globus_compute_sdk.serialize import ComputeSerializer

ENDPOINT = "4b116d3c-1703-4f8f-9f6f-39921e5864df"
RESULT_LIMIT = 10 * 1024 * 1024  # the endpoint's default result limit


def run_on_endpoint(fn: Callable[..., Any], args: tuple, kwargs: dict, result_limit: int) -> tuple[str, Any]:
    """What an endpoint worker does with a task: run it, measure the result, report errors as text."""
    try:
        value = fn(*args, **kwargs)
        size = len(ComputeSerializer().serialize(value))
        if size > result_limit:
            raise MaxResultSizeExceeded(size, result_limit)
    except MaxResultSizeExceeded as exc:
        return "error", repr(exc)
    except Exception:
        return "error", traceback.format_exc()
    return "ok", value


class StandInService:
    """The service and one endpoint: a process pool, and every task sent, by task group.

    Args:
        workers: the endpoint's worker processes.
        private: the service serves one client only, and the client's ``shutdown`` ends the
            endpoint's workers too (the contract suite builds one per executor, so no worker is
            left behind by a test, and a cancelled sleeper holds no worker another test needs).
    """

    def __init__(self, workers: int = 2, *, private: bool = False) -> None:
        self.pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self.groups: dict[str, dict[str, futures.Future]] = {}
        self.private = private

    def stop(self) -> None:
        """End the endpoint: queued tasks dropped, running workers killed."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())  # public only in 3.14
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()

    def factory(self, *, endpoint_id: str, task_group_id: str | None) -> StandInExecutor:
        return StandInExecutor(self, task_group_id)


class StandInExecutor(futures.Executor):
    """What ``globus_compute_sdk.Executor`` is to GlobusExecutor, over ``StandInService``."""

    def __init__(self, service: StandInService, task_group_id: str | None) -> None:
        self.service = service
        self.task_group_id = task_group_id

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ComputeFuture:
        self.task_group_id = self.task_group_id or str(uuid.uuid4())
        task_id = str(uuid.uuid4())
        inner = self.service.pool.submit(run_on_endpoint, fn, args, kwargs, RESULT_LIMIT)
        self.service.groups.setdefault(self.task_group_id, {})[task_id] = inner
        return _compute_future(task_id, inner)

    def reload_tasks(self, task_group_id: str | None = None) -> list[ComputeFuture]:
        self.task_group_id = task_group_id or self.task_group_id
        tasks = self.service.groups.get(str(self.task_group_id), {})
        return [_compute_future(task_id, inner) for task_id, inner in tasks.items()]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The service and its workers outlive any one client, unless it is private to this one."""
        if self.service.private:
            self.service.stop()


def _compute_future(task_id: str, inner: futures.Future) -> ComputeFuture:
    outer = ComputeFuture(task_id)

    def relay(done: futures.Future) -> None:
        if done.exception() is not None:
            outer.set_exception(done.exception())
            return
        kind, payload = done.result()
        if kind == "ok":
            outer.set_result(payload)
        else:
            outer.set_exception(TaskExecutionFailed(payload))

    inner.add_done_callback(relay)
    return outer


class StandInClient:
    """The one ``globus_compute_sdk.Client`` call GlobusExecutor makes: the endpoint's metadata."""

    def __init__(self, python_version: str | None = None, error: Exception | None = None) -> None:
        self.python_version = python_version
        self.error = error
        self.calls = 0

    def get_endpoint_metadata(self, endpoint_id: str) -> dict:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"hostname": "aurora-uan-0009", "python_version": self.python_version}
