"""Two-member ensembles and orchestration overhead on this machine, side by side in one run.

(a) two villin simulations at once (one thread each) vs one after the other (one thread; two threads)
    through LocalExecutor; (b) the same two simulations through ParslExecutor (HTEX, LocalProvider)
    vs LocalExecutor; (c) submit-to-start latency and no-op throughput through our ParslExecutor vs
    plain Parsl (``@python_app`` on a raw DataFlowKernel with the same HTEX settings).

Wall times include each task's setup (structure preparation, minimisation), as an ensemble pays it.
Every simulation gets a fresh work directory (a reused one would resume from its checkpoint).
Other work on the machine shows up in these numbers: the load average is printed at both ends.

    python bench/ensemble_scaling.py [--steps 1000] [--noops 500] [--latency-tasks 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from parsl import Config, DataFlowKernel, python_app

from sciagent.compute.base import Executor
from sciagent.compute.local import LocalExecutor
from sciagent.compute.parsl_executor import ParslExecutor, local_htex
from sciagent.science.md import run_md
from sciagent.science.spec import MDSpec


def ensemble(executor: Executor, spec: MDSpec, root: Path, label: str) -> float:
    """Wall seconds for two simulations submitted together to ``executor``."""
    began = time.perf_counter()
    handles = [executor.submit(run_md, spec, root / f"{label}-{member}") for member in range(2)]
    for handle in handles:
        result = executor.result(handle)
        if not result.ok:
            raise SystemExit(f"{label}: run_md failed: {result.message}")
    return time.perf_counter() - began


def started_parsl(run_dir: Path) -> tuple[ParslExecutor, float]:
    """A ParslExecutor with 2 one-thread workers, and the seconds until its workers answered."""
    began = time.perf_counter()
    executor = ParslExecutor(local_htex(2, threads_per_worker=1), run_dir=run_dir)
    executor.result(executor.submit(time.time))
    return executor, time.perf_counter() - began


def overhead(
    submit: Callable[[], Callable[[], float]], latency_tasks: int, noops: int
) -> tuple[float, float]:
    """Median submit-to-start latency (one task at a time) and no-op throughput (all at once).

    ``submit()`` sends one task that returns ``time.time()`` as it starts; it returns a waiter.
    """
    latencies = []
    for _ in range(latency_tasks):
        sent = time.time()
        latencies.append(submit()() - sent)
    began = time.perf_counter()
    waiters = [submit() for _ in range(noops)]
    for wait in waiters:
        wait()
    return statistics.median(latencies), noops / (time.perf_counter() - began)


def ours_overhead(run_dir: Path, latency_tasks: int, noops: int) -> tuple[float, float]:
    executor, _ = started_parsl(run_dir)
    try:

        def submit() -> Callable[[], float]:
            handle = executor.submit(time.time)
            return lambda: executor.result(handle)

        return overhead(submit, latency_tasks, noops)
    finally:
        executor.shutdown()


def plain_overhead(run_dir: Path, latency_tasks: int, noops: int) -> tuple[float, float]:
    dfk = DataFlowKernel(
        Config(executors=[local_htex(2, label="plain")], run_dir=str(run_dir), strategy_period=1)
    )
    try:

        @python_app(data_flow_kernel=dfk)
        def noop() -> float:
            import time

            return time.time()

        noop().result()  # workers up

        def submit() -> Callable[[], float]:
            return noop().result

        return overhead(submit, latency_tasks, noops)
    finally:
        dfk.cleanup()


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def section_a(root: Path, one: MDSpec, two: MDSpec) -> None:
    with LocalExecutor(workers=2, threads_per_worker=1) as local:
        together = ensemble(local, one, root, "together")
    with LocalExecutor(workers=1, threads_per_worker=1) as local:
        serial_1t = ensemble(local, one, root, "serial-1t")
    with LocalExecutor(workers=1, threads_per_worker=2) as local:
        serial_2t = ensemble(local, two, root, "serial-2t")
    print("\n(a) LocalExecutor, wall time for the ensemble")
    for label, seconds in [("sequential, 1 thread", serial_1t), ("sequential, 2 threads", serial_2t)]:
        print(f"  {label:26}: {seconds:6.1f} s   ratio to concurrent {seconds / together:.2f}")
    print(f"  {'concurrent, 2 x 1 thread':26}: {together:6.1f} s")


def section_b(root: Path, one: MDSpec) -> None:
    parsl, startup = started_parsl(root / "parsl-md")
    try:
        through_parsl = ensemble(parsl, one, root, "parsl")
    finally:
        parsl.shutdown()
    with LocalExecutor(workers=2, threads_per_worker=1) as local:
        through_local = ensemble(local, one, root, "local-again")
    print("\n(b) the concurrent ensemble (2 x 1 thread), wall time")
    print(f"  ParslExecutor (HTEX, LocalProvider): {through_parsl:6.1f} s", end="")
    print(f"   (and {startup:.1f} s before, to start the workers)")
    print(f"  LocalExecutor (process per task)   : {through_local:6.1f} s")
    print(f"  ratio Parsl / Local                : {through_parsl / through_local:.2f}")


def section_c(root: Path, latency_tasks: int, noops: int) -> None:
    ours = ours_overhead(root / "ours", latency_tasks, noops)
    plain = plain_overhead(root / "plain", latency_tasks, noops)
    print(f"\n(c) orchestration, HTEX with 2 workers: {latency_tasks} tasks one at a time for the latency,")
    print(f"    then {noops} no-ops submitted at once for the throughput")
    for label, (latency, rate) in [("ParslExecutor", ours), ("plain Parsl", plain)]:
        print(
            f"  {label:13} : submit-to-start median {latency * 1e3:6.1f} ms, throughput {rate:6.0f} tasks/s"
        )
    print(f"  ratio ours / plain: latency {ours[0] / plain[0]:.2f}, throughput {ours[1] / plain[1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="production steps per simulation")
    parser.add_argument("--noops", type=int, default=500)
    parser.add_argument("--latency-tasks", type=int, default=40)
    args = parser.parse_args()
    fields = {
        "structure": "villin",
        "production_steps": args.steps,
        "report_interval": 100,
        "checkpoint_interval": 500,
        "platform": "CPU",
        "minimize_max_iterations": 200,
    }
    print(
        f"villin, amber14 + OBC2 implicit, {args.steps} production steps per member, 2 members; "
        f"{os.cpu_count()} cores; load average at start {_load()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        section_a(root, MDSpec(**fields, cpu_threads=1), MDSpec(**fields, cpu_threads=2))
        section_b(root, MDSpec(**fields, cpu_threads=1))
        section_c(root, args.latency_tasks, args.noops)
    print(f"\nload average at end {_load()}")


if __name__ == "__main__":
    main()
