"""Turn an exception that is not one of ours (a bug) into one line for people and a traceback on disk.

A user never sees a raw traceback: the command prints ``internal error: <type>: <message> (traceback
in <path>)`` and exits 1; the traceback goes to a log file in the run directory when there is one,
else in sciagent's per-user log directory, so a bug report can attach it.
"""

from __future__ import annotations

import traceback
from datetime import datetime, timezone
from pathlib import Path

import platformdirs

from sciagent.errors import InternalError
from sciagent.redaction import scrub

_MAX_MESSAGE = 300  # characters of the exception's message in the one line; the log has all of it


def default_log_dir() -> Path:
    return Path(platformdirs.user_log_dir("sciagent"))


def record_internal_error(exc: BaseException, directory: Path | None = None) -> InternalError:
    """Write ``exc``'s traceback to a log file in ``directory`` and return the one-line error for it."""
    folder = directory or default_log_dir()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    text = scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"internal-error-{stamp}.log"
        path.write_text(text)
    except OSError:  # the run directory is unwritable: fall back to the per-user log directory
        path = default_log_dir() / f"internal-error-{stamp}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    message = " ".join(scrub(str(exc)).split()) or "(no message)"
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return InternalError(type(exc).__name__, message, str(path))
