"""What a sandboxed run may use (``Limits``) and what came of it (``SandboxRun``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

# What each entry of ``SandboxRun.limits_hit`` means, in the words of a summary line.
LIMIT_PHRASES = {
    "wall": "the wall-clock limit",
    "cpu": "the CPU-time limit",
    "pids": "the process-count limit",
    "memory": "the memory limit",
    "address-space": "the address-space limit",
    "file-size": "the file-size limit",
    "scratch": "the run-directory size limit",
}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run.

    Attributes:
        wall_s: wall-clock seconds before the whole process group (or pid namespace) is killed.
        cpu_s: CPU seconds per process (RLIMIT_CPU): SIGXCPU then, SIGKILL one second later.
        address_space_mb: virtual memory per process (RLIMIT_AS); allocations beyond it fail.
        file_size_mb: largest file a process may write (RLIMIT_FSIZE).
        open_files: open file descriptors per process (RLIMIT_NOFILE).
        pids: processes and threads: a pids cgroup's ``pids.max`` where one is available,
            and RLIMIT_NPROC when not root (it does nothing for root).
        memory_mb: memory cgroup limit (where a memory cgroup is available).
        tmp_mb: size of the run's /tmp and of its /dev/shm, each a tmpfs (memory) of its own.
        scratch_mb: bytes the run directory may hold on disk, checked twice a second while the
            code runs: it is killed once the directory holds more (so it may overshoot by what it
            writes in half a second; one file is at most ``file_size_mb``).
        scratch_entries: files and directories the run directory may hold (inodes), checked likewise.
        output_bytes: bytes of stdout and of stderr kept each; the rest is counted, not kept.
    """

    wall_s: float = 60.0
    cpu_s: int = 60
    address_space_mb: int = 4096
    file_size_mb: int = 256
    open_files: int = 256
    pids: int = 64
    memory_mb: int = 2048
    tmp_mb: int = 1024
    scratch_mb: int = 1024
    scratch_entries: int = 20_000
    output_bytes: int = 64_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.wall_s) and self.wall_s > 0):
            raise ValueError(f"Limits.wall_s must be a positive number of seconds, not {self.wall_s!r}")
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "wall_s" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Limits.{field.name} must be a positive integer, not {value!r}")
        if self.open_files < 16:
            raise ValueError(
                f"Limits.open_files must be at least 16 (a program needs a few), not {self.open_files}"
            )


@dataclass(frozen=True)
class SandboxRun:
    """The outcome of one sandboxed command.

    Attributes:
        argv: the command as given.
        exit_code: its exit status, or None when a signal killed it.
        signal: the signal's name (``"SIGKILL"``, ``"SIGXCPU"``) when one killed it.
        stdout: the first ``Limits.output_bytes`` bytes of standard output, decoded as UTF-8.
        stderr: the same for standard error.
        stdout_dropped: bytes of standard output read but not kept.
        stderr_dropped: the same for standard error.
        timed_out: the wall-clock limit killed it.
        limits_hit: which limits stopped it, where that is known (keys of ``LIMIT_PHRASES``).
        duration_s: wall-clock seconds from start to exit.
        layers: the protections that were active for this run (``Layers.active()`` names).
    """

    argv: tuple[str, ...]
    exit_code: int | None
    signal: str | None
    stdout: str
    stderr: str
    stdout_dropped: int
    stderr_dropped: int
    timed_out: bool
    limits_hit: tuple[str, ...]
    duration_s: float
    layers: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 within its wall-clock limit."""
        return self.exit_code == 0 and not self.timed_out

    def summary(self) -> str:
        """One line: ``exit 1 after 0.4 s``, ``killed (SIGXCPU: the CPU-time limit) after 2.1 s``."""
        after = f"after {self.duration_s:.1f} s"
        hits = [LIMIT_PHRASES.get(name, name) for name in self.limits_hit]
        if self.exit_code is not None:
            line = f"exit {self.exit_code} {after}"
            return f"{line} (reached {', '.join(hits)})" if hits else line
        why = f"{self.signal}: {', '.join(hits)}" if hits else f"{self.signal}"
        return f"killed ({why}) {after}"
