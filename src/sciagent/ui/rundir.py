"""A run's directory as the web UI sees it: where it is, what is in it, one file of it, a log's tail.

A run directory holds what its tools and simulations wrote, model-written files included, so nothing
here trusts a name in it: the listing does not follow links, a file is served only if its real path
(links resolved) is still inside the directory, and logs are opened without following links and
without blocking (a FIFO would hang the server).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sciagent.agent.journal_rows import RunRow
from sciagent.workflows.sessions.mcp_session import MCP_DIR

MAX_FILES = 500  # a listing stops here: a run with a huge tree still lists fast
TAIL_LINES = 30
_TAIL_BYTES = 64 << 10  # a log's tail is read from at most its last 64 KiB
_LOG_NAMES = ("stderr.txt", "stdout.txt")
_LOG_SUFFIXES = (".log", ".err", ".out")
_KINDS = {
    ".html": "html", ".md": "text", ".txt": "text", ".log": "log", ".png": "plot", ".svg": "plot",
    ".csv": "data", ".json": "data", ".pdb": "structure", ".xyz": "structure", ".dcd": "trajectory",
    ".xml": "data", ".chk": "checkpoint",
}  # fmt: skip


@dataclass(frozen=True)
class RunFile:
    """A file of the run: its path inside the run directory, what sort of file it is, its size."""

    path: str
    kind: str
    size: int

    def as_dict(self, run_id: str) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind, "size": self.size, "url": file_url(run_id, self.path)}


def run_dir(workspace: Path, run: RunRow) -> Path | None:
    """The run's directory: a study's or chem run's ``<id>/``, a session's ``sessions/<id>/``, an MCP
    session's ``mcp/<id>/``, or a sub-agent's parent's session directory (it shares it); None if none."""
    candidates = [workspace / run.id, workspace / "sessions" / run.id, workspace / MCP_DIR / run.id]
    parent = run.config.get("parent")
    if isinstance(parent, str) and parent and "/" not in parent and parent not in (".", ".."):
        candidates.append(workspace / "sessions" / parent)
    return next((path for path in candidates if path.is_dir()), None)


def file_url(run_id: str, path: str) -> str:
    return f"/files/{quote(run_id)}/{quote(path)}"


def list_files(root: Path) -> list[RunFile]:
    """The run directory's regular files (links not followed), reports first, at most ``MAX_FILES``."""
    found: list[RunFile] = []
    folders = [root]
    while folders and len(found) < MAX_FILES:
        try:
            entries = sorted(os.scandir(folders.pop(0)), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and len(found) < MAX_FILES:
                path = Path(entry.path).relative_to(root).as_posix()
                found.append(RunFile(path, _kind(entry.name), entry.stat(follow_symlinks=False).st_size))
    return sorted(found, key=lambda f: (f.kind != "report", f.path.count("/"), f.path))


def _kind(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if name.startswith("report.") and suffix in (".html", ".md"):
        return "report"
    return _KINDS.get(suffix, "file")


def confined_file(root: Path, relative: str) -> Path | None:
    """``root/relative`` if, all links resolved, it is a regular file inside ``root``; else None.

    An absolute ``relative``, ``..`` components and a link that leads out all resolve outside ``root``.
    """
    base = root.resolve()
    try:
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL byte
        return None
    return target if target.is_relative_to(base) and target.is_file() else None


def log_of(workdir: Path) -> Path | None:
    """The newest log file directly in a task's work directory (``*.log``, ``stderr.txt`` ...), if any."""
    try:
        entries = [
            entry for entry in os.scandir(workdir)
            if entry.is_file(follow_symlinks=False)
            and (entry.name in _LOG_NAMES or entry.name.endswith(_LOG_SUFFIXES))
        ]  # fmt: skip
    except OSError:
        return None
    newest = max(entries, key=lambda entry: entry.stat(follow_symlinks=False).st_mtime, default=None)
    return Path(newest.path) if newest else None


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a regular file (not followed if a link, not blocked on if a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return []
        os.lseek(fd, max(0, info.st_size - _TAIL_BYTES), os.SEEK_SET)
        text = os.read(fd, _TAIL_BYTES).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
    return text.splitlines()[-lines:]
