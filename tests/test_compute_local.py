"""The Executor contract, run against every executor in ``FACTORIES``, plus LocalExecutor's own promises.

Every engine (local processes, Parsl, Globus Compute) is in ``FACTORIES`` and passes the same
contract tests; a promise an engine cannot keep is named, with the reason, in its ``Kind.cannot``
and those tests skip. Globus Compute runs on the process-pool stand-in of ``globus_standin`` (the
cloud cannot be reached from here): the stand-in is the service, ``GlobusExecutor`` is the real code.
Task functions live in ``compute_tasks`` so that worker processes can import them by name.
Concurrency is checked through start/end times recorded by the tasks, never through wall-clock
thresholds, so a busy machine slows these tests down but does not fail them.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from compute_tasks import (
    exit_hard,
    ignore_sigterm_and_sleep,
    kill_self,
    raise_value_error,
    report_env,
    return_unpicklable,
    run_tiny_openmm,
    sleep_then_return,
    spawn_grandchild_and_sleep,
)
from globus_standin import ENDPOINT, StandInService
from sciagent.compute.base import Executor, TaskHandle, TaskState
from sciagent.compute.errors import (
    TaskCancelled,
    TaskError,
    TaskRaised,
    TaskTimedOut,
    WorkerLost,
    is_transient,
)
from sciagent.compute.globus_executor import GlobusExecutor
from sciagent.compute.local import LocalExecutor
from sciagent.compute.parsl_executor import ParslExecutor, local_htex

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Kind:
    """How to build one kind of executor (given a scratch directory), and the promises it cannot keep.

    ``cannot`` maps a promise to the reason; the tests of that promise skip for this kind, saying why.
    """

    build: Callable[[Path], Executor]
    cannot: Mapping[str, str] = field(default_factory=dict)


def parsl_local(run_dir: Path) -> ParslExecutor:
    """Parsl HTEX on this machine, 2 workers; they import ``compute_tasks`` from ``PYTHONPATH``."""
    htex = local_htex(2, threads_per_worker=1)
    htex.provider.worker_init += f"; export PYTHONPATH={Path(__file__).parent}"
    return ParslExecutor(htex, run_dir=run_dir)


PARSL_CANNOT = {
    "exit_code": "Parsl reports a lost worker without its exit code or signal",
    "cancel_running": "Parsl cannot cancel a task once it runs",
    "end_task_processes": "a Parsl task runs inside a long-lived worker process, which outlives the "
    "task's wall limit, and what the task started is not ended",
}


def globus_on_stand_in(_: Path) -> GlobusExecutor:
    """GlobusExecutor on a service of its own with 2 endpoint workers, ended with the executor."""
    service = StandInService(2, private=True)
    return GlobusExecutor(ENDPOINT, capacity=2, executor_factory=service.factory)


GLOBUS_CANNOT = {
    "exit_code": "Globus Compute reports a lost worker without its exit code or signal",
    "report_running": "the service does not say when a task starts: a task reads PENDING until it ends",
    "cancel_running": "Globus Compute cannot stop a task it has sent",
    "end_on_shutdown": "shutdown(cancel=True) stops waiting; what the endpoint runs goes on",
    "end_task_processes": "wall limits are kept here: the endpoint runs a task past its limit to its end",
    "limit_concurrency": "the endpoint's workers decide how many tasks run at once, not the client",
}

FACTORIES = [
    pytest.param(Kind(lambda _: LocalExecutor(workers=2, threads_per_worker=1)), id="local"),
    pytest.param(Kind(parsl_local, PARSL_CANNOT), id="parsl", marks=pytest.mark.hpc),
    pytest.param(Kind(globus_on_stand_in, GLOBUS_CANNOT), id="globus"),
]


@pytest.fixture(params=FACTORIES)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param


def _requires(kind: Kind, promise: str) -> None:
    if promise in kind.cannot:
        pytest.skip(f"cannot promise {promise}: {kind.cannot[promise]}")


@pytest.fixture
def make_executor(kind: Kind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Executor]]:
    """Builds executors of one kind; every one is shut down (cancelling its tasks) afterwards."""
    made: list[Executor] = []

    def make() -> Executor:
        made.append(kind.build(tmp_path_factory.mktemp("executor")))
        return made[-1]

    yield make
    for executor in made:
        executor.shutdown(cancel=True)


@pytest.fixture
def executor(make_executor: Callable[[], Executor]) -> Executor:
    return make_executor()


def _wait_for_pids(pid_dir: Path, within_s: float = 60.0) -> tuple[int, int]:
    """The task's and its grandchild's pids, once ``spawn_grandchild_and_sleep`` has written them."""
    deadline = time.monotonic() + within_s
    while not (pid_dir / "grandchild.pid").exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    return int((pid_dir / "task.pid").read_text()), int((pid_dir / "grandchild.pid").read_text())


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for whoever adopted it)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X") or time.monotonic() > deadline:
            return state in ("Z", "X")
        time.sleep(0.05)


def _fill(executor: Executor, pid_dir: Path) -> list[TaskHandle]:
    """Occupy every slot: the first task with a grandchild (pids in ``pid_dir``), the rest asleep."""
    handles = [executor.submit(spawn_grandchild_and_sleep, str(pid_dir), 60)]
    handles += [executor.submit(sleep_then_return, 60) for _ in range(executor.capacity - 1)]
    return handles


# --- the contract --------------------------------------------------------------------------------


def test_result_comes_back_under_the_given_id(executor: Executor) -> None:
    assert isinstance(executor, Executor)
    handle = executor.submit(sleep_then_return, 0.0, value={"answer": 42}, task_id="first")
    assert handle == TaskHandle("first", executor.name)
    assert executor.result(handle, timeout=60)["value"] == {"answer": 42}
    assert executor.status(handle) is TaskState.COMPLETED
    assert executor.cancel(handle) is False


def test_a_large_result_comes_back(executor: Executor) -> None:
    blob = os.urandom(4_000_000)  # far larger than a pipe's buffer, within Globus Compute's 10 MB as sent
    assert executor.result(executor.submit(sleep_then_return, 0.0, value=blob), timeout=60)["value"] == blob


def test_a_result_that_cannot_be_sent_back_is_task_raised(executor: Executor) -> None:
    # Pickle names the generator; Globus Compute's serializer says its strategy failed.
    with pytest.raises(TaskRaised, match=r"(?i)generator|serialization failed"):
        executor.result(executor.submit(return_unpicklable), timeout=60)


def test_an_exception_comes_back_as_task_raised_with_its_traceback(executor: Executor) -> None:
    handle = executor.submit(raise_value_error, "bad input 7")
    with pytest.raises(TaskRaised) as caught:
        executor.result(handle, timeout=60)
    assert caught.value.type_name == "ValueError"
    assert caught.value.error_message == "bad input 7"
    assert "raise_value_error" in caught.value.traceback_text
    assert handle.task_id in str(caught.value)
    assert executor.status(handle) is TaskState.FAILED
    assert not is_transient(caught.value)


def test_a_hard_exit_is_a_lost_worker_with_its_exit_code(kind: Kind, executor: Executor) -> None:
    _requires(kind, "exit_code")
    handle = executor.submit(exit_hard, 3)
    with pytest.raises(WorkerLost, match="code 3") as caught:
        executor.result(handle, timeout=60)
    assert caught.value.exitcode == 3
    assert executor.status(handle) is TaskState.FAILED


def test_a_killed_worker_is_transient(kind: Kind, executor: Executor) -> None:
    _requires(kind, "exit_code")
    handle = executor.submit(kill_self)
    with pytest.raises(WorkerLost, match="SIGKILL") as caught:
        executor.result(handle, timeout=60)
    assert caught.value.exitcode == -9
    assert is_transient(caught.value)


def test_the_wall_limit_ends_the_task_and_what_it_started(
    kind: Kind, executor: Executor, tmp_path: Path
) -> None:
    _requires(kind, "end_task_processes")
    handle = executor.submit(spawn_grandchild_and_sleep, str(tmp_path), 60, timeout_s=1.5)
    task_pid, grandchild_pid = _wait_for_pids(tmp_path)
    with pytest.raises(TaskTimedOut) as caught:
        executor.result(handle, timeout=60)
    assert caught.value.timeout_s == 1.5
    assert executor.status(handle) is TaskState.FAILED
    assert _gone(task_pid) and _gone(grandchild_pid)


def test_cancel_a_queued_task(executor: Executor, tmp_path: Path) -> None:
    _fill(executor, tmp_path)
    queued = executor.submit(sleep_then_return, 0.0)
    _wait_for_pids(tmp_path)

    assert executor.status(queued) is TaskState.PENDING
    assert executor.cancel(queued) is True
    assert executor.status(queued) is TaskState.CANCELLED
    with pytest.raises(TaskCancelled):
        executor.result(queued, timeout=60)
    assert not is_transient(TaskCancelled("x"))


def test_cancel_a_running_task(kind: Kind, executor: Executor, tmp_path: Path) -> None:
    _requires(kind, "cancel_running")
    running = _fill(executor, tmp_path)
    task_pid, grandchild_pid = _wait_for_pids(tmp_path)

    assert executor.status(running[0]) is TaskState.RUNNING
    assert executor.cancel(running[0]) is True
    assert executor.wait_any(running, timeout=60) == [running[0]]
    with pytest.raises(TaskCancelled):
        executor.result(running[0], timeout=60)
    assert executor.status(running[0]) is TaskState.CANCELLED
    assert _gone(task_pid) and _gone(grandchild_pid)


def test_no_more_than_capacity_tasks_run_at_once(kind: Kind, executor: Executor) -> None:
    _requires(kind, "limit_concurrency")
    handles = [executor.submit(sleep_then_return, 1.5, value=i) for i in range(executor.capacity + 1)]
    runs = [executor.result(handle, timeout=120) for handle in handles]
    events = sorted([(run["start"], 1) for run in runs] + [(run["end"], -1) for run in runs])
    running, most = 0, 0
    for _, change in events:  # an end sorts before a start at the same instant
        running += change
        most = max(most, running)
    assert most == executor.capacity  # they ran side by side, but never more than capacity
    last = max(runs, key=lambda run: run["start"])
    assert last["start"] >= min(run["end"] for run in runs if run is not last)


def test_wait_any_returns_each_task_as_it_finishes(executor: Executor) -> None:
    slow = executor.submit(sleep_then_return, 60)
    fast = executor.submit(sleep_then_return, 0.1, value="fast")
    assert executor.wait_any([slow, fast], timeout=60) == [fast]
    assert executor.wait_any([slow], timeout=0.2) == []
    assert executor.wait_any([]) == []
    with pytest.raises(futures.TimeoutError):  # waiting ran out; the task itself keeps running
        executor.result(slow, timeout=0.2)
    assert not executor.status(slow).done


def test_a_started_task_reads_running(kind: Kind, executor: Executor, tmp_path: Path) -> None:
    _requires(kind, "report_running")
    handle = _fill(executor, tmp_path)[0]
    _wait_for_pids(tmp_path)
    assert executor.status(handle) is TaskState.RUNNING


def test_shutdown_with_cancel_settles_every_task_as_cancelled(
    kind: Kind, make_executor: Callable[[], Executor], tmp_path: Path
) -> None:
    executor = make_executor()
    running = _fill(executor, tmp_path)
    queued = executor.submit(sleep_then_return, 0.0)
    task_pid, grandchild_pid = _wait_for_pids(tmp_path)
    executor.shutdown(cancel=True)
    if "end_on_shutdown" not in kind.cannot:
        assert _gone(task_pid) and _gone(grandchild_pid)
    for handle in [*running, queued]:
        with pytest.raises(TaskCancelled):
            executor.result(handle, timeout=60)
        assert executor.status(handle) is TaskState.CANCELLED
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(sleep_then_return, 0.0)
    executor.shutdown(cancel=True)  # a second call is harmless


def test_leaving_the_context_waits_for_the_tasks(make_executor: Callable[[], Executor]) -> None:
    with make_executor() as executor:
        handle = executor.submit(sleep_then_return, 0.3, value="done")
    assert executor.status(handle) is TaskState.COMPLETED
    assert executor.result(handle, timeout=0)["value"] == "done"


def test_a_real_openmm_task_completes(executor: Executor) -> None:
    run = executor.result(executor.submit(run_tiny_openmm, 200), timeout=120)
    assert run["steps"] == 200
    assert 0.3 < run["distance_nm"] < 1.5  # bound in the well, not blown apart


# --- LocalExecutor's own promises ----------------------------------------------------------------


def test_threads_per_worker_reach_the_environment_and_openmm() -> None:
    with LocalExecutor(workers=1, threads_per_worker=3) as executor:
        env = executor.submit(report_env)
        openmm_run = executor.submit(run_tiny_openmm, 10)
        assert executor.result(env, timeout=60) == {"OPENMM_CPU_THREADS": "3", "OMP_NUM_THREADS": "3"}
        assert executor.result(openmm_run, timeout=60)["threads"] == "3"


def test_one_worker_runs_tasks_in_submission_order() -> None:
    with LocalExecutor(workers=1, threads_per_worker=1) as executor:
        handles = [executor.submit(sleep_then_return, 0.0, value=i) for i in range(3)]
        runs = [executor.result(handle, timeout=60) for handle in handles]
    assert [run["value"] for run in sorted(runs, key=lambda run: run["start"])] == [0, 1, 2]
    assert len({run["pid"] for run in runs}) == 3  # a fresh process for every task


def test_what_a_task_leaves_running_is_ended_when_it_returns(
    kind: Kind, executor: Executor, tmp_path: Path
) -> None:
    _requires(kind, "end_task_processes")
    grandchild_pid = executor.result(
        executor.submit(spawn_grandchild_and_sleep, str(tmp_path), 0), timeout=60
    )
    assert _gone(grandchild_pid)


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    with LocalExecutor(workers=1, threads_per_worker=1, grace_s=0.5) as executor:
        handle = executor.submit(ignore_sigterm_and_sleep, str(tmp_path), 60, timeout_s=1.0)
        task_pid, grandchild_pid = _wait_for_pids(tmp_path)
        with pytest.raises(TaskTimedOut):
            executor.result(handle, timeout=60)
    assert _gone(task_pid) and _gone(grandchild_pid)


_PARENT_SCRIPT = """
    import sys
    sys.path.insert(0, {tests!r})
    from compute_tasks import spawn_grandchild_and_sleep
    from sciagent.compute.local import LocalExecutor

    if __name__ == "__main__":
        executor = LocalExecutor(workers=1, threads_per_worker=1)
        executor.result(executor.submit(spawn_grandchild_and_sleep, {pid_dir!r}, 60))
"""


def _default_sigint() -> None:
    """In the child before exec: SIGINT as a terminal delivers it, whatever the suite inherited (under
    ``nohup`` or a batch job it is ignored, and an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_parent(tmp_path: Path) -> tuple[subprocess.Popen, int, int]:
    """A separate Python process using an executor (no ``with``), its task running."""
    script = tmp_path / "parent.py"
    tests = str(Path(__file__).parent)
    script.write_text(textwrap.dedent(_PARENT_SCRIPT.format(tests=tests, pid_dir=str(tmp_path))))
    parent = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.DEVNULL, preexec_fn=_default_sigint
    )
    try:
        return (parent, *_wait_for_pids(tmp_path))
    except BaseException:
        parent.kill()
        raise


def test_ctrl_c_in_the_parent_leaves_no_process_behind(tmp_path: Path) -> None:
    parent, task_pid, grandchild_pid = _run_parent(tmp_path)
    parent.send_signal(signal.SIGINT)  # KeyboardInterrupt; the executor's atexit hook cancels
    assert parent.wait(timeout=60) != 0
    assert _gone(task_pid) and _gone(grandchild_pid)


def test_a_killed_parent_takes_its_task_processes_with_it(tmp_path: Path) -> None:
    parent, task_pid, grandchild_pid = _run_parent(tmp_path)
    parent.kill()  # no atexit, no shutdown: the kernel's parent-death signal ends the task
    parent.wait(timeout=60)
    try:
        assert _gone(task_pid)
    finally:  # a grandchild of a SIGKILLed parent is beyond reach (documented); end it here
        if not _gone(grandchild_pid, within_s=0):
            os.kill(grandchild_pid, signal.SIGKILL)


def test_defaults_follow_the_usable_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    executor = LocalExecutor()
    executor.shutdown()
    assert executor.capacity == cores
    assert executor.threads_per_worker == 1
    one = LocalExecutor(workers=1)
    one.shutdown()
    assert one.threads_per_worker == cores


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "workers must be at least 1"),
        ({"threads_per_worker": 0}, "threads_per_worker must be at least 1"),
        ({"start_method": "teleport"}, "unknown start method"),
        ({"grace_s": -1}, "grace_s must be zero or more"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LocalExecutor(**kwargs)


def test_misuse_is_refused_at_submission() -> None:
    with LocalExecutor(workers=1, threads_per_worker=1) as executor:
        with pytest.raises(TypeError, match="module-level function"):
            executor.submit(lambda: 1)
        with pytest.raises(ValueError, match="timeout_s must be positive"):
            executor.submit(sleep_then_return, 0.0, timeout_s=0)
        executor.submit(sleep_then_return, 0.0, task_id="same")
        with pytest.raises(ValueError, match="already used"):
            executor.submit(sleep_then_return, 0.0, task_id="same")
        with pytest.raises(KeyError, match="no task"):
            executor.status(TaskHandle("same", "elsewhere"))


def test_task_errors_survive_pickling() -> None:
    errors: list[TaskError] = [
        WorkerLost("a", -9),
        WorkerLost("b", None, "could not start a process: no memory"),
        TaskTimedOut("c", 2.5),
        TaskCancelled("d", "cancelled: executor shut down"),
        TaskRaised("e", "openmm.OpenMMException", "Particle coordinate is NaN", "Traceback ..."),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error)
    assert [is_transient(error) for error in errors] == [True, True, False, False, False]
