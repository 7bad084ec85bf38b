"""GlobusExecutor against a stand-in for the Globus Compute service at the SDK boundary.

The Globus Compute cloud cannot be reached from here; ``globus_standin`` says what the stand-in
reproduces of the SDK and the service. Everything above that boundary is GlobusExecutor's real code.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import globus_sdk
import pytest
import requests
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk.asynchronous.compute_future import ComputeFuture
from globus_compute_sdk.serialize import ComputeSerializer

from compute_tasks import raise_value_error, sleep_then_return
from globus_standin import ENDPOINT, StandInClient, StandInService
from sciagent.compute.base import Executor, TaskHandle, TaskState
from sciagent.compute.errors import TaskRaised, TaskTimedOut, WorkerLost, is_transient
from sciagent.compute.globus_executor import GlobusExecutor, check_python_version
from sciagent.errors import ConfigError
from sciagent.science.md import MDResult, run_md
from sciagent.science.spec import MDSpec

pytestmark = pytest.mark.timeout(180)

def make_bytes(size: int) -> bytes:
    return b"x" * size


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
