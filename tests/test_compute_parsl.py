"""ParslExecutor's own promises, beyond the Executor contract (run for it in ``test_compute_local``).

The story under test: a worker or a whole block (a batch job killed at its walltime) is lost, Parsl
re-runs the task, and the second attempt finds what the first left in its work directory. Attempts
are counted with marker files, so the tests do not depend on timing. Task functions live here and
reach the workers by name through ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq
from parsl.app.errors import AppTimeout
from parsl.executors import HighThroughputExecutor
from parsl.executors.errors import BadStateException
from parsl.executors.high_throughput.errors import ManagerLost
from parsl.executors.high_throughput.errors import WorkerLost as ParslWorkerLost

from compute_tasks import report_env, sleep_then_return
from sciagent.compute.base import TaskState
from sciagent.compute.errors import TaskCancelled, TaskRaised, TaskTimedOut, WorkerLost, is_transient
from sciagent.compute.parsl_executor import ParslExecutor, local_htex, retry_cost, to_task_error
from sciagent.science.md import MDResult, run_md
from sciagent.science.spec import MDSpec

pytestmark = pytest.mark.timeout(180)

TESTS = Path(__file__).parent
TAG = "SCIAGENT_PARSL_TEST_TAG"


# --- task functions (run on Parsl workers) -------------------------------------------------------


def _attempt(marker_dir: str) -> int:
    """Record one more attempt in ``marker_dir``; return its number (1 for the first)."""
    number = len(list(Path(marker_dir).glob("attempt-*"))) + 1
    (Path(marker_dir) / f"attempt-{number}").write_text(str(os.getpid()))
    return number


def lost_on_first_attempt(marker_dir: str, how: str) -> int:
    """Lose the worker on the first attempt (hard exit or SIGKILL); succeed on the next."""
    number = _attempt(marker_dir)
    if number == 1:
        if how == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    return number


def always_lost(marker_dir: str) -> None:
    _attempt(marker_dir)
    os.kill(os.getpid(), signal.SIGKILL)


def raise_counted(marker_dir: str) -> None:
    raise ValueError(f"attempt {_attempt(marker_dir)} failed")


def slow_on_first_attempt(marker_dir: str) -> int:
    """Sleep long on the first attempt (the test kills its block meanwhile); return fast after."""
    number = _attempt(marker_dir)
    if number == 1:
        time.sleep(120)
    return number


def spin(seconds: float, marker_dir: str) -> None:
    """Busy Python loop: Parsl's walltime lands at the next bytecode, so it ends this one on time."""
    _attempt(marker_dir)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def env_value(name: str) -> str | None:
    return os.environ.get(name)


# --- fixtures and helpers ------------------------------------------------------------------------


def _htex(tag: str = "", **kwargs: int) -> HighThroughputExecutor:
    htex = local_htex(2, heartbeat_period=1, **kwargs)
    htex.provider.worker_init += f"; export PYTHONPATH={TESTS} {TAG}={tag or 'shared'}"
    return htex


@pytest.fixture(scope="module")
def parsl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParslExecutor]:
    """One executor (2 workers, 2 Parsl retries: the executor used on its own) for the tests that
    leave it usable. Sites build theirs with no retries (the workflow owns them)."""
    executor = ParslExecutor(
        _htex(),
        run_dir=tmp_path_factory.mktemp("parsl"),
        retries=2,
        worker_env={"SCIAGENT_PARSL_MARK": "on"},
    )
    yield executor
    executor.shutdown(cancel=True)


def _attempts(marker_dir: Path) -> int:
    return len(list(marker_dir.glob("attempt-*")))


def _our_parsl_processes(tag: str) -> dict[int, str]:
    """Live processes of one executor, by their /proc cmdline: its interchange (a child of this
    process) and its block (pool, workers, helpers: ``tag`` is in their environment)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile
            continue
        ours = ("interchange" in cmdline and int(ppid) == os.getpid()) or f"{TAG}={tag}".encode() in environ
        if ours and state not in ("Z", "X"):
            found[int(entry.name)] = cmdline
    return found


# --- retry classification and error mapping (no Parsl run) ---------------------------------------


def test_only_a_lost_worker_manager_or_block_is_worth_a_retry() -> None:
    record = {"dfk": SimpleNamespace(config=SimpleNamespace(retries=2))}
    lost = [
        ManagerLost(b"m1", "node1"),
        ParslWorkerLost(0, "node1"),
        BadStateException(None, OSError("gone")),
    ]
    assert [retry_cost(exc, record) for exc in lost] == [1, 1, 1]
    final = [ValueError("bug"), AppTimeout(), TaskRaised("t", "ValueError", "bug", "Traceback ...")]
    assert [retry_cost(exc, record) for exc in final] == [3, 3, 3]  # more than the whole budget


def test_parsl_errors_become_ours_at_the_boundary() -> None:
    timed_out = to_task_error("t1", AppTimeout(), 2.5)
    assert isinstance(timed_out, TaskTimedOut) and timed_out.timeout_s == 2.5
    lost = to_task_error("t2", ManagerLost(b"m1", "node1"), None)
    assert isinstance(lost, WorkerLost) and lost.exitcode is None and is_transient(lost)
    assert "ManagerLost" in str(lost) and "node1" in str(lost)
    try:
        raise KeyError("missing")
    except KeyError as exc:
        raised = to_task_error("t3", exc, None)
    assert isinstance(raised, TaskRaised) and raised.type_name == "KeyError"
    assert "raise KeyError" in raised.traceback_text
    ours = TaskRaised("t4", "ValueError", "bad", "Traceback ...")
    assert to_task_error("t4", ours, None) is ours


def test_local_htex_settings_are_checked_and_give_the_capacity(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        local_htex(0)
    with pytest.raises(ValueError, match="one worker per accelerator"):
        local_htex(2, accelerators=["0"])
    htex = local_htex(3, accelerators=["0", "1", "2"])
    assert htex.workers_per_node == 3 and htex.available_accelerators == ["0", "1", "2"]
    assert htex.address == "127.0.0.1" and htex.encrypted is zmq.has("curve")  # loopback is not trust
    unbounded = local_htex(1)
    unbounded.max_workers_per_node = float("inf")  # as HTEX records "no maximum given"
    with pytest.raises(ValueError, match="capacity="):
        ParslExecutor(unbounded, run_dir=tmp_path)


# --- on a running HTEX (marked hpc) -----------------------------------------------------------


@pytest.mark.hpc
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_lost_worker_is_retried_and_the_retry_succeeds(
    parsl: ParslExecutor, tmp_path: Path, how: str
) -> None:
    handle = parsl.submit(lost_on_first_attempt, str(tmp_path), how)
    assert parsl.result(handle, timeout=120) == 2
    assert _attempts(tmp_path) == 2
    assert parsl.status(handle) is TaskState.COMPLETED


@pytest.mark.hpc
def test_a_worker_lost_on_every_attempt_ends_as_worker_lost(parsl: ParslExecutor, tmp_path: Path) -> None:
    with pytest.raises(WorkerLost) as caught:
        parsl.result(parsl.submit(always_lost, str(tmp_path)), timeout=120)
    assert caught.value.exitcode is None and is_transient(caught.value)
    assert _attempts(tmp_path) == 3  # the first try and 2 retries


@pytest.mark.hpc
def test_a_raised_exception_is_not_retried(parsl: ParslExecutor, tmp_path: Path) -> None:
    with pytest.raises(TaskRaised, match="attempt 1 failed") as caught:
        parsl.result(parsl.submit(raise_counted, str(tmp_path)), timeout=60)
    assert caught.value.type_name == "ValueError" and "raise_counted" in caught.value.traceback_text
    assert _attempts(tmp_path) == 1


@pytest.mark.hpc
def test_the_wall_limit_is_a_timeout_not_retried_and_the_worker_goes_on(
    parsl: ParslExecutor, tmp_path: Path
) -> None:
    handle = parsl.submit(spin, 60, str(tmp_path), timeout_s=1.0)
    with pytest.raises(TaskTimedOut) as caught:
        parsl.result(handle, timeout=60)
    assert caught.value.timeout_s == 1.0 and _attempts(tmp_path) == 1
    assert parsl.result(parsl.submit(sleep_then_return, 0.0, value="next"), timeout=60)["value"] == "next"


@pytest.mark.hpc
def test_worker_env_and_thread_counts_reach_the_task(parsl: ParslExecutor) -> None:
    assert parsl.result(parsl.submit(env_value, "SCIAGENT_PARSL_MARK"), timeout=60) == "on"
    assert parsl.result(parsl.submit(report_env), timeout=60) == {
        "OPENMM_CPU_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.hpc
def test_a_real_md_run_comes_back_as_an_md_result(
    parsl: ParslExecutor, quick_spec_fields: dict, workdir: Path
) -> None:
    spec = MDSpec(**quick_spec_fields, cpu_threads=1)
    result = parsl.result(parsl.submit(run_md, spec, workdir), timeout=150)
    assert isinstance(result, MDResult) and result.ok, result.message
    assert result.production_steps_completed == 200 and result.platform == "CPU"
    assert (workdir / "trajectory.dcd").exists()


@pytest.mark.hpc
def test_a_killed_block_is_replaced_and_the_task_resumes(tmp_path: Path) -> None:
    """As when the batch job holding the workers is killed at its walltime: the whole block dies."""
    markers = tmp_path / "markers"
    markers.mkdir()
    with ParslExecutor(_htex(heartbeat_threshold=3), run_dir=tmp_path / "run", retries=1) as executor:
        handle = executor.submit(slow_on_first_attempt, str(markers))
        while not (markers / "attempt-1").exists():
            time.sleep(0.1)
        os.killpg(os.getpgid(int((markers / "attempt-1").read_text())), signal.SIGKILL)
        assert executor.result(handle, timeout=120) == 2  # after ManagerLost, on a new block


@pytest.mark.hpc
def test_shutdown_leaves_no_interchange_or_worker_behind(
    parsl: ParslExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv's bin/ is put back by the constructor
    tag = uuid.uuid4().hex
    others = set(_our_parsl_processes(tag))  # the interchange of the module's executor
    executor = ParslExecutor(_htex(tag), run_dir=tmp_path)
    running = executor.submit(sleep_then_return, 60)
    assert executor.result(executor.submit(sleep_then_return, 0.0, value=1), timeout=60)["value"] == 1
    commands = [cmd for pid, cmd in _our_parsl_processes(tag).items() if pid not in others]
    assert any("process_worker_pool.py" in cmd for cmd in commands)
    assert any("interchange" in cmd for cmd in commands)
    executor.shutdown(cancel=True)
    with pytest.raises(TaskCancelled):
        executor.result(running, timeout=0)
    deadline = time.monotonic() + 15
    while set(_our_parsl_processes(tag)) - others and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {pid: cmd for pid, cmd in _our_parsl_processes(tag).items() if pid not in others} == {}
    # the other executor, with a DataFlowKernel of its own, is untouched
    assert parsl.result(parsl.submit(sleep_then_return, 0.0, value=2), timeout=60)["value"] == 2
