"""The web UI's two costs, side by side in one run: how late a journal row reaches an open page, and how
long a run page with 10,000 events takes next to reading the same journal with ``sciagent show``.

1. Latency: a real ``sciagent ui`` serves a workspace; a real browser (Debian's chromium through
   Playwright) has a session's page open; this process adds journal events one at a time and times each
   until its text is on the page, and, beside it, until the same row arrives on a raw event stream
   (server-sent events read with httpx2: the server's share without the browser's).
2. A big run: one run with ``--events`` events and some steps. Timed alternately: ``sciagent show RUN``
   (a subprocess, as a user runs it), ``GET /api/runs/RUN`` (the page's snapshot) and the page in the
   browser until its timeline holds every row.

    python bench/ui_latency.py [--rows 30] [--events 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx
from playwright.sync_api import sync_playwright

from sciagent.agent.journal import Journal
from sciagent.agent.session import SESSION_KIND

SCIAGENT = str(Path(sys.executable).with_name("sciagent"))


def start_ui(workspace: Path) -> tuple[subprocess.Popen[str], str]:
    """A real ``sciagent ui`` on a free port; its URL (with the token) from what it prints."""
    process = subprocess.Popen(
        [SCIAGENT, "ui", "--workspace", str(workspace), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
        if found:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, found.group(0)
    raise SystemExit(f"sciagent ui printed no URL (exit {process.wait()})")


def session_run(journal: Journal, question: str) -> str:
    return journal.create_run(question, {"kind": SESSION_KIND})


def stream_latency(base: str, token: str, journal: Journal, run_id: str, rows: int) -> list[float]:
    """Seconds from ``add_event`` to the row's frame on a raw SSE stream, one row at a time."""
    latencies = []
    url = f"{base}/api/runs/{run_id}/stream"
    after = {"after": journal.latest_change()}
    with (
        httpx.Client(headers={"X-Sciagent-Token": token}, timeout=10) as client,
        client.stream("GET", url, params=after) as response,
    ):
        lines = response.iter_lines()
        for n in range(rows):
            marker = f"sse-marker-{n}"
            began = time.perf_counter()
            journal.add_event(run_id, "info", marker, {})
            for line in lines:
                if marker in line:
                    latencies.append(time.perf_counter() - began)
                    break
    return latencies


def page_latency(page, journal: Journal, run_id: str, rows: int) -> list[float]:
    """Seconds from ``add_event`` to the row's text on the open page (polled every animation frame)."""
    latencies = []
    for n in range(rows):
        marker = f"page-marker-{n}"
        began = time.perf_counter()
        journal.add_event(run_id, "info", marker, {})
        page.wait_for_function("m => document.body.innerText.includes(m)", arg=marker, polling="raf")
        latencies.append(time.perf_counter() - began)
    return latencies


def big_run(journal: Journal, events: int) -> str:
    run_id = session_run(journal, f"a run with {events} events")
    with journal.transaction():
        for n in range(events // 100):
            journal.record_step(run_id, "tool_call", f"step {n}", {"tool": "noop", "n": n})
        for n in range(events):
            journal.add_event(run_id, "info", f"event {n}", {"n": n})
    return run_id


def timed(action) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{name:<34} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30, help="journal rows timed for latency")
    parser.add_argument("--events", type=int, default=10_000, help="events in the big run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (make installs Debian's chromium as root)")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        workspace = Path(tmp)
        journal = Journal.in_workspace(workspace)
        live = session_run(journal, "latency")
        big = big_run(journal, args.events)
        process, url = start_ui(workspace)
        base, token = url.split("/?token=")
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.goto(f"{base}/#/runs/{live}")
            page.wait_for_selector("#live[data-state='live']")
            print(f"chromium {browser.version}; {os.cpu_count()} CPUs")
            print("1. journal row -> client, one row at a time")
            raw = stream_latency(base, token, journal, live, args.rows)
            print(summary("raw SSE stream (httpx2)", raw))
            print(summary("open page in chromium", page_latency(page, journal, live, args.rows)))

            steps = args.events // 100
            print(f"2. a run of {args.events} events and {steps} steps (median of {args.repeats})")
            show_s, api_s, page_s = [], [], []
            headers = {"X-Sciagent-Token": token}
            detail = f"{base}/api/runs/{big}"
            last = f"event {args.events - 1}"
            for _ in range(args.repeats):
                show_s.append(timed(lambda: subprocess.run(
                    [SCIAGENT, "show", big, "--workspace", str(workspace)], check=True, capture_output=True)))
                api_s.append(timed(lambda: httpx.get(detail, headers=headers).raise_for_status()))
                page.goto(f"{base}/#/")
                page_s.append(timed(lambda: (
                    page.goto(f"{base}/#/runs/{big}"),
                    page.wait_for_function("m => document.body.innerText.includes(m)", arg=last),
                )))  # fmt: skip
            show, api, shown = (statistics.median(s) for s in (show_s, api_s, page_s))
            print(f"{'sciagent show RUN (subprocess)':<34} {show:7.2f} s   1.00x")
            print(f"{'GET /api/runs/RUN':<34} {api:7.2f} s   {api / show:.2f}x")
            print(f"{'run page in chromium':<34} {shown:7.2f} s   {shown / show:.2f}x")
        finally:
            browser.close()
            process.terminate()
            process.wait(timeout=20)
            journal.close()


if __name__ == "__main__":
    main()
