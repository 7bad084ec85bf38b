"""File tools, confined to the session directory: the model reads and writes there and nowhere else.

Confinement is checked on the resolved path (symlinks followed), so ``..``, an absolute path and a
symlink that points outside are all refused with the same one-line reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sciagent.atomic import write_atomic
from sciagent.tools.registry import ToolArgumentsError, ToolContext, define_tool

MAX_READ_BYTES = 64 * 1024
MAX_WRITE_BYTES = 4 * 1024 * 1024
MAX_LISTED = 500


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListFilesArguments(_Arguments):
    directory: str = Field(default=".", description="a directory inside the session directory")


class FileEntry(BaseModel):
    path: str = Field(description="relative to the session directory")
    bytes: int


class FileList(BaseModel):
    files: list[FileEntry]
    truncated: bool = Field(description=f"more than {MAX_LISTED} files; only the first are listed")


class ReadFileArguments(_Arguments):
    model_config = ConfigDict(json_schema_extra={"examples": [{"path": "notes.txt"}]})

    path: str = Field(description="a file inside the session directory, relative to it")


class FileText(BaseModel):
    path: str
    text: str
    bytes: int = Field(description="the file's whole size")
    truncated: bool = Field(description=f"only the first {MAX_READ_BYTES} bytes are in text")


class WriteFileArguments(_Arguments):
    model_config = ConfigDict(json_schema_extra={"examples": [{"path": "notes.txt", "text": "..."}]})

    path: str = Field(description="where to write, relative to the session directory")
    text: str = Field(description="the file's whole content")


class FileWritten(BaseModel):
    path: str
    bytes: int


def confined(context: ToolContext, path: str) -> Path:
    """``path`` resolved inside the session directory, or ``ToolArgumentsError`` saying why not."""
    root = context.session_dir.resolve()
    given = Path(path)
    resolved = (given if given.is_absolute() else root / given).resolve()
    if ".." in given.parts or not resolved.is_relative_to(root):
        raise ToolArgumentsError(
            f"path {path!r} is outside the session directory: use a path relative to it, without '..'"
        )
    return resolved


def list_files(arguments: ListFilesArguments, context: ToolContext) -> FileList:
    """List the files in the session directory (or a directory inside it), with their sizes in bytes."""
    root = context.session_dir.resolve()
    directory = confined(context, arguments.directory)
    if not directory.is_dir():
        raise ToolArgumentsError(f"{arguments.directory!r} is not a directory in the session directory")
    entries = []
    for path in sorted(directory.rglob("*")):
        inside = path.resolve().is_relative_to(root)  # a symlink pointing out is not listed
        if path.is_file() and inside:
            entries.append(FileEntry(path=str(path.relative_to(root)), bytes=path.stat().st_size))
    return FileList(files=entries[:MAX_LISTED], truncated=len(entries) > MAX_LISTED)


def read_file(arguments: ReadFileArguments, context: ToolContext) -> FileText:
    """Read a text file in the session directory (the first 64 KB; `truncated` says when there is more)."""
    path = confined(context, arguments.path)
    if not path.is_file():
        raise ToolArgumentsError(f"no file {arguments.path!r} in the session directory (see list_files)")
    # Opened without blocking or following a link, and read only if it is (still) a regular file: a
    # sandboxed run may have left a FIFO, which blocks a plain open() for ever.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(path, flags), "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ToolArgumentsError(f"{arguments.path!r} is not a regular file: it is not read")
        size, data = info.st_size, handle.read(MAX_READ_BYTES)
    text = data.decode("utf-8", errors="replace")
    return FileText(path=arguments.path, text=text, bytes=size, truncated=size > MAX_READ_BYTES)


def write_file(arguments: WriteFileArguments, context: ToolContext) -> FileWritten:
    """Write a text file in the session directory (replacing it if it exists); parents are created."""
    path = confined(context, arguments.path)
    data = arguments.text.encode()
    if len(data) > MAX_WRITE_BYTES:
        raise ToolArgumentsError(f"text of {len(data):,} bytes is over the {MAX_WRITE_BYTES:,}-byte limit")
    if path.is_dir():
        raise ToolArgumentsError(f"{arguments.path!r} is a directory")
    write_atomic(path, data)  # parents created; mode 0644
    return FileWritten(path=str(path.relative_to(context.session_dir.resolve())), bytes=len(data))


FILE_TOOLS = [
    define_tool(list_files, effects={"reads"}),
    define_tool(read_file, effects={"reads"}),
    define_tool(write_file, effects={"writes"}),
]
