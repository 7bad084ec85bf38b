"""``Sandbox``: runs a command (model-written code) with every protection this machine has."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from sciagent.errors import SandboxUnavailable
from sciagent.sandbox import cgroups, rundir
from sciagent.sandbox.command import (
    SCRATCH,
    bwrap_argv,
    launcher_argv,
    link_read_only,
    mount_points,
    refuse_broad,
    remove_made,
    sandbox_env,
    strip_setid,
    tasks_of,
    which,
)
from sciagent.sandbox.limits import Limits, SandboxRun
from sciagent.sandbox.probe import Layers, probe_layers
from sciagent.sandbox.process import Finished, supervise

log = logging.getLogger(__name__)

DEFAULT_LIMITS = Limits()
_NO_ENTRIES: Mapping[str, Path] = MappingProxyType({})
_NO_ENV: Mapping[str, str] = MappingProxyType({})


class Sandbox:
    """Runs commands isolated from the host, within ``Limits``.

    With bubblewrap (``Layers.namespaces``) the command runs as nobody in its own mount, pid, ipc,
    uts, user and network namespaces. It sees read-only /usr, a few /etc files and the Python
    installation, a fresh /proc and /dev, a bounded /tmp and /dev/shm, and its run directory at
    /work, the only writable place (bounded too: ``Limits.scratch_mb``); ``read_only`` entries are
    bound read-only inside /work. No $HOME, no source tree, no network, no environment but an
    allow-list. Read files back out of a run directory with ``rundir.read_back`` only.

    It fails closed: where bubblewrap cannot make a network namespace, nothing runs (like without
    bubblewrap) unless ``allow_unsandboxed``; then the code shares the host's network.

    Inside, nobody is the caller's own uid: files the code writes belong to the caller. As root,
    setuid/setgid bits the code set are cleared when the run ends (not while it runs: keep run
    directories out of other users' reach). Run one command at a time per run directory: before
    each run, symlinks where bubblewrap will make mount points are refused (ValueError).

    Without bubblewrap, runs happen only when ``allow_unsandboxed`` is True, and then NOTHING is
    isolated: the command can read and write whatever this user can, and reach the network. Only
    the rlimits, the cgroups, the cleared environment and the working directory still apply;
    ``read_only`` entries become symlinks in the run directory (removed afterwards).

    Args:
        allow_unsandboxed: run even when namespaces are not available (``--allow-unsandboxed-code``).
        layers: the protections to use; by default ``probe_layers()`` (tried on first use).
    """

    def __init__(self, *, allow_unsandboxed: bool = False, layers: Layers | None = None) -> None:
        self._allow_unsandboxed = allow_unsandboxed
        self._layers = layers

    @property
    def layers(self) -> Layers:
        """The protections this sandbox uses."""
        if self._layers is None:
            self._layers = probe_layers()
        return self._layers

    @property
    def isolated(self) -> bool:
        """True when runs happen inside bubblewrap's namespaces."""
        return self.layers.namespaces and self.layers.bwrap is not None

    def check(self) -> None:
        """Raises SandboxUnavailable when runs would lack namespaces or a network namespace and that
        was not allowed."""
        layers = self.layers
        if (self.isolated and layers.network_isolated) or self._allow_unsandboxed:
            return
        fix = (
            "let bubblewrap create network namespaces here (unprivileged user namespaces allowed)"
            if self.isolated
            else "install bubblewrap (apt-get install bubblewrap)"
        )
        raise SandboxUnavailable(
            f"model-written code is not run: {'; '.join(layers.missing())}; {fix} or pass "
            f"--allow-unsandboxed-code to run it with {layers.remaining()} only"
        )

    def run(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        read_only: Mapping[str, Path] = _NO_ENTRIES,
        limits: Limits = DEFAULT_LIMITS,
        env: Mapping[str, str] = _NO_ENV,
        stdin: str | None = None,
    ) -> SandboxRun:
        """Runs ``argv`` in ``workdir`` (at /work inside) and returns its outcome, failed or not.

        Args:
            argv: the command; ``argv[0]`` an absolute path visible inside (``sys.executable`` is).
            workdir: an existing directory, the only writable host path.
            read_only: names inside /work mapped to host files or directories bound read-only.
            limits: the run's resource limits.
            env: entries added to the allow-listed environment (trusted: the caller's, not the model's).
            stdin: text for the command's standard input (none by default).

        Raises:
            SandboxUnavailable: not isolated here (no namespaces, or no network namespace) and
                ``allow_unsandboxed`` was not given.
            ValueError: an empty command, a missing ``workdir`` or read-only path, a bad name, a
                symlink where a mount point goes.
        """
        self.check()
        command = tuple(str(part) for part in argv)
        if not command:
            raise ValueError("the sandbox was given an empty command")
        scratch, entries, full_env = _scratch(workdir), _entries(read_only), sandbox_env(env)
        layers, isolated = self.layers, self.isolated
        prlimit = which("prlimit") if layers.rlimits else None
        made: list[Path] = []
        run_cgroups: list[cgroups.RunCgroup] = []
        try:
            run_cgroups = _make_cgroups(layers, limits)
            if isolated:
                made = mount_points(scratch, entries)
                inner = self._bwrap(command, scratch, entries, full_env, limits)
                launch_env = {"PATH": "/usr/bin:/bin"}  # bubblewrap clears it anyway
            else:
                made = link_read_only(scratch, entries)
                inner, launch_env = list(command), full_env
            nproc = limits.pids + tasks_of(os.getuid()) if prlimit and os.geteuid() != 0 else None
            procs = [c.procs for c in run_cgroups]
            done = supervise(
                launcher_argv(inner, limits, prlimit=prlimit, cgroup_procs=procs, nproc=nproc),
                cwd=scratch,
                env=launch_env,
                stdin=stdin,
                wall_s=limits.wall_s,
                output_bytes=limits.output_bytes,
                kill_rest=lambda: _kill_all(run_cgroups),
                over=lambda: _scratch_over(scratch, limits),
            )
            cgroup_hits = [hit for c in run_cgroups for hit in c.hits()]
        finally:
            _clean_up(run_cgroups, made, scratch, isolated=isolated)
        used = [
            *(["namespaces"] if isolated else []),
            *(["network"] if isolated and layers.network_isolated else []),
            *(["rlimits"] if prlimit else []),
            *(f"cgroup-{c.parent.controller}" for c in run_cgroups),
        ]
        return _result(command, done, limits, isolated=isolated, cgroup_hits=cgroup_hits, layers=used)

    def _bwrap(
        self,
        command: Sequence[str],
        scratch: Path,
        entries: Mapping[str, Path],
        env: Mapping[str, str],
        limits: Limits,
    ) -> list[str]:
        bwrap = self.layers.bwrap
        assert bwrap is not None  # only called when isolated
        return bwrap_argv(
            bwrap,
            command,
            workdir=scratch,
            read_only=entries,
            env=env,
            limits=limits,
            network=self.layers.network_isolated,
        )


def _clean_up(
    run_cgroups: list[cgroups.RunCgroup], made: list[Path], scratch: Path, *, isolated: bool
) -> None:
    for cgroup in run_cgroups:
        cgroup.close()
    remove_made(made)
    if isolated and os.geteuid() == 0:
        for path in strip_setid(scratch):
            log.warning("cleared the setuid/setgid bits the sandboxed code set on %s", path)


def _scratch_over(scratch: Path, limits: Limits) -> bool:
    used, entries = rundir.usage(scratch, limits.scratch_mb << 20, limits.scratch_entries)
    return used > limits.scratch_mb << 20 or entries > limits.scratch_entries


def _scratch(workdir: Path) -> Path:
    path = Path(workdir).resolve()
    if not path.is_dir():
        raise ValueError(f"the sandbox's run directory {workdir} is not an existing directory")
    refuse_broad(path, "the run directory")
    return path


def _entries(read_only: Mapping[str, Path]) -> dict[str, Path]:
    entries = {}
    for name, host in read_only.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or not relative.parts or ".." in relative.parts:
            raise ValueError(f"read-only entry {name!r} must be a relative name inside {SCRATCH}")
        path = Path(host).resolve()
        if not path.exists():
            raise ValueError(f"read-only entry {name!r}: {host} does not exist")
        refuse_broad(path, f"read-only entry {name!r}")
        entries[str(relative)] = path
    return entries


def _make_cgroups(layers: Layers, limits: Limits) -> list[cgroups.RunCgroup]:
    wanted = {"pids": layers.cgroup_pids, "memory": layers.cgroup_memory}
    parents = cgroups.find_parents()
    made = []
    for controller in cgroups.CONTROLLERS:
        if wanted[controller] and controller in parents:
            cgroup = cgroups.RunCgroup(parents[controller], limits)
            try:
                cgroup.create()
            except OSError as exc:
                log.warning("running without a %s cgroup: %s", controller, exc)
                continue
            made.append(cgroup)
    return made


def _kill_all(run_cgroups: list[cgroups.RunCgroup]) -> None:
    for cgroup in run_cgroups:
        cgroup.kill()


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _result(
    argv: tuple[str, ...],
    done: Finished,
    limits: Limits,
    *,
    isolated: bool,
    cgroup_hits: list[str],
    layers: list[str],
) -> SandboxRun:
    exit_code: int | None = done.returncode
    signal_name = None
    if done.returncode < 0:
        exit_code, signal_name = None, _signal_name(-done.returncode) or f"signal {-done.returncode}"
    elif isolated and done.returncode > 128 and _signal_name(done.returncode - 128):
        # bubblewrap reports its child's death by signal N as exit status 128 + N
        exit_code, signal_name = None, _signal_name(done.returncode - 128)
    hits = ["wall"] if done.timed_out else []
    cpu_killed = signal_name == "SIGKILL" and not done.timed_out and done.cpu_s >= limits.cpu_s
    if signal_name == "SIGXCPU" or (cpu_killed and "memory" not in cgroup_hits):
        hits.append("cpu")
    hits += cgroup_hits
    if signal_name == "SIGXFSZ":
        hits.append("file-size")
    if done.stopped:
        hits.append("scratch")
    return SandboxRun(
        argv=argv,
        exit_code=exit_code,
        signal=signal_name,
        stdout=done.stdout,
        stderr=done.stderr,
        stdout_dropped=done.stdout_dropped,
        stderr_dropped=done.stderr_dropped,
        timed_out=done.timed_out,
        limits_hit=tuple(hits),
        duration_s=done.duration_s,
        layers=tuple(layers),
    )
