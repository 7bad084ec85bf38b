"""The web UI's live streams (server-sent events), read through Starlette's test client.

Each test opens a stream, makes the journal change (here, from a thread, or from another process) and
reads frames until it has what it expects; leaving the ``with`` closes the stream, which cancels it
on the server. A stream that never delivers fails on the test's timeout instead of hanging.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sciagent.agent.journal import Journal
from sciagent.science.reporters import CSV_COLUMNS
from sciagent.ui.app import create_app

TOKEN = "t" * 43
pytestmark = pytest.mark.timeout(60)


@dataclass
class Frame:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)


def frames(lines: Iterator[str]) -> Iterator[Frame]:
    """The server-sent events of a stream's lines; comment lines (heartbeats) come as their own frames."""
    frame = Frame()
    for line in lines:
        if line.startswith(":"):
            yield Frame(event="comment", comments=[line])
        elif not line:
            if frame.data or frame.id:
                yield frame
            frame = Frame()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                frame.data += value
            elif name in ("event", "id"):
                setattr(frame, name, value)


def take(lines: Iterator[str], count: int, event: str = "row") -> list[Frame]:
    """The next ``count`` frames of ``event``."""
    found = []
    for frame in frames(lines):
        if frame.event == event:
            found.append(frame)
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} {event} frames")


def client_of(workspace: Path, **options: float) -> TestClient:
    app = create_app(workspace, token=TOKEN, **options)
    return TestClient(app, base_url="http://127.0.0.1", headers={"X-Sciagent-Token": TOKEN})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def later(delay_s: float, action: object) -> threading.Thread:
    """Run ``action`` in a thread after ``delay_s``: a write that happens while the stream is open."""
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), action()))  # type: ignore[operator]
    thread.start()
    return thread


def test_a_stream_resumed_from_last_event_id_gets_exactly_the_rows_after_it_in_order(workspace: Path) -> None:
    with Journal.in_workspace(workspace) as journal:
        run = journal.create_run("goal", {"kind": "session"})
        other = journal.create_run("another run", {})
        for n in range(5):
            journal.add_event(run, "info", f"before {n}")
        resume_from = journal.latest_change()
        for n in range(5):
            journal.add_event(run, "info", f"after {n}")
            journal.add_event(other, "info", "not this run's")
        expected = [c.seq for c in journal.changes_after(resume_from, run)]
    with client_of(workspace) as client:
        headers = {"Last-Event-ID": str(resume_from)}
        with client.stream("GET", f"/api/runs/{run}/stream?after=0", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            got = take(response.iter_lines(), 5)
        assert [int(f.id or 0) for f in got] == expected  # the header wins over ?after=
        assert [f'"message":"after {n}"' in f.data for n, f in enumerate(got)] == [True] * 5
        with client.stream("GET", f"/api/runs/{run}/stream?after={resume_from - 2}") as response:
            replayed = take(response.iter_lines(), 2)  # no header: ?after= says where to start
        assert ['"message":"before 3"' in replayed[0].data, '"message":"before 4"' in replayed[1].data] == [
            True
        ] * 2
        refused = client.get(f"/api/runs/{run}/stream", headers={"Last-Event-ID": "x1"})
        assert refused.status_code == 400 and "Last-Event-ID" in refused.json()["error"]


def test_a_new_row_and_an_update_in_place_reach_an_open_stream_within_a_second(workspace: Path) -> None:
    with Journal.in_workspace(workspace) as journal:
        run = journal.create_run("goal", {})
        task = journal.add_task(run, "T300", {}, "local")
        written: dict[str, float] = {}

        def write() -> None:
            written["at"] = time.perf_counter()
            journal.update_task(task, status="running", attempts=1)  # an update: no new row id

        with client_of(workspace) as client, client.stream("GET", f"/api/runs/{run}/stream") as response:
            writer = later(0.5, write)  # the stream starts "now", before the write
            [frame] = take(response.iter_lines(), 1)
            latency = time.perf_counter() - written["at"]
            writer.join()
    assert '"table":"task"' in frame.data and '"status":"running"' in frame.data
    assert '"attempts":1' in frame.data and '"key":"T300"' in frame.data
    assert latency < 1.0, f"the update took {latency:.2f} s to arrive"


def test_a_row_written_by_another_process_arrives(workspace: Path) -> None:
    with Journal.in_workspace(workspace) as journal:
        run = journal.create_run("goal", {})
    script = (
        "import sys; from pathlib import Path; from sciagent.agent.journal import Journal\n"
        "with Journal.in_workspace(Path(sys.argv[1])) as j:\n"
        "    j.add_event(sys.argv[2], 'warning', 'from afar')\n"
    )
    with client_of(workspace) as client, client.stream("GET", f"/api/runs/{run}/stream") as response:
        writer = later(
            0.3, lambda: subprocess.run([sys.executable, "-c", script, str(workspace), run], check=True)
        )
        [frame] = take(response.iter_lines(), 1)
        writer.join()
    assert '"message":"from afar"' in frame.data and '"level":"warning"' in frame.data


def test_an_idle_stream_sends_heartbeats(workspace: Path) -> None:
    with Journal.in_workspace(workspace) as journal:
        run = journal.create_run("goal", {})
    client = client_of(workspace, ping_s=0.2)  # 10 s in use; shortened to see two in a test
    with client, client.stream("GET", f"/api/runs/{run}/stream") as response:
        pings = take(response.iter_lines(), 2, event="comment")
    assert all(frame.comments[0].startswith(": ping") for frame in pings)


def test_the_runs_stream_sends_a_run_summary_on_each_change_of_a_run(workspace: Path) -> None:
    with Journal.in_workspace(workspace) as journal:
        journal.create_run("old run", {})
        with client_of(workspace) as client, client.stream("GET", "/api/stream") as response:
            lines = response.iter_lines()
            run = journal.create_run("new run", {"kind": "chem"})
            [created] = take(lines, 1, event="run")
            journal.set_run_status(run, "completed")
            [finished] = take(lines, 1, event="run")
    assert f'"id":"{run}"' in created.data and '"status":"running"' in created.data
    assert '"kind":"chem"' in created.data
    assert '"status":"completed"' in finished.data and int(finished.id or 0) > int(created.id or 0)


def test_a_growing_state_file_sends_a_telemetry_frame(workspace: Path) -> None:
    with Journal.in_workspace(workspace) as journal:
        run = journal.create_run("goal", {})
    state = workspace / run / "conditions" / "T300" / "run1" / "state.csv"
    state.parent.mkdir(parents=True)
    rows = [",".join(CSV_COLUMNS)] + [f"production,{n},{n * 0.002},-100,50,-50,300,10" for n in range(1, 4)]
    state.write_text("\n".join(rows) + "\n")

    def grow() -> None:
        with state.open("a") as handle:
            handle.write("production,4,0.008,-100,50,-50,300,10\n")

    with client_of(workspace) as client, client.stream("GET", f"/api/runs/{run}/stream") as response:
        writer = later(0.3, grow)
        [frame] = take(response.iter_lines(), 1, event="telemetry")
        writer.join()
    assert frame.id is None and frame.data.startswith('{"telemetry":')
