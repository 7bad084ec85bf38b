"""Every credential this process hands out, so that nothing it writes holds one.

A key or token is registered in the one place it is resolved (``llm.auth`` for model keys and
Globus tokens, the MCP client for ``[mcp.NAME]`` bearer tokens, ``mcp serve`` for its own token,
``llm serve`` for the key it starts a server with), and everything that writes consults this one
registry: the journal, the reports, the log formatter the CLI installs and the crash log. One
process-wide set, in memory only, because a credential resolved by one layer is written by another
(a model echoes its key, a tool result quotes a token) and no call chain carries it between them.
"""

from __future__ import annotations

import logging
import threading

REDACTED = "[redacted]"

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> str | None:
    """Never write ``value`` (a key, a token) again: ``scrub`` replaces it with ``[redacted]``.

    Returns ``value``, so a credential can be registered where it is read:
    ``key = register_secret(os.environ.get(name))``. Empty and blank values are ignored.
    """
    if value and value.strip():
        with _lock:
            _registered.add(value)
    return value


def registered() -> frozenset[str]:
    """Every credential registered so far in this process."""
    with _lock:
        return frozenset(_registered)


def scrub(text: str) -> str:
    """``text`` with every registered credential replaced by ``[redacted]`` (longest first)."""
    for value in sorted(registered(), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """A log formatter whose lines (message, arguments and traceback alike) are scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
