"""The jobs sciagent submitted, in one SQLite file per workspace, so a later session sees them too.

The safety policy reads only this ledger: a job absent from it is someone else's. One row per
job, keyed by site and native id; the record itself is stored as JSON so its fields can grow.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from pydantic import BaseModel, Field

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})


class JobRecord(BaseModel):
    """One job sciagent submitted, as last seen."""

    native_id: str = Field(description="the scheduler's job id")
    site: str
    queue: str | None = None
    script: str = Field(description="the job script that was submitted")
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


class JobLedger:
    """Read and write the ledger at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (site TEXT, native_id TEXT, submitted_at REAL, record TEXT, "
                "PRIMARY KEY (site, native_id))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def save(self, record: JobRecord) -> None:
        """Add ``record``, or replace the one with its site and native id."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
                (record.site, record.native_id, record.submitted_at, record.model_dump_json()),
            )

    def find(self, native_id: str, site: str | None = None) -> list[JobRecord]:
        """The records of ``native_id`` (on ``site``, if given): none, sciagent did not submit it."""
        return [job for job in self.jobs(site) if job.native_id == native_id]

    def jobs(self, site: str | None = None) -> list[JobRecord]:
        """Every record (of ``site``, if given), oldest first."""
        query, args = "SELECT record FROM jobs", ()
        if site is not None:
            query, args = query + " WHERE site = ?", (site,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY submitted_at", args).fetchall()
        return [JobRecord.model_validate_json(row[0]) for row in rows]
