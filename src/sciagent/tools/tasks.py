"""Simulations as tasks: ``simulate`` returns a task id at once, the task tools follow it to its result.

A simulation can take hours on a batch site, so no tool call waits for one unasked: the model
submits several, then waits, polls, cancels or collects by id. ``TaskBoard`` holds a session's
tasks and one executor per site it used (built on first use from the site table, shut down with
the session); analyses of a finished run go to the executor of the site its trajectory is on.
Only the process holding the board can cancel its tasks, so it looks for what others asked of them
(``on_poll``: the session's cancel requests) while a tool waits, and the agent loop before each model call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sciagent.compute.base import Executor, TaskHandle, TaskState
from sciagent.compute.errors import TaskError
from sciagent.compute.sites import SiteConfig, all_sites, make_executor
from sciagent.science.md import MDResult, run_md
from sciagent.science.spec import MDSpec
from sciagent.tools.registry import ToolArgumentsError, ToolContext, ToolFailed, define_tool
from sciagent.tools.structures import STRUCTURE_HELP, located

MAX_WAIT_S = 3600.0
POLL_S = 1.0  # how often a wait looks for requests from other processes (a cancel from `sciagent ui`)
FRAMES_PER_RUN = 100  # trajectory frames a run writes, whatever its length
# A resumed session continues a run from its last checkpoint: one every tenth of a short run, so that
# little is simulated again, and at least every 5000 steps in a long one.
CHECKPOINTS_PER_RUN = 10
CHECKPOINT_STEPS = 5000


@dataclass
class BoardTask:
    """One submitted task: what it runs, where, and its handle there."""

    task_id: str
    site: str
    handle: TaskHandle
    submitted: float
    spec: MDSpec | None = None
    workdir: Path | None = None


@dataclass
class TaskBoard:
    """A session's tasks by id, and the executors they run on (one per site, made on first use).

    ``on_submit`` hears of each new simulation (the session journals it), so that a resumed session
    can ``reattach`` it: sent again to its site with the same work directory, where the MD kernel
    continues from the last checkpoint (a finished run only reports again; no step is simulated twice).
    ``on_poll`` is given the board at each ``poll`` to act on requests from other processes.
    """

    session_dir: Path
    sites: Mapping[str, SiteConfig]
    default_site: str = "local"
    on_submit: Callable[[BoardTask], None] | None = None
    on_poll: Callable[[TaskBoard], None] | None = None
    _executors: dict[str, Executor] = field(default_factory=dict)
    _tasks: dict[str, BoardTask] = field(default_factory=dict)
    _issued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self, prefix: str) -> str:
        """A fresh, short task id (``sim-1``, ``sim-2``, ...): short ids are what models copy right."""
        with self._lock:
            self._issued += 1
            return f"{prefix}-{self._issued}"

    def submit(
        self, task_id: str, fn: Callable[..., Any], *args: Any, site: str | None, **record: Any
    ) -> BoardTask:
        """Send ``fn(*args)`` to ``site``'s executor (default: the board's) under ``task_id``."""
        site = site or self.default_site
        handle = self._executor(site).submit(fn, *args, task_id=task_id)
        with self._lock:
            task = self._tasks[task_id] = BoardTask(task_id, site, handle, time.monotonic(), **record)
        return task

    def simulate(self, spec: MDSpec, site: str | None) -> BoardTask:
        """Start ``spec`` as a new simulation task in the session's ``runs/<task id>`` directory."""
        task_id = self.new_id("sim")
        workdir = self.session_dir / "runs" / task_id
        task = self.submit(task_id, run_md, spec, str(workdir), site=site, spec=spec, workdir=workdir)
        if self.on_submit:
            self.on_submit(task)
        return task

    def reattach(self, task_id: str, site: str, spec: MDSpec) -> BoardTask:
        """Take up a simulation an earlier process of the session started (see the class docstring)."""
        with self._lock:
            number = task_id.rpartition("-")[2]
            self._issued = max(self._issued, int(number) if number.isdigit() else 0)
        workdir = self.session_dir / "runs" / task_id
        return self.submit(task_id, run_md, spec, str(workdir), site=site, spec=spec, workdir=workdir)

    def get(self, task_id: str) -> BoardTask:
        task = self._tasks.get(task_id)
        if task is None:
            known = ", ".join(self._tasks) or "none yet"
            raise ToolArgumentsError(f"no task {task_id!r} in this session (tasks: {known})")
        return task

    def tasks(self) -> list[BoardTask]:
        return list(self._tasks.values())

    def state(self, task: BoardTask) -> TaskState:
        return self._executors[task.site].status(task.handle)

    def wait(self, task: BoardTask, timeout_s: float) -> TaskState:
        """Wait up to ``timeout_s`` for the task to end, polling every ``POLL_S``; its state then."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            left = deadline - time.monotonic()
            if left <= 0 or self._executors[task.site].wait_any([task.handle], timeout=min(POLL_S, left)):
                return self.state(task)

    def poll(self) -> None:
        """Act on what other processes asked of this board's tasks (``on_poll``), if anyone listens."""
        if self.on_poll is not None:
            self.on_poll(self)

    def value(self, task: BoardTask) -> Any:
        """The finished task's value; ``ToolFailed`` for a task that failed or was cancelled."""
        try:
            return self._executors[task.site].result(task.handle, timeout=0)
        except futures.TimeoutError:
            message = f"task {task.task_id} has not finished: call wait_for_task first"
            raise ToolArgumentsError(message) from None
        except TaskError as exc:
            raise ToolFailed(f"task {task.task_id}: {exc}", "task") from exc

    def cancel(self, task: BoardTask) -> bool:
        return self._executors[task.site].cancel(task.handle)

    def run_where(self, task: BoardTask, fn: Callable[..., Any], *args: Any, timeout_s: float = 600) -> Any:
        """Run ``fn(*args)`` where ``task``'s files are and return its value.

        On a ``local`` site the files are here, so it runs in this process: a spawned worker would
        cost 1-2 s of interpreter start and imports per analysis. Elsewhere it goes to that site's
        executor, as the simulation did.
        """
        if all_sites(self.sites)[task.site].kind == "local":
            try:
                return fn(*args)
            except (ValueError, OSError) as exc:  # what the metric kernels raise for unusable files
                raise ToolFailed(f"analysis of {task.task_id} failed: {exc}", "analysis") from exc
        executor = self._executors[task.site]
        handle = executor.submit(fn, *args, timeout_s=timeout_s)
        try:
            return executor.result(handle)
        except TaskError as exc:
            raise ToolFailed(f"analysis of {task.task_id} failed: {exc}", "analysis") from exc

    def close(self) -> None:
        """Shut every executor down, cancelling what still runs."""
        for executor in self._executors.values():
            executor.shutdown(cancel=True)
        self._executors.clear()

    def _executor(self, site: str) -> Executor:
        if site not in self._executors:  # make_executor: a one-line ConfigError for an unknown site
            self._executors[site] = make_executor(site, self.sites, run_dir=self.session_dir / "parsl" / site)
        return self._executors[site]


def board(context: ToolContext) -> TaskBoard:
    if context.tasks is None:
        raise ToolFailed("this session runs no tasks (no task board)", "setup")
    return context.tasks


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulateArguments(NoArguments):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"structure": "villin", "length_ps": 10, "temperature_k": 300}]}
    )

    structure: str = Field(description=STRUCTURE_HELP)
    length_ps: float = Field(default=10.0, gt=0, le=1_000_000, description="production length in ps")
    temperature_k: float = Field(default=300.0, gt=0, le=1000)
    pressure_bar: float | None = Field(
        default=None, gt=0, le=10_000, description="bar, NPT; explicit solvent only"
    )
    ph: float = Field(default=7.0, gt=0, lt=14, description="pH for protonation states")
    solvent: Literal["implicit", "explicit", "vacuum"] = "implicit"
    timestep_fs: float = Field(default=2.0, gt=0, le=4.0, description="4 fs uses heavy hydrogens")
    forcefield: Literal["amber14", "amber99sbildn", "charmm36"] = "amber14"
    seed: int = Field(default=1, ge=1)
    site: str | None = Field(default=None, description="where to run it (sciagent sites list); default here")

    @model_validator(mode="after")
    def _pressure_needs_a_box(self) -> SimulateArguments:
        if self.pressure_bar is not None and self.solvent != "explicit":
            raise ValueError("pressure_bar needs solvent 'explicit' (a periodic box to scale)")
        return self


class TaskArguments(NoArguments):
    model_config = ConfigDict(json_schema_extra={"examples": [{"task_id": "sim-1"}]})

    task_id: str = Field(description="the id simulate returned, e.g. 'sim-1'")


class WaitArguments(TaskArguments):
    model_config = ConfigDict(json_schema_extra={"examples": [{"task_id": "sim-1", "timeout_s": 600}]})

    timeout_s: float = Field(default=60.0, gt=0, le=MAX_WAIT_S, description="longest wait, seconds")


class TaskStatus(BaseModel):
    task_id: str
    site: str
    state: str = Field(description="pending, running, completed, failed or cancelled")
    elapsed_s: float
    structure: str | None = None
    temperature_k: float | None = None


class TaskList(BaseModel):
    tasks: list[TaskStatus]


class Cancelled(BaseModel):
    task_id: str
    cancelled: bool = Field(description="False when it had already finished")


class SimulationResult(BaseModel):
    task_id: str
    status: str
    message: str
    failure_class: str | None = None
    simulated_ps: float
    ns_per_day: float | None = None
    wall_time_s: float
    platform: str | None = None
    temperature_k: float
    pressure_bar: float | None
    ph: float
    solvent: str
    workdir: str


def spec_for(arguments: SimulateArguments, context: ToolContext) -> MDSpec:
    """The MD spec a simulate call asks for: ~100 frames, ~10 checkpoints, a tenth as much equilibration
    (at most 10 ps)."""
    steps = max(1, round(arguments.length_ps * 1000.0 / arguments.timestep_fs))
    return MDSpec(
        structure=str(located(arguments.structure, context).path),
        ph=arguments.ph,
        forcefield=arguments.forcefield,
        solvent=arguments.solvent,
        temperature_k=arguments.temperature_k,
        pressure_bar=arguments.pressure_bar or 1.0,
        timestep_fs=arguments.timestep_fs,
        hydrogen_mass_amu=4.0 if arguments.timestep_fs > 2.0 else None,
        equilibration_steps=min(steps // 10, round(10_000 / arguments.timestep_fs)),
        production_steps=steps,
        report_interval=max(1, steps // FRAMES_PER_RUN),
        checkpoint_interval=max(1, min(CHECKPOINT_STEPS, steps // CHECKPOINTS_PER_RUN)),
        seed=arguments.seed,
    )


def simulate(arguments: SimulateArguments, context: ToolContext) -> TaskStatus:
    """Start a molecular-dynamics simulation of a structure and return its task id at once; follow it
    with wait_for_task / task_status, collect it with task_result, analyse it with the analysis tools."""
    tasks = board(context)
    return _status(tasks, tasks.simulate(spec_for(arguments, context), arguments.site))


def wait_for_task(arguments: WaitArguments, context: ToolContext) -> TaskStatus:
    """Wait until a task finishes or timeout_s passes, whichever is first; returns its state."""
    tasks = board(context)
    task = tasks.get(arguments.task_id)
    tasks.wait(task, arguments.timeout_s)
    return _status(tasks, task)


def task_status(arguments: TaskArguments, context: ToolContext) -> TaskStatus:
    """The state of a task now (pending, running, completed, failed, cancelled), without waiting."""
    tasks = board(context)
    return _status(tasks, tasks.get(arguments.task_id))


def list_tasks(arguments: NoArguments, context: ToolContext) -> TaskList:
    """Every task of this session with its state."""
    tasks = board(context)
    return TaskList(tasks=[_status(tasks, task) for task in tasks.tasks()])


def cancel_task(arguments: TaskArguments, context: ToolContext) -> Cancelled:
    """Cancel a task that has not finished."""
    tasks = board(context)
    return Cancelled(task_id=arguments.task_id, cancelled=tasks.cancel(tasks.get(arguments.task_id)))


def task_result(arguments: TaskArguments, context: ToolContext) -> SimulationResult:
    """The outcome of a finished simulation: completed or failed (with why), simulated time, speed."""
    tasks = board(context)
    task = tasks.get(arguments.task_id)
    result = tasks.value(task)
    if not isinstance(result, MDResult):
        raise ToolArgumentsError(f"task {task.task_id} is not a simulation")
    spec = result.spec
    return SimulationResult(
        task_id=task.task_id,
        status=result.status,
        message=result.message,
        failure_class=result.failure_class,
        simulated_ps=result.production_steps_completed * spec.timestep_fs / 1000.0,
        ns_per_day=result.ns_per_day,
        wall_time_s=result.wall_time_s,
        platform=result.platform,
        temperature_k=spec.temperature_k,
        pressure_bar=spec.pressure_bar if spec.solvent == "explicit" else None,
        ph=spec.ph,
        solvent=spec.solvent,
        workdir=result.workdir,
    )


def _status(tasks: TaskBoard, task: BoardTask) -> TaskStatus:
    return TaskStatus(
        task_id=task.task_id,
        site=task.site,
        state=tasks.state(task).value,
        elapsed_s=round(time.monotonic() - task.submitted, 1),
        structure=task.spec.structure if task.spec else None,
        temperature_k=task.spec.temperature_k if task.spec else None,
    )


TASK_TOOLS = [
    define_tool(simulate, effects={"computes", "writes"}, cost="minutes", runs_on_site=True),
    define_tool(wait_for_task, effects={"reads"}, cost="minutes"),
    define_tool(task_status, effects={"reads"}),
    define_tool(task_result, effects={"reads"}),
    define_tool(cancel_task, effects={"destroys"}),
    define_tool(list_tasks, effects={"reads"}),
]
