"""Terminal output: a rich progress bar on a terminal, plain lines when output is a file or a pipe."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from sciagent.science.reporters import MDProgress

err_console = Console(stderr=True)
out_console = Console(width=120) if not sys.stdout.isatty() else Console()

# Plain-line progress is printed at most this often, so logs of long runs stay readable.
_PLAIN_PROGRESS_EVERY_S = 10.0


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _PlainProgress:
    """Progress as occasional lines on stderr, for batch logs and pipes."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, update: MDProgress) -> None:
        now = time.monotonic()
        if now - self._last < _PLAIN_PROGRESS_EVERY_S and update.step < update.total_steps:
            return
        self._last = now
        rate = f"{update.ns_per_day:.3g} ns/day" if update.ns_per_day else "? ns/day"
        eta = format_eta(update.eta_s)
        print(
            f"{update.phase}: step {update.step}/{update.total_steps}, {rate}, ETA {eta}",
            file=sys.stderr,
            flush=True,
        )


class _RichProgress:
    """Progress as a live bar with steps, ns/day and time remaining."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def __call__(self, update: MDProgress) -> None:
        rate = f"{update.ns_per_day:.3g} ns/day" if update.ns_per_day else ""
        self._progress.update(
            self._task, completed=update.step, total=update.total_steps, phase=update.phase, rate=rate
        )


@contextmanager
def md_progress(description: str) -> Iterator[_PlainProgress | _RichProgress]:
    """A callback for ``run_md``'s progress, drawn as suits the terminal."""
    if not err_console.is_terminal:
        yield _PlainProgress()
        return
    columns = (
        TextColumn(f"{description} [bold]{{task.fields[phase]}}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield _RichProgress(progress, progress.add_task(description, total=None, phase="setup", rate=""))
