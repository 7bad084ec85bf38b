"""Asking a running study to stop cleanly: a file in its run directory that holds the reason.

A file, not a signal or an in-memory flag, because the parties are separate processes that share only a
filesystem: the batch-job supervisor or a SIGTERM handler writes it, the study's main loop reads it
between decisions, and every simulation's ``StopFileGuard`` (``science/reporters.py``) reads it at each
report step, on a local worker or a Parsl worker alike, then checkpoints at that exact step. A resumed
run clears it first, or it would stop again at once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sciagent.atomic import write_atomic
from sciagent.errors import StudyStopped

STOP_FILE = "stop-requested"
_UNSTATED = "a stop was requested"


def stop_path(run_dir: Path) -> Path:
    """Where a study's stop request lives (what its simulations' ``MDSpec.stop_file`` names)."""
    return run_dir / STOP_FILE


def request_stop(run_dir: Path, reason: str) -> None:
    """Ask the study in ``run_dir`` to stop: no new work, running simulations checkpoint and return.

    Written atomically, so a reader never sees the file without its reason.
    """
    write_atomic(stop_path(run_dir), reason.strip() or _UNSTATED)


def stop_reason(run_dir: Path) -> str | None:
    """The reason a stop was requested for the study in ``run_dir``, or None if none was."""
    try:
        return stop_path(run_dir).read_text().strip() or _UNSTATED
    except FileNotFoundError:
        return None


def raise_if_stop_requested(run_dir: Path) -> None:
    """Raise ``StudyStopped`` if a stop was requested: the check a study makes between its phases."""
    reason = stop_reason(run_dir)
    if reason is not None:
        raise StudyStopped(reason)


def clear_stop(run_dir: Path) -> None:
    """Withdraw a stop request (a resumed run must not stop at once because of the last one)."""
    with contextlib.suppress(FileNotFoundError):
        stop_path(run_dir).unlink()
