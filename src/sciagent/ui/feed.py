"""The change feed as server-sent events: every journal write after a cursor, live, resumable.

Each frame's id is the write's ``seq`` in the journal's ``changes`` table, which numbers the writes of
every process in commit order, in-place updates included. So a client that reconnects with
``Last-Event-ID: N`` gets exactly the writes after N: a dropped ``ssh -L`` tunnel misses nothing.

Waking up: the journal is polled every ``poll_s`` (its newest change number, one indexed read; the
rows only when it moved), from a worker thread so the event loop never waits on SQLite. Polling, not
a notification, because the writers are other processes (a study, ``sciagent ask``, a batch job's
supervisor) that know nothing of the page. Each stream opens its own connection: in WAL mode a
reader never blocks a writer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from sse_starlette import ServerSentEvent

from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import RunRow
from sciagent.errors import UserError
from sciagent.ui.queries import change_item, run_summary, run_telemetry
from sciagent.ui.rundir import run_dir
from sciagent.ui.telemetry import state_files

POLL_S = 0.15
BATCH = 500  # changes read per poll; a stream far behind catches up batch after batch, without sleeping
TELEMETRY_EVERY_S = 1.0  # how often a run's state files are looked at


def start_cursor(last_event_id: str | None, after: str | None, latest: Callable[[], int]) -> int:
    """Where a stream starts: after the ``Last-Event-ID`` header, else ``?after=N``, else now.

    Raises:
        UserError: the header or parameter is not a non-negative integer.
    """
    for name, given in (("Last-Event-ID", last_event_id), ("after", after)):
        if given is None or given == "":
            continue
        if not given.strip().isdigit():
            raise UserError(f"{name} must be a change number (a non-negative integer), not {given[:40]!r}")
        return int(given)
    return latest()


class Follower:
    """Reads the journal's changes after a cursor, for one stream; ``seen`` skips the reads when nothing
    was written since the last poll."""

    def __init__(self, journal: Journal, cursor: int, run_id: str | None = None) -> None:
        self.journal = journal
        self.cursor = cursor
        self.run_id = run_id
        self._seen = -1

    def rows(self) -> tuple[list[dict[str, Any]], bool]:
        """The Items written after the cursor (at most ``BATCH`` changes), and whether more wait."""
        latest = self.journal.latest_change()
        if latest == self._seen:
            return [], False
        changes = self.journal.changes_after(self.cursor, self.run_id, BATCH)
        more = len(changes) == BATCH
        if not more:  # read after `latest`: every change up to it has been seen
            self._seen = latest
        if changes:
            self.cursor = changes[-1].seq
        return [item for item in map(change_item, changes) if item is not None], more

    def runs(self) -> list[tuple[int, dict[str, Any]]]:
        """Each run changed after the cursor, as (its newest change, its RunSummary), in that order."""
        latest = self.journal.latest_change()
        if latest == self._seen:
            return []
        self._seen = latest
        with self.journal.reading():
            changed = self.journal.changed_runs_after(self.cursor)
            found = [(seq, run_summary(self.journal, self.journal.get_run(run))) for run, seq in changed]
        if changed:
            self.cursor = changed[-1][1]
        return found


async def run_stream(
    journal_path: Path, workspace: Path, run: RunRow, cursor: int, poll_s: float
) -> AsyncIterator[ServerSentEvent]:
    """A run's stream: ``row`` frames for its writes after ``cursor``, ``telemetry`` frames when one
    of its state files changed (looked at every ``TELEMETRY_EVERY_S``)."""
    journal = await anyio.to_thread.run_sync(Journal, journal_path)
    try:
        follower = Follower(journal, cursor, run.id)
        telemetry = _TelemetryWatch(workspace, run)
        await anyio.to_thread.run_sync(telemetry.changed)  # the page's snapshot has the present state
        next_look = anyio.current_time() + TELEMETRY_EVERY_S
        while True:
            items, more = await anyio.to_thread.run_sync(follower.rows)
            for item in items:
                yield ServerSentEvent(data=_json(item), event="row", id=str(item["seq"]))
            if anyio.current_time() >= next_look:
                next_look = anyio.current_time() + TELEMETRY_EVERY_S
                series = await anyio.to_thread.run_sync(telemetry.changed)
                if series is not None:
                    yield ServerSentEvent(data=_json({"telemetry": series}), event="telemetry")
            if not more:
                await anyio.sleep(poll_s)
    finally:
        journal.close()


async def runs_stream(journal_path: Path, cursor: int, poll_s: float) -> AsyncIterator[ServerSentEvent]:
    """The runs list's stream: a ``run`` frame with a run's RunSummary whenever anything of it changed."""
    journal = await anyio.to_thread.run_sync(Journal, journal_path)
    try:
        follower = Follower(journal, cursor)
        while True:
            for seq, summary in await anyio.to_thread.run_sync(follower.runs):
                yield ServerSentEvent(data=_json(summary), event="run", id=str(seq))
            await anyio.sleep(poll_s)
    finally:
        journal.close()


class _TelemetryWatch:
    """Notices a run's state files changing (modification time or size) and reads its telemetry then."""

    def __init__(self, workspace: Path, run: RunRow) -> None:
        self.workspace, self.run = workspace, run
        self._last: dict[str, tuple[int, int]] = {}

    def changed(self) -> list[dict[str, Any]] | None:
        """The run's telemetry if a state file changed since the last look, else None."""
        directory = run_dir(self.workspace, self.run)  # a study makes its directory after it starts
        now = {str(path): _signature(path) for path in (state_files(directory) if directory else [])}
        if now == self._last:
            return None
        self._last = now
        return run_telemetry(directory)


def _signature(path: Path) -> tuple[int, int]:
    try:
        info = path.stat(follow_symlinks=False)
    except OSError:
        return (0, -1)
    return (info.st_mtime_ns, info.st_size)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
