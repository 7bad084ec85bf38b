"""Which protections work on this machine, found by trying each once per process."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from dataclasses import dataclass

from sciagent.sandbox import cgroups
from sciagent.sandbox.command import namespace_args, system_args, which

log = logging.getLogger(__name__)

# A phrase for each active layer, for "run it with ... only".
_PHRASES = {
    "namespaces": "filesystem and user isolation",
    "network": "no network",
    "rlimits": "resource limits",
    "cgroup-pids": "a pids cgroup",
    "cgroup-memory": "a memory cgroup",
}


@dataclass(frozen=True)
class Layers:
    """Which protections are active on this machine (the start-up probe's answer).

    Attributes:
        namespaces: bubblewrap works: mount, pid, ipc, uts, user (and net) namespaces; only the
            run's directory is writable.
        network_isolated: the sandbox has a network namespace of its own (no network).
        rlimits: resource limits are set (``prlimit`` from util-linux was found).
        cgroup_pids: a pids cgroup can be made per run (bounds processes, also for root).
        cgroup_memory: a memory cgroup can be made per run.
        bwrap: the path of bubblewrap, or None.
    """

    namespaces: bool
    network_isolated: bool
    rlimits: bool
    cgroup_pids: bool
    cgroup_memory: bool
    bwrap: str | None

    def active(self) -> list[str]:
        """Names of the active layers: namespaces, network, rlimits, cgroup-pids, cgroup-memory."""
        flags = {
            "namespaces": self.namespaces,
            "network": self.namespaces and self.network_isolated,
            "rlimits": self.rlimits,
            "cgroup-pids": self.cgroup_pids,
            "cgroup-memory": self.cgroup_memory,
        }
        return [name for name, on in flags.items() if on]

    def missing(self) -> list[str]:
        """What is missing, in words a user can act on."""
        missing = []
        if not self.namespaces:
            why = (
                "bubblewrap not found: not installed, or not where SCIAGENT_BWRAP says"
                if self.bwrap is None
                else f"{self.bwrap} cannot create namespaces here"
            )
            missing.append(f"no filesystem, user or network isolation ({why})")
        elif not self.network_isolated:
            missing.append(f"no network isolation ({self.bwrap} cannot create a network namespace here)")
        if not self.rlimits:
            missing.append("no resource limits (prlimit from util-linux not found)")
        if not self.cgroup_pids:
            bound = (
                "RLIMIT_NPROC"
                if os.geteuid() != 0
                else "the wall-clock limit only (RLIMIT_NPROC spares root)"
            )
            missing.append(f"no pids cgroup (fork bombs are bounded by {bound})")
        if not self.cgroup_memory:
            missing.append("no memory cgroup (memory is bounded per process by RLIMIT_AS only)")
        return missing

    def remaining(self) -> str:
        """The active layers as a phrase: "resource limits, a pids cgroup and a memory cgroup"."""
        phrases = [_PHRASES[name] for name in self.active()]
        if not phrases:
            return "no protection at all"
        return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"

    def describe(self) -> str:
        """One line: the active layers, then what is missing."""
        line = f"sandbox: {', '.join(self.active()) or 'no protection'}"
        missing = self.missing()
        return f"{line}; missing: {'; '.join(missing)}" if missing else line


_lock = threading.Lock()
_cached: Layers | None = None


def probe_layers(refresh: bool = False) -> Layers:
    """The protections that work here, tried for real once per process (``refresh`` tries again).

    Runs bubblewrap with the sandbox's own namespace options, and makes, joins and removes a test
    cgroup per controller; takes some tens of milliseconds.
    """
    global _cached
    with _lock:
        if _cached is None or refresh:
            _cached = _probe()
            log.debug("%s", _cached.describe())
        return _cached


def find_bwrap() -> str | None:
    """bubblewrap: the executable ``SCIAGENT_BWRAP`` names (a site's own build, say), else ``bwrap``
    on PATH or in the system directories."""
    named = os.environ.get("SCIAGENT_BWRAP")
    if named:
        return named if os.path.isfile(named) and os.access(named, os.X_OK) else None
    return which("bwrap")


def _probe() -> Layers:
    bwrap = find_bwrap()
    namespaces = network = bwrap is not None and _bwrap_works(bwrap, network=True)
    if bwrap is not None and not namespaces:
        namespaces = _bwrap_works(bwrap, network=False)
    parents = cgroups.find_parents()
    return Layers(
        namespaces=namespaces,
        network_isolated=network,
        rlimits=which("prlimit") is not None,
        cgroup_pids="pids" in parents and cgroups.works(parents["pids"]),
        cgroup_memory="memory" in parents and cgroups.works(parents["memory"]),
        bwrap=bwrap,
    )


def _bwrap_works(bwrap: str, *, network: bool) -> bool:
    argv = [*namespace_args(bwrap, network=network), *system_args(1 << 20), "--", "/bin/sh", "-c", ":"]
    try:
        done = subprocess.run(
            argv, capture_output=True, env={"PATH": "/usr/bin:/bin"}, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("bubblewrap does not start: %s", exc)
        return False
    if done.returncode != 0:
        log.debug("bubblewrap failed (network=%s): %s", network, done.stderr.decode(errors="replace").strip())
    return done.returncode == 0
