"""Per-run pids and memory cgroups, made under this process's own cgroup (v1, hybrid or v2).

A run's launcher writes its pid into ``cgroup.procs`` before it execs, so every process the run
starts is counted (``pids.max`` stops fork bombs even for root, which RLIMIT_NPROC does not) and
charged (``memory.limit_in_bytes`` / ``memory.max``). Afterwards whatever is left is killed and the
cgroup removed; ``pids.events`` and the OOM counters say which limit was reached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sciagent.sandbox.limits import Limits

log = logging.getLogger(__name__)

CONTROLLERS = ("pids", "memory")
_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupParent:
    """This process's cgroup for one controller: where the runs' cgroups are made.

    Attributes:
        controller: ``"pids"`` or ``"memory"``.
        path: the directory under /sys/fs/cgroup.
        name: the cgroup's path as /proc/<pid>/cgroup spells it (``/`` for the root).
        version: 1 (a controller's own hierarchy) or 2 (the unified hierarchy).
    """

    controller: str
    path: Path
    name: str
    version: int


def find_parents() -> dict[str, CgroupParent]:
    """This process's pids and memory cgroups, where their directories exist (no permission check)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, CgroupParent] = {}
    unified = None
    for line in lines:
        _, controllers, name = line.split(":", 2)
        if not controllers:
            unified = name
            continue
        for controller in CONTROLLERS:
            path = _ROOT / controllers / name.lstrip("/")
            if controller in controllers.split(",") and (path / "cgroup.procs").exists():
                found[controller] = CgroupParent(controller, path, name, 1)
    if unified is not None:
        base = _ROOT if (_ROOT / "cgroup.controllers").exists() else _ROOT / "unified"
        path = base / unified.lstrip("/")
        try:
            enabled = (path / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        for controller in CONTROLLERS:
            if controller not in found and controller in enabled:
                found[controller] = CgroupParent(controller, path, unified, 2)
    return found


class RunCgroup:
    """One controller's cgroup for one run: ``create``, pass ``procs`` to the launcher, then ``close``."""

    def __init__(self, parent: CgroupParent, limits: Limits) -> None:
        self.parent = parent
        self.leaf = f"sciagent-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = parent.path / self.leaf
        self._limits = limits

    @property
    def procs(self) -> Path:
        """The file the launcher writes its pid into."""
        return self.path / "cgroup.procs"

    def create(self) -> None:
        """Makes the cgroup and sets its limit; raises OSError (and leaves nothing) when it cannot."""
        self.path.mkdir()
        try:
            for file, value, required in self._limit_files():
                try:
                    (self.path / file).write_text(value)
                except OSError:
                    if required:
                        raise
        except OSError:
            self.remove()
            raise

    def _limit_files(self) -> list[tuple[str, str, bool]]:
        if self.parent.controller == "pids":
            return [("pids.max", str(self._limits.pids), True)]
        size = str(self._limits.memory_mb << 20)
        if self.parent.version == 1:  # memsw (memory + swap) must not be below the memory limit: set second
            return [("memory.limit_in_bytes", size, True), ("memory.memsw.limit_in_bytes", size, False)]
        return [("memory.max", size, True), ("memory.swap.max", "0", False)]

    def hits(self) -> list[str]:
        """``["pids"]`` or ``["memory"]`` when this cgroup's limit was reached during the run."""
        if self.parent.controller == "pids":
            return ["pids"] if _counter(self.path / "pids.events", "max") else []
        if self.parent.version == 2:
            return ["memory"] if _counter(self.path / "memory.events", "oom_kill") else []
        oom_kills = _counter(self.path / "memory.oom_control", "oom_kill")
        if oom_kills is None:  # kernels before 4.13 do not count OOM kills per cgroup
            oom_kills = _counter(self.path / "memory.failcnt", None)
        return ["memory"] if oom_kills else []

    def kill(self, timeout_s: float = 2.0) -> None:
        """SIGKILLs every process in the cgroup until none is left (or ``timeout_s`` passes)."""
        if not self.path.exists():
            return
        if self.parent.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
        elif self.parent.controller == "pids":
            with contextlib.suppress(OSError):  # no new processes while the old ones are killed
                (self.path / "pids.max").write_text("0")
        deadline, pause = time.monotonic() + timeout_s, 0.0005
        while pids := self._members():
            for pid in pids:
                self._kill_member(pid)
            if time.monotonic() > deadline:
                log.warning("processes %s in %s outlived SIGKILL", pids, self.path)
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def remove(self) -> None:
        """Removes the cgroup, killing what is left in it first; retries briefly while it is busy."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                self.kill()
                time.sleep(0.02)
        log.warning("could not remove the sandbox cgroup %s", self.path)

    def close(self) -> None:
        """``kill`` then ``remove``."""
        self.kill()
        self.remove()

    def _members(self) -> list[int]:
        try:
            return [int(pid) for pid in self.procs.read_text().split()]
        except OSError:
            return []

    def _kill_member(self, pid: int) -> None:
        # A pidfd pins the process, so the check that it is ours and the kill see the same one.
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except (AttributeError, OSError):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            return
        try:
            if self._holds(pid):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _holds(self, pid: int) -> bool:
        mine = f"{self.parent.name.rstrip('/')}/{self.leaf}"
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        return any(line.split(":", 2)[2] == mine for line in lines)


def _counter(path: Path, key: str | None) -> int | None:
    """The number after ``key`` in a flat-keyed cgroup file (the whole file when key is None)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        return int(text.split()[0]) if text.split() else None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def works(parent: CgroupParent) -> bool:
    """Really makes a cgroup under ``parent``, moves a shell into it and removes it again."""
    cgroup = RunCgroup(parent, Limits(pids=8, memory_mb=64))
    try:
        cgroup.create()
    except OSError as exc:
        log.debug("cannot create a %s cgroup under %s: %s", parent.controller, parent.path, exc)
        return False
    try:
        joined = subprocess.run(
            ["/bin/sh", "-c", 'echo $$ > "$1"', "sh", str(cgroup.procs)],
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
            timeout=10,
            check=False,
        )
        return joined.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        cgroup.close()
