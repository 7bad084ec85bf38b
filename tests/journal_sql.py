"""Reading a workspace's journal with plain SQL, as a process other than sciagent sees it mid-run."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def journal_rows(project: Path, sql: str) -> list[tuple]:
    """The rows ``sql`` selects from ``<project>/sciagent-runs/journal.sqlite``; none before it exists."""
    path = project / "sciagent-runs" / "journal.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path) as connection:
            return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []
