"""GlobusExecutor against a stand-in for the Globus Compute service, placed at the SDK boundary.

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

Everything above that boundary is GlobusExecutor's real code.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import globus_sdk
import pytest
import requests
from globus_compute_sdk.errors import MaxResultSizeExceeded, TaskExecutionFailed
from globus_compute_sdk.sdk.asynchronous.compute_future import ComputeFuture
from globus_compute_sdk.serialize import ComputeSerializer

from compute_tasks import raise_value_error, sleep_then_return
from sciagent.compute.base import Executor, TaskHandle, TaskState
from sciagent.compute.errors import TaskRaised, TaskTimedOut, WorkerLost, is_transient
from sciagent.compute.globus_executor import GlobusExecutor, check_python_version
from sciagent.errors import ConfigError
from sciagent.science.md import MDResult, run_md
from sciagent.science.spec import MDSpec

pytestmark = pytest.mark.timeout(180)

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


def make_bytes(size: int) -> bytes:
    return b"x" * size


class StandInService:
    """The service and one endpoint: a process pool, and every task sent, by task group."""

    def __init__(self, workers: int = 2) -> None:
        self.pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self.groups: dict[str, dict[str, futures.Future]] = {}

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
        """Nothing to stop: the service and its workers outlive any one client."""


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


@pytest.fixture(scope="module")
def service() -> Iterator[StandInService]:
    service = StandInService()
    yield service
    service.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def make_executor(service: StandInService) -> Iterator[Callable[..., GlobusExecutor]]:
    made: list[GlobusExecutor] = []

    def make(**options: Any) -> GlobusExecutor:
        options.setdefault("executor_factory", service.factory)
        made.append(GlobusExecutor(ENDPOINT, **options))
        return made[-1]

    yield make
    for executor in made:
        executor.shutdown(cancel=True)


def _api_error(status: int, code: str) -> globus_sdk.GlobusAPIError:
    response = requests.Response()
    response.status_code = status
    response._content = f'{{"code": "{code}", "message": "from the service"}}'.encode()
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request(
        "GET", f"https://compute.api.globus.org/v2/endpoints/{ENDPOINT}"
    ).prepare()
    return globus_sdk.GlobusAPIError(response)


def test_a_small_task_round_trips(make_executor: Callable[..., GlobusExecutor]) -> None:
    executor = make_executor()
    assert isinstance(executor, Executor)
    handle = executor.submit(sleep_then_return, 0.0, {"answer": 42})
    assert executor.result(handle, timeout=60)["value"] == {"answer": 42}
    assert executor.status(handle) is TaskState.COMPLETED
    assert executor.task_group_id and executor.remote_task_id(handle)


@pytest.mark.slow
def test_an_md_run_returns_a_small_result_and_leaves_its_trajectory_in_the_workdir(
    make_executor: Callable[..., GlobusExecutor], quick_spec_fields: dict, workdir: Path
) -> None:
    spec = MDSpec(**{**quick_spec_fields, "production_steps": 100, "minimize_max_iterations": 100})
    executor = make_executor()
    handle = executor.submit(run_md, spec, str(workdir), timeout_s=150)
    result = executor.result(handle)
    assert isinstance(result, MDResult) and result.ok, result.message
    trajectory = Path(result.files["trajectory"])
    assert trajectory.parent == workdir.resolve() and trajectory.stat().st_size > 0
    assert len(ComputeSerializer().serialize(result)) < 64 * 1024  # paths came back, not frames


def test_too_large_a_payload_is_refused_before_anything_is_sent(
    make_executor: Callable[..., GlobusExecutor], service: StandInService
) -> None:
    executor = make_executor()
    sent = sum(len(tasks) for tasks in service.groups.values())
    with pytest.raises(ValueError, match=r"payload too large.*pass paths on the remote filesystem, not data"):
        executor.submit(sleep_then_return, 0.0, b"x" * 8_000_000, task_id="big")  # 10.7 MB as sent
    assert sum(len(tasks) for tasks in service.groups.values()) == sent
    executor.submit(sleep_then_return, 0.0, task_id="big")  # the id was not taken


def test_too_large_a_result_says_to_leave_files_on_the_remote_filesystem(
    make_executor: Callable[..., GlobusExecutor],
) -> None:
    executor = make_executor()
    handle = executor.submit(make_bytes, 8_000_000)
    with pytest.raises(TaskRaised, match="remote filesystem") as raised:
        executor.result(handle, timeout=60)
    assert raised.value.type_name == "MaxResultSizeExceeded"
    assert "limit 10,485,760" in raised.value.error_message


def test_a_task_past_its_limit_times_out_here(make_executor: Callable[..., GlobusExecutor]) -> None:
    executor = make_executor()
    handle = executor.submit(sleep_then_return, 5.0, timeout_s=0.5)  # the worker sleeps on: nothing stops it
    assert executor.wait_any([handle]) == [handle]
    with pytest.raises(TaskTimedOut) as timed_out:
        executor.result(handle)
    assert timed_out.value.timeout_s == 0.5
    assert executor.status(handle) is TaskState.FAILED


def test_a_remote_exception_comes_back_with_its_traceback(
    make_executor: Callable[..., GlobusExecutor],
) -> None:
    executor = make_executor()
    handle = executor.submit(raise_value_error, "no such residue")
    with pytest.raises(TaskRaised) as raised:
        executor.result(handle, timeout=60)
    assert (raised.value.type_name, raised.value.error_message) == ("ValueError", "no such residue")
    assert "Traceback" in raised.value.traceback_text and "raise_value_error" in raised.value.traceback_text
    assert executor.status(handle) is TaskState.FAILED


def test_reattach_by_task_group_finds_a_task_another_executor_sent(
    make_executor: Callable[..., GlobusExecutor],
) -> None:
    first = make_executor()
    handle = first.submit(sleep_then_return, 1.0, "finished later", task_id="run-1")
    group, remote_id = first.task_group_id, first.remote_task_id(handle)
    first.shutdown(cancel=True)  # this process "ends"; the task runs on

    second = make_executor(task_group_id=group)
    handles = second.reattach(task_ids={"run-1": remote_id})
    assert handles == [TaskHandle("run-1", second.name)]
    assert second.result(handles[0], timeout=60)["value"] == "finished later"
    assert second.reattach() == []  # nothing new in the group
    with pytest.raises(ValueError, match="task group id"):
        make_executor().reattach()


def test_a_python_version_other_than_the_endpoints_is_warned_about_once(
    make_executor: Callable[..., GlobusExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    other = f"{sys.version_info.major}.{sys.version_info.minor + 1}.2"
    client = StandInClient(python_version=other)
    executor = make_executor(client=client)
    with caplog.at_level(logging.WARNING, logger="sciagent.compute.globus_executor"):
        for _ in range(2):
            executor.result(executor.submit(sleep_then_return, 0.0), timeout=60)
    warnings = [record for record in caplog.records if other in record.getMessage()]
    assert len(warnings) == 1 and client.calls == 1
    assert f"use Python {other.rsplit('.', 1)[0]}" in warnings[0].getMessage()
    assert check_python_version(f"{sys.version_info.major}.{sys.version_info.minor}.99") is None
    assert check_python_version(None) is None


def test_an_unknown_endpoint_is_a_config_error_at_submission(
    make_executor: Callable[..., GlobusExecutor],
) -> None:
    executor = make_executor(client=StandInClient(error=_api_error(404, "ENDPOINT_NOT_FOUND")))
    with pytest.raises(ConfigError, match=ENDPOINT):
        executor.submit(sleep_then_return, 0.0)


class FailingExecutor(futures.Executor):
    """A service whose every task fails with one error: how each SDK error reads here."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ComputeFuture:
        future = ComputeFuture(str(uuid.uuid4()))
        future.set_exception(self.error)
        return future


_ENGINE_LOST = (
    "+" * 68
    + '\nTraceback (most recent call last):\n  File "interchange.py", line 9, in _poll\n    raise lost\n'
    + "parsl.executors.high_throughput.errors.WorkerLost: Task failure due to loss of worker 3 on host x41\n"
    + "-" * 68
)


@pytest.mark.parametrize(
    ("error", "expected", "transient"),
    [
        (globus_sdk.NetworkError("connection refused", ConnectionError("refused")), WorkerLost, True),
        (_api_error(503, "SERVICE_UNAVAILABLE"), WorkerLost, True),
        (TaskExecutionFailed(_ENGINE_LOST), WorkerLost, True),
        (_api_error(401, "UNAUTHORIZED"), ConfigError, False),
    ],
    ids=["unreachable", "service-error", "worker-lost", "credentials"],
)
def test_sdk_errors_are_mapped_to_ours(error: BaseException, expected: type, transient: bool) -> None:
    executor = GlobusExecutor(ENDPOINT, executor_factory=lambda **_: FailingExecutor(error))
    handle = executor.submit(sleep_then_return, 0.0)
    with pytest.raises(expected) as caught:
        executor.result(handle, timeout=5)
    assert is_transient(caught.value) is transient
    if isinstance(caught.value, WorkerLost):
        assert executor.status(handle) is TaskState.FAILED
