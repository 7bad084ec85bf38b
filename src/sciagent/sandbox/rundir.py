"""The host's side of run directories: reading a file back out, measuring one, pruning old ones.

A run's code owns its directory: any name in it may be a symlink to a host file, a FIFO that blocks
whoever opens it, or a very large file. Whatever sciagent reads back is opened here, without
following links and without blocking, and only a bounded regular file is read.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "directory",
}


class ScratchFileError(ValueError):
    """A file in a run directory is not a regular file of bounded size: the message says why."""


def read_back(directory: Path, name: str, most_bytes: int) -> bytes:
    """The bytes of ``directory/name`` if it is a regular file of at most ``most_bytes`` bytes.

    ``directory`` is one sciagent made (not the code); ``name`` is a single path component. Neither
    is followed if it is a symlink; a FIFO or device is opened non-blocking and never read.

    Raises:
        ScratchFileError: missing, a symlink, not a regular file, or too large.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ScratchFileError(f"{name!r} is not a file name")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        parent = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ScratchFileError(f"run directory {directory}: {exc.strerror}") from exc
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        raise ScratchFileError(_open_error(name, exc)) from exc
    finally:
        os.close(parent)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "special file")
            raise ScratchFileError(f"{name} is a {kind}, not a regular file: it is not read")
        data = _read_up_to(fd, most_bytes + 1) if info.st_size <= most_bytes else b""
        if info.st_size > most_bytes or len(data) > most_bytes:  # it may grow while we read
            raise ScratchFileError(f"{name} is larger than {most_bytes:,} bytes: it is not read")
        return data
    finally:
        os.close(fd)


def _read_up_to(fd: int, count: int) -> bytes:
    parts, left = [], count
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _open_error(name: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"{name} is missing"
    if exc.errno == errno.ELOOP:
        return f"{name} is a symlink: files come out of the sandbox only as regular files"
    return f"{name} cannot be opened ({exc.strerror}): it is not read"


def usage(directory: Path, most_bytes: int, most_entries: int) -> tuple[int, int]:
    """(bytes on disk, entries) under ``directory``, links not followed; stops once either is over."""
    used = entries = 0
    pending = [directory]
    while pending and used <= most_bytes and entries <= most_entries:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    used += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(Path(entry.path))
                    if used > most_bytes or entries > most_entries:
                        break
        except OSError:
            continue  # removed while we looked: the code is still running
    return used, entries


def prune(parent: Path, *, keep: int, most_bytes: int) -> list[Path]:
    """Removes the oldest run directories under ``parent`` until at most ``keep`` remain and together
    they hold at most ``most_bytes``; returns what was removed.

    Age is the directory's modification time (the code can change it: that only changes which old
    directory goes first, never the bound).
    """
    try:
        with os.scandir(parent) as listing:
            found = [e for e in listing if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    newest_first = sorted(found, key=lambda e: e.stat(follow_symlinks=False).st_mtime, reverse=True)
    removed, total = [], 0
    for number, entry in enumerate(newest_first):
        total += usage(Path(entry.path), most_bytes, 1 << 62)[0]
        if number >= keep or total > most_bytes:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed
