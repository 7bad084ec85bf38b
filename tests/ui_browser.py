"""Parts of the browser tests: a real ``sciagent ui`` process, Debian's chromium under Playwright, artifacts.

The browser is the distribution's ``chromium`` started by path (``playwright install`` downloads
browsers, which cannot be done here); the server is the real command, so the gate, the routes, the
feed and the page are what a user gets. Screenshots go to ``$SCIAGENT_TEST_ARTIFACTS`` or
``tests/artifacts/ui/`` and their paths are printed.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = shutil.which("chromium")
_URL = re.compile(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)")


def artifact_dir() -> Path:
    """Where screenshots and the versions file go (created)."""
    configured = os.environ.get("SCIAGENT_TEST_ARTIFACTS")
    directory = Path(configured) / "ui" if configured else Path(__file__).parent / "artifacts" / "ui"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def record_versions(browser_version: str) -> Path:
    """Write which chromium and Playwright took the screenshots beside them."""
    path = artifact_dir() / "versions.txt"
    path.write_text(f"chromium {browser_version} ({CHROMIUM})\nplaywright {version('playwright')}\n")
    return path


def screenshot(page, name: str) -> Path:
    """A full-page screenshot named ``name``.png in the artifact directory; its path is printed."""
    path = artifact_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@dataclass(frozen=True)
class UiServer:
    """A running ``sciagent ui``: ``url`` is the printed one (with ``?token=``), ``base`` has no path."""

    url: str
    process: subprocess.Popen[str]

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def token(self) -> str:
        return self.url.split("?token=", 1)[1]


@contextmanager
def running_ui(workspace: Path, timeout_s: float = 60) -> Iterator[UiServer]:
    """``sciagent ui --workspace WORKSPACE --port 0`` for the block; a thread drains its output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sciagent", "ui", "--workspace", str(workspace), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process, lines), daemon=True).start()
    seen: list[str] = []
    try:
        while (found := _URL.search("".join(seen))) is None:
            try:
                line = lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no URL from sciagent ui in {timeout_s} s: {''.join(seen)}") from None
            assert line is not None, f"sciagent ui ended: {''.join(seen)}"
            seen.append(line)
        yield UiServer(found.group(1), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _drain(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Keep reading the server's output (a full pipe would stall it); None once it ends."""
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def start_ask(cwd: Path, question: str, *args: str) -> subprocess.Popen[str]:
    """A real ``sciagent ask`` session with the scripted model, in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "sciagent", "ask", question, "--llm", "scripted", "--json", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
