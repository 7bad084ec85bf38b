"""The jobs sciagent submitted and the job requests it wrote, per user and site, where no model writes.

The safety policy reads only this ledger: a job absent from it is someone else's. It lives in the
user's state directory (``$SCIAGENT_STATE_DIR``, else ``platformdirs.user_state_dir("sciagent")``),
one directory per site, not in a workspace: two workspaces of one user share one per-queue limit,
and a session (whose files the model writes) cannot edit it. The directory also holds psij's work
files and the copies of checked scripts that jobs run, so it must be on a filesystem the compute
nodes see (a home directory is, at the facilities sciagent targets).

``submitting()`` holds an exclusive lock across the policy check and the submission, so two
sessions cannot both pass a limit that only one of them fits under.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

from sciagent.compute.scheduler.psij_jobs import JobRequest
from sciagent.compute.scheduler.values import SITE_NAME
from sciagent.errors import ConfigError

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})


class JobRecord(BaseModel):
    """One job sciagent submitted, as last seen."""

    native_id: str = Field(description="the scheduler's job id")
    site: str
    queue: str | None = Field(default=None, description="the scheduler's own name of the queue")
    script: str = Field(description="the job script that was submitted")
    digest: str = Field(description="sha256 of the script's content as submitted")
    nodes: int = 1
    walltime: str = "00:30:00"
    account: str | None = None
    stdout: str
    stderr: str
    submitted_at: float = Field(description="seconds since the epoch")
    state: str = Field(default="QUEUED", description="QUEUED, ACTIVE, COMPLETED, FAILED or CANCELED")
    exit_code: int | None = None
    message: str | None = Field(default=None, description="the scheduler's reason, if it gave one")
    diagnosis: str | None = Field(default=None, description="why a failed job failed, as diagnosed")

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def state_dir() -> Path:
    """``$SCIAGENT_STATE_DIR``, else the user's state directory for sciagent."""
    root = os.environ.get("SCIAGENT_STATE_DIR")
    if root:
        return Path(root).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("sciagent"))


def ledger_sites() -> list[str]:
    """The sites that have a ledger: where sciagent wrote or submitted a job for this user."""
    return sorted(path.parent.name for path in (state_dir() / "jobs").glob("*/ledger.sqlite"))


def digest_of(content: bytes) -> str:
    """The sha256 hex digest a script is known by: the same content is the same job, wherever it lies."""
    return hashlib.sha256(content).hexdigest()


class JobLedger:
    """The ledger of site ``site`` in the state directory, created on first use."""

    def __init__(self, site: str) -> None:
        if not re.fullmatch(SITE_NAME, site):
            raise ConfigError(
                f"site name {site!r} cannot name a job ledger: use letters, digits, '_', '.', '-'"
            )
        self.site = site
        self.directory = state_dir() / "jobs" / site
        self.path = self.directory / "ledger.sqlite"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (native_id TEXT PRIMARY KEY, submitted_at REAL, record TEXT)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS requests (digest TEXT, script TEXT, request TEXT, "
                "PRIMARY KEY (digest, script))"
            )

    @property
    def psij_dir(self) -> Path:
        """psij's work directory: its submit scripts and exit-code files, kept for re-attaching."""
        return self.directory / "psij"

    @property
    def scripts_dir(self) -> Path:
        """Where the checked copies of submitted scripts are kept, named by digest: jobs run these."""
        return self.directory / "scripts"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @contextmanager
    def submitting(self) -> Iterator[None]:
        """Hold the site's submission lock (an exclusive ``flock``): check, submit and record inside it."""
        with open(self.directory / "submit.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record_request(self, request: JobRequest, digest: str) -> None:
        """Remember the request ``generate_job_script`` wrote for the script with content ``digest``."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO requests VALUES (?, ?, ?)",
                (digest, request.script, request.model_dump_json()),
            )

    def request_for(self, script: Path, digest: str) -> JobRequest | None:
        """The request recorded for ``script`` with this content, or None (not generated, or edited since)."""
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT request FROM requests WHERE digest = ? AND script = ?", (digest, str(script))
            ).fetchone()
        return JobRequest.model_validate_json(row[0]) if row else None

    def save(self, record: JobRecord) -> None:
        """Add ``record``, or replace the one with its native id."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)",
                (record.native_id, record.submitted_at, record.model_dump_json()),
            )

    def find(self, native_id: str) -> JobRecord | None:
        """The record of ``native_id``: None, sciagent did not submit it."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT record FROM jobs WHERE native_id = ?", (native_id,)).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def jobs(self) -> list[JobRecord]:
        """Every record, oldest first."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT record FROM jobs ORDER BY submitted_at").fetchall()
        return [JobRecord.model_validate_json(row[0]) for row in rows]
