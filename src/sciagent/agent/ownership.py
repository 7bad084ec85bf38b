"""One live process owns a run: a second ``resume`` of it is refused, in one line, before it touches anything.

Why: two processes working on one run close each other's live steps (a resume closes the steps a
killed process left ``running``) and simulate into the same directories (one checkpoint, one
trajectory, two writers). So the process that starts or resumes a run (a study, a session, an eval, a
chemistry run, the MCP server's run) owns it while it works on it:

- an exclusive ``flock`` on ``<workspace>/locks/<run-id>.lock``. The kernel drops it when the process
  ends, however it ends, so a SIGKILLed owner never blocks a later resume;
- an ``owner`` event of the run (pid, host, since) and a ``released`` event when it is done, so
  ``sciagent show`` and ``sciagent runs`` say who holds it and a refusal names the holder.

The lock is trusted on one host only: ``flock`` on a network filesystem (NFS, Lustre, GPFS) may not be
seen from another node. The journal's record decides what the lock cannot: a recorded owner on this
host whose process is gone is stale (taken over, with an event); one on another host that never
released the run is refused by name, unless the person says it is gone (``takeover``). A live owner on
this host is refused even if its lock file was removed.

A sub-agent's session runs in its parent's process and is owned with it (it is never resumed on its
own). ``tell`` and ``approve`` only add events: they work from any process while a run is owned.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import RunRow
from sciagent.errors import UserError

OWNER = "owner"
RELEASED = "released"
LOCKS_DIR = "locks"  # in the workspace, beside journal.sqlite


@dataclass(frozen=True)
class Owner:
    """The process that owns a run: its pid, its host and when it took the run (ISO-8601, UTC)."""

    pid: int
    host: str
    since: str

    @classmethod
    def this_process(cls) -> Owner:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), now)

    def describe(self) -> str:
        since = datetime.fromisoformat(self.since).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"process {self.pid} on host {self.host} since {since}"

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def gone(self) -> bool:
        """Whether the process has ended: no such pid, a zombie, or a newer process that reuses the pid.

        Only meaningful on the owner's host (see ``on_this_host``).
        """
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # another user's process: it exists
        seen = _proc_stat(self.pid)
        if seen is None:  # no /proc: the pid exists, take it as the owner
            return False
        state, began = seen
        # A minute of slack for clock steps and rounding; a pid comes round again far more slowly.
        return state == "Z" or began > datetime.fromisoformat(self.since).timestamp() + 60


class RunOwned(UserError):
    """Another process owns the run, or may (it took it on another host and never released it)."""

    def __init__(self, message: str, owner: Owner | None) -> None:
        super().__init__(message)
        self.owner = owner


@contextmanager
def owning(journal: Journal, run_id: str, *, what: str = "run", takeover: bool = False) -> Iterator[Owner]:
    """Own ``run_id`` while the block runs: the lock, the ``owner`` event, and ``released`` at the end.

    Args:
        journal: the workspace journal (the lock file goes beside it).
        run_id: the run's full id.
        what: how a refusal names the run (``session``, ``study``).
        takeover: the person says a recorded owner that the lock cannot vouch for (on another host, or a
            live pid here whose lock file is gone) no longer works on the run. A held lock always refuses.

    Raises:
        RunOwned: another process owns it; nothing was written.
    """
    path = journal.path.parent / LOCKS_DIR / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not following links, not blocking on a special file, not inherited by what this process starts.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = recorded_owner(journal, run_id)
            raise RunOwned(_running(what, run_id, holder), holder) from None
        before = recorded_owner(journal, run_id)
        if before is not None and not takeover:
            if not before.on_this_host:
                raise RunOwned(_elsewhere(what, run_id, before), before)
            if not before.gone():
                raise RunOwned(_running(what, run_id, before), before)
        owner = _record_owner(journal, run_id, before)
        try:
            yield owner
        finally:
            where = f"process {owner.pid} on host {owner.host}"
            data = {"kind": RELEASED, "pid": owner.pid, "host": owner.host}
            journal.add_event(run_id, "info", f"released by {where}", data)
    finally:
        os.close(fd)  # drops the lock


def _record_owner(journal: Journal, run_id: str, before: Owner | None) -> Owner:
    """This process as the run's owner, in an ``owner`` event (with the stale owner it replaces)."""
    owner = Owner.this_process()
    data = {"kind": OWNER, **asdict(owner)}
    message = f"owned by {owner.describe()}"
    if before is not None:
        data["replaced"] = asdict(before)
        message += f" (taken over from process {before.pid} on host {before.host}, never released)"
    journal.add_event(run_id, "info", message, data)
    return owner


def recorded_owner(journal: Journal, run_id: str) -> Owner | None:
    """The run's owner as the journal has it: the last ``owner`` event not followed by ``released``."""
    owner = None
    for event in journal.events(run_id):
        kind = event.data.get("kind")
        if kind == OWNER:
            owner = Owner(int(event.data["pid"]), str(event.data["host"]), str(event.data["since"]))
        elif kind == RELEASED:
            owner = None
    return owner


def owner_note(journal: Journal, run: RunRow) -> str:
    """What ``sciagent runs`` says of a running run: its owner, or that the owner is gone.

    A sub-agent is owned with the session at the top of its family.
    """
    while run.config.get("parent"):
        run = journal.get_run(str(run.config["parent"]))
    owner = recorded_owner(journal, run.id)
    if owner is None:
        return "no owner"
    if owner.on_this_host and owner.gone():
        return f"owner pid {owner.pid} is gone"
    return f"pid {owner.pid} on {owner.host}"


def _running(what: str, run_id: str, owner: Owner | None) -> str:
    holder = owner.describe() if owner is not None else "another process"
    return f"{what} {run_id} is running in {holder}: wait for it or stop it"


def _elsewhere(what: str, run_id: str, owner: Owner) -> str:
    return (
        f"{what} {run_id} is held by {owner.describe()}, which never released it, and this is host "
        f"{socket.gethostname()}: stop it there, or if that process is gone, run this again with --takeover"
    )


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """``pid``'s state letter and start time (seconds since the epoch) from /proc; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return fields[0], int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
