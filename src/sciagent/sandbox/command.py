"""The command lines of a sandboxed run: bubblewrap's view of the host, the environment, the launcher.

The launcher replaces ``preexec_fn`` (unsafe in a multi-threaded caller): ``/bin/sh`` writes its own
pid into the run's cgroups, then execs ``prlimit`` (util-linux), which sets the rlimits and execs
bubblewrap, which execs the command. Limits and cgroups are inherited along that chain.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from sciagent.errors import SandboxUnavailable
from sciagent.sandbox.limits import Limits

SCRATCH = "/work"  # where the run's directory is mounted inside, and its working directory
NOBODY = "65534"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_TOP_LEVEL = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")  # symlinks into /usr where usrmerged
_ETC = ("ld.so.cache", "passwd", "group", "localtime", "alternatives")  # never the rest of /etc
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Joins the cgroups named before "--", then execs the rest; exit 125 says the sandbox failed, not the code.
_JOIN_CGROUPS = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || '
    '{ echo "sciagent sandbox: cannot join the cgroup $1" >&2; exit 125; }; shift; done; shift; exec "$@"'
)


def which(name: str) -> str | None:
    """``shutil.which`` that also looks in the system directories (a caller's PATH may be minimal)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")


def sandbox_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a run: a fixed allow-list plus the caller's ``extra`` entries."""
    env = {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MPLCONFIGDIR": "/tmp/mpl",
        "MPLBACKEND": "Agg",
    }
    for key, value in extra.items():
        if not _ENV_NAME.match(key) or "\0" in value:
            raise ValueError(f"sandbox environment entry {key!r} is not a plain NAME=value")
        env[key] = value
    return env


def refuse_broad(path: Path, what: str) -> None:
    """Raises SandboxUnavailable when binding ``path`` would expose / or the home directory."""
    home = Path.home()
    if path == Path("/") or path == home or path in home.parents:
        raise SandboxUnavailable(
            f"{what} is {path}: binding it into the sandbox would expose {home}; "
            "use a directory of its own (a virtual environment, a run directory)"
        )


@functools.cache
def python_dirs() -> tuple[Path, ...]:
    """Host directories this interpreter needs: its base prefix, the venv, the executable's directory."""
    executable = Path(sys.executable)
    candidates = {sys.base_prefix, sys.prefix, executable.parent, Path(os.path.realpath(executable)).parent}
    kept: list[Path] = []
    for path in sorted({Path(os.path.abspath(c)) for c in candidates}, key=lambda p: len(p.parts)):
        if path.is_relative_to("/usr") or any(path.is_relative_to(k) for k in kept):
            continue
        refuse_broad(path, "the Python installation")
        kept.append(path)
    return tuple(kept)


def namespace_args(bwrap: str, *, network: bool) -> list[str]:
    """bubblewrap's isolation options: every namespace, nobody inside, no environment."""
    args = [bwrap, "--unshare-all", "--unshare-user"]
    if not network:
        args.append("--share-net")
    args += ["--disable-userns", "--die-with-parent", "--new-session", "--clearenv"]
    return [*args, "--uid", NOBODY, "--gid", NOBODY]


def system_args(tmp_bytes: int) -> list[str]:
    """Read-only /usr (with /bin, /lib... as on the host), a few /etc files, fresh /proc and /dev, and
    /tmp and /dev/shm as tmpfs of ``tmp_bytes`` each (bubblewrap's /dev is an unbounded tmpfs)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_LEVEL:
        host = Path("/", name)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    for name in _ETC:
        host = Path("/etc", name)
        if host.exists():
            args += ["--ro-bind", str(host), str(host)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for tmpfs in ("/dev/shm", "/tmp"):
        args += ["--size", str(tmp_bytes), "--tmpfs", tmpfs]
    return args


def bwrap_argv(
    bwrap: str,
    argv: Sequence[str],
    *,
    workdir: Path,
    read_only: Mapping[str, Path],
    env: Mapping[str, str],
    limits: Limits,
    network: bool,
) -> list[str]:
    """The bubblewrap command running ``argv`` with ``workdir`` at /work, writable, and nothing else."""
    args = namespace_args(bwrap, network=network) + system_args(limits.tmp_mb << 20)
    args += ["--bind", str(workdir), SCRATCH]
    for path in python_dirs():  # after /work and /tmp: a venv below either stays visible
        args += ["--ro-bind", str(path), str(path)]
    for name, host in read_only.items():
        args += ["--ro-bind", str(host), f"{SCRATCH}/{name}"]
    args += ["--chdir", SCRATCH]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", *argv]


def mount_points(workdir: Path, read_only: Mapping[str, Path]) -> list[Path]:
    """Paths bubblewrap will create in ``workdir`` as mount points (read-only entries, a venv under /work).

    Raises ValueError when one passes through a symlink (left by an earlier run's code): bubblewrap,
    running as root, would follow it and create the mount point anywhere on the host.
    """
    inside = [PurePosixPath(name) for name in read_only]
    inside += [PurePosixPath(p).relative_to(SCRATCH) for p in python_dirs() if p.is_relative_to(SCRATCH)]
    for relative in inside:
        path = workdir
        for part in relative.parts:
            path = path / part
            if path.is_symlink():
                raise ValueError(
                    f"{path} is a symlink where the sandbox mounts {SCRATCH}/{relative}: "
                    "bubblewrap would follow it out of the run directory; remove it"
                )
    return _new_paths(workdir, inside)


def link_read_only(workdir: Path, read_only: Mapping[str, Path]) -> list[Path]:
    """Without bubblewrap: each read-only entry becomes a symlink in ``workdir``; returns what was made."""
    for name in read_only:
        if os.path.lexists(workdir / name):
            raise ValueError(f"read-only entry {name!r} already exists in {workdir}")
    made: list[Path] = []
    for name, host in read_only.items():
        link = workdir / name
        made += _new_paths(workdir, [PurePosixPath(name)])
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(host)
    return made


def remove_made(paths: Sequence[Path]) -> None:
    """Removes what the sandbox made in a run's directory: symlinks, empty files and empty directories."""
    for path in sorted(set(paths), key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_symlink() or (path.is_file() and path.stat().st_size == 0):
                path.unlink()
            elif path.is_dir():
                path.rmdir()
        except OSError:
            pass  # the code put something there: it is the run's output now


def strip_setid(workdir: Path) -> list[Path]:
    """Clears the set-user-ID and set-group-ID bits of files in ``workdir``; returns the files changed.

    Inside, nobody is the caller's own uid and gid: when the caller is root, a setuid file the
    code left in its run directory would run as root for anyone who can reach it on the host.
    """
    changed = []
    for root, _, files in os.walk(workdir):
        for name in files:
            path = Path(root, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a symlink, a socket, gone
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                    os.fchmod(fd, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
                    changed.append(path)
            finally:
                os.close(fd)
    return changed


def _new_paths(workdir: Path, inside: Sequence[PurePosixPath]) -> list[Path]:
    new: list[Path] = []
    for relative in inside:
        path = workdir
        for part in relative.parts:
            path = path / part
            if not os.path.lexists(path):
                new.append(path)
    return new


def launcher_argv(
    inner: Sequence[str],
    limits: Limits,
    *,
    prlimit: str | None,
    cgroup_procs: Sequence[Path],
    nproc: int | None,
) -> list[str]:
    """``inner`` behind the cgroup join and the rlimits (``nproc`` None: no RLIMIT_NPROC, as for root)."""
    args: list[str] = []
    if cgroup_procs:
        args += ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *map(str, cgroup_procs), "--"]
    if prlimit:
        args += [
            prlimit,
            f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",  # SIGXCPU at the limit, SIGKILL a second later
            f"--as={limits.address_space_mb << 20}",
            f"--fsize={limits.file_size_mb << 20}",
            f"--nofile={limits.open_files}",
            "--core=0",
        ]
        if nproc is not None:
            args.append(f"--nproc={nproc}")
        args.append("--")
    return [*args, *inner]


def tasks_of(uid: int) -> int:
    """Processes and threads of ``uid`` now: RLIMIT_NPROC counts them all, not only the run's."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return count
