"""Every process this job started, found through /proc and stopped: nothing is left running on the node.

The model server has its own process group and is stopped through it; the simulations' workers are
stopped by their executor. This is the last sweep for whatever escaped both (a worker's own children, a
server whose group leader died first), so a node handed back to the scheduler holds none of our work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

GRACE_S = 5.0
KILL_WAIT_S = 5.0


def descendants(pid: int) -> list[int]:
    """The pids below ``pid`` in the process tree (children first), from /proc; empty where there is none."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def stop_descendants(pid: int, grace_s: float = GRACE_S) -> list[str]:
    """SIGTERM every descendant of ``pid``, SIGKILL those alive after ``grace_s``; returns those found
    (``"PID NAME"`` each).

    multiprocessing's resource tracker is left alone: it ignores SIGTERM by design and ends by itself
    when this process does (its pipe closes), after cleaning up what it tracks.
    """
    found = [child for child in descendants(pid) if not _is_resource_tracker(child)]
    names = {child: _name(child) for child in found}
    for child in found:
        _signal(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(child) for child in found):
        time.sleep(0.1)
    for child in found:
        if _alive(child):
            _signal(child, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S  # SIGKILL is not instant: gone before the node is handed back
    while time.monotonic() < deadline and any(_alive(child) for child in found):
        time.sleep(0.05)
    return [f"{child} {names[child]}" for child in found]


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _is_resource_tracker(pid: int) -> bool:
    try:
        return b"multiprocessing.resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _signal(pid: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, number)


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
