"""One task in a child process of its own: the parent's view (``TaskProcess``) and the child's (``main``).

A module of its own because the spawned child imports it first: it must stay light (standard
library only) so that the thread variables are set before anything imports ``openmm``.

The child starts a session of its own (``setsid``), so its pid is also its process group's id and
SIGTERM/SIGKILL reach everything the task started. The group is killed again when the child has
exited, before it is reaped (while its pid cannot be reused), so nothing a task leaves behind
outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pickle
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from sciagent.compute.errors import (
    TaskCancelled,
    TaskError,
    TaskRaised,
    TaskTimedOut,
    WorkerLost,
    qualified_type_name,
)

THREAD_VARIABLES = ("OPENMM_CPU_THREADS", "OMP_NUM_THREADS")
GRACE_S = 3.0
"""Default time a terminated task has to exit after SIGTERM before its process group gets SIGKILL."""
_PR_SET_PDEATHSIG = 1


class TaskProcess:
    """The parent's side of one running task.

    Used by the executor's monitor thread, except ``request_stop``, which callers make under the
    executor's lock. The outcome rule makes every interleaving consistent: once a stop is requested (cancel,
    shutdown, wall limit) the task ends that way, even if its result arrives meanwhile.
    """

    def __init__(
        self,
        context: Any,
        task_id: str,
        payload: bytes,
        *,
        threads: int,
        timeout_s: float | None,
        grace_s: float,
    ) -> None:
        self.task_id = task_id
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        reader, writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=main, args=(writer, payload, threads, os.getpid()), name=f"sciagent-task-{task_id}"
        )
        try:
            self.process.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()  # ours must be closed, or the child's death would never read as EOF
        self.pid: int = self.process.pid
        self.started = time.monotonic()
        self.conn: Connection | None = reader  # None once the message (or EOF) has been read
        self.message: tuple | None = None  # ("ok", value) or ("raised", type name, message, traceback)
        self.stop_reason: str | None = None  # "timeout" | "cancel" | "shutdown"
        self.kill_at: float | None = None  # when SIGKILL follows the SIGTERM already sent

    def watched(self) -> list[Any]:
        """What to wait on: the exit sentinel, and the result pipe until it has been read."""
        return [self.process.sentinel] + ([self.conn] if self.conn is not None else [])

    def request_stop(self, reason: str) -> bool:
        """Ask for the task to be terminated; False if it already returned or is already stopping."""
        if self.message is not None or self.stop_reason is not None:
            return False
        self.stop_reason = reason
        return True

    def enforce(self, now: float) -> float | None:
        """Apply the wall limit and pending stops; return when this needs looking at again."""
        if self.stop_reason is None:
            if self.timeout_s is None or self.message is not None:
                return None
            if now < self.started + self.timeout_s:
                return self.started + self.timeout_s
            self.stop_reason = "timeout"
        if self.kill_at is None:
            signal_group(self.pid, signal.SIGTERM)
            self.kill_at = now + self.grace_s
        elif now >= self.kill_at:
            signal_group(self.pid, signal.SIGKILL)
            self.kill_at = math.inf
        return self.kill_at if self.kill_at != math.inf else None

    def receive(self) -> None:
        """Read the child's one message; EOF without one means it died (the exit code says how)."""
        if self.conn is None:
            return
        try:
            self.message = self.conn.recv()
        except (EOFError, OSError):
            pass
        except Exception as exc:  # pickled in the child but does not unpickle here
            self.message = ("raised", qualified_type_name(exc), f"the result did not unpickle: {exc}", "")
        self.conn.close()
        self.conn = None

    def reap(self) -> tuple[Any, TaskError | None]:
        """Once the child has exited: end its group, collect it; return its value or its error."""
        if self.conn is not None and self.conn.poll():
            self.receive()
        signal_group(self.pid, signal.SIGKILL)  # before join: the pid cannot be reused yet
        self.process.join()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        exitcode = self.process.exitcode
        self.process.close()
        return self._outcome(exitcode)

    def _outcome(self, exitcode: int | None) -> tuple[Any, TaskError | None]:
        if self.stop_reason == "timeout":
            return None, TaskTimedOut(self.task_id, self.timeout_s or 0.0)
        if self.stop_reason is not None:
            reason = "cancelled: executor shut down" if self.stop_reason == "shutdown" else "cancelled"
            return None, TaskCancelled(self.task_id, reason)
        if self.message is None:
            return None, WorkerLost(self.task_id, exitcode)
        if self.message[0] == "ok":
            return self.message[1], None
        return None, TaskRaised(self.task_id, *self.message[1:])


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``, or to ``pid`` alone before it has one.

    Only safe while ``pid`` is an unreaped child of ours: then no other process can hold that id.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def main(conn: Connection, payload: bytes, threads: int, parent_pid: int) -> None:
    """In the child: run the task and send ``("ok", value)`` or ``("raised", type, message, traceback)``.

    Exits with ``os._exit`` right after sending, so a thread the task left running cannot keep the
    process (and its executor slot) alive; no message at all means the process died.
    """
    os.setsid()  # our own process group: terminating the task ends whatever it started
    _die_with_parent(parent_pid)
    _limit_threads(threads)
    try:
        fn, args, kwargs = pickle.loads(payload)  # imports the task's module, after the env is set
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as exc:  # reported as text: the exception itself may not unpickle there
        conn.send(("raised", qualified_type_name(exc), str(exc), traceback.format_exc()))
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _limit_threads(threads: int) -> None:
    """Set the thread variables; if openmm is already imported, set its CPU default directly.

    Spawn re-imports the parent's ``__main__`` before this runs; if that imported openmm, the
    variable comes too late for the CPU platform, which read it at import.
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    openmm = sys.modules.get("openmm")
    if openmm is not None:
        openmm.Platform.getPlatformByName("CPU").setPropertyDefaultValue("Threads", str(threads))


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the thread that started it ends (best effort).

    That thread is the executor's monitor, which outlives every child it starts; this covers the
    parent being killed outright, when neither ``atexit`` nor ``shutdown`` runs.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
