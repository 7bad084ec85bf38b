"""One launched process: its output kept to a bounded head, the wall clock, killing, reaping."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Finished:
    """What ``supervise`` saw; ``returncode`` is Popen's (negative: killed by that signal)."""

    returncode: int
    timed_out: bool
    duration_s: float
    cpu_s: float
    stdout: str
    stdout_dropped: int
    stderr: str
    stderr_dropped: int
    stopped: bool = False  # ``over`` said so before the command exited


WATCH_S = 0.5  # how often ``supervise`` asks ``over`` while the command runs


class _Head:
    """Reads a pipe to its end in a thread, keeping the first ``limit`` bytes and counting the rest."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        self._pipe = pipe
        self._limit = limit
        self._kept = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="sandbox-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self._pipe.fileno(), 1 << 16):
                with self._lock:
                    room = max(0, self._limit - len(self._kept))
                    self._kept += chunk[:room]
                    self._dropped += len(chunk) - min(room, len(chunk))
        except OSError:
            pass
        finally:
            self._pipe.close()

    def result(self, timeout_s: float) -> tuple[str, int]:
        """The kept text and the count of dropped bytes, once the pipe is closed or ``timeout_s`` passed."""
        self._thread.join(timeout_s)
        with self._lock:
            return self._kept.decode("utf-8", errors="replace"), self._dropped


def _feed(pipe: IO[bytes], text: str) -> None:
    def write() -> None:
        with contextlib.suppress(OSError):  # the command may exit without reading its input
            pipe.write(text.encode())
        with contextlib.suppress(OSError):
            pipe.close()

    threading.Thread(target=write, name="sandbox-input", daemon=True).start()


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """True once ``pid`` has exited, left unreaped (so its process group is still ours); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return _poll_exit(pid, timeout_s)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if poller.poll(min(left, 3600.0) * 1000):  # in slices: poll's int milliseconds overflow
                return True
        return bool(poller.poll(0))
    finally:
        os.close(fd)


def _poll_exit(pid: int, timeout_s: float) -> bool:
    deadline, pause = time.monotonic() + timeout_s, 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return True


def _wait_watching(pid: int, wall_s: float, over: Callable[[], bool]) -> tuple[bool, bool]:
    """(exited, stopped): waits up to ``wall_s`` for ``pid``, asking ``over()`` every ``WATCH_S``."""
    deadline = time.monotonic() + wall_s
    while (left := deadline - time.monotonic()) > 0:
        if _wait_exit(pid, min(left, WATCH_S)):
            return True, False
        if over():
            return False, True
    return _wait_exit(pid, 0), False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


def supervise(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: str | None,
    wall_s: float,
    output_bytes: int,
    kill_rest: Callable[[], None],
    over: Callable[[], bool] = lambda: False,
) -> Finished:
    """Runs ``argv`` in a new session; at exit, after ``wall_s`` or once ``over()`` is true (asked every
    ``WATCH_S`` seconds) kills its group and ``kill_rest()``.

    ``kill_rest`` kills what may have left the process group (a cgroup's processes). Output
    readers are given a few seconds after that; a pipe still held by an escaped process is left.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        message = f"cannot start {argv[0]}: {exc.strerror or exc}\n"
        return Finished(127, False, time.monotonic() - start, 0.0, "", 0, message, 0)
    assert proc.stdout is not None and proc.stderr is not None  # both are pipes
    out, err = _Head(proc.stdout, output_bytes), _Head(proc.stderr, output_bytes)
    if stdin is not None and proc.stdin is not None:
        _feed(proc.stdin, stdin)
    try:
        exited, stopped = _wait_watching(proc.pid, wall_s, over)
        duration = time.monotonic() - start
        _kill_group(proc.pid)  # the leader is dead or unreaped, so the group cannot be anyone else's
        kill_rest()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode, cpu = os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): as Popen, assume 0
            proc.returncode, cpu = 0, 0.0
    finally:
        if proc.returncode is None:  # interrupted: leave nothing running
            _kill_group(proc.pid)
            kill_rest()
            proc.wait()
    stdout, stdout_dropped = out.result(5.0)
    stderr, stderr_dropped = err.result(5.0)
    timed_out = not exited and not stopped
    return Finished(
        proc.returncode, timed_out, duration, cpu, stdout, stdout_dropped, stderr, stderr_dropped, stopped
    )
