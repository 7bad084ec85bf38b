"""The one way sciagent writes a file that must survive a crash: temporary file, fsync, rename.

Readers see the old content or the new, never half; after a power loss or SIGKILL the new content is
on disk once this returns (the file and its directory entry are both synced). Standard library only,
so ``science/`` can use it on a bare remote worker.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; the file gets permission bits ``mode``.

    The temporary file is created with ``mode`` from the start, so a secret written 0600 is never
    briefly readable by others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory's inode)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. a platform where directories cannot be opened: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
