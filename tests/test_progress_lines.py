"""What ``ask``, ``chem energy`` and ``simulate --site`` say on stderr while they work (real processes).

Each test reads stderr as the process writes it and notes when each line came: a progress line must
come while the work runs, before the answer reaches stdout, and stdout must hold only the answer. The
model is the scripted OpenAI-protocol server (tests/openai_server.py); the tools, OpenMM and tblite
are the real ones.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from journal_sql import journal_rows
from openai_server import OpenAIServer, slow_reply, text_reply, tool_call_reply
from sciagent.progress import StateFile
from sciagent.science.spec import MDSpec

pytestmark = pytest.mark.timeout(120)
SCIAGENT = [sys.executable, "-m", "sciagent"]
UI_LINE = re.compile(r"watch in a browser: sciagent ui --workspace (\S+) \(run (\S+)\)")
DODECANE = "CCCCCCCCCCCC"  # about 5 s of GFN2-xTB optimisation and frequencies on one core
PLAIN = re.compile(r"^\d\d:\d\d:\d\d ")  # a plain line's timestamp


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "SCIAGENT_CHEM_CACHE": str(tmp_path / "cache"),
        "SCIAGENT_PUBCHEM_URL": "http://127.0.0.1:9/rest/pug",  # closed: offline
        "OMP_NUM_THREADS": "1",
    }


@dataclass
class Watched:
    """A finished process: its stdout, and each stderr line with whether stdout had begun by then."""

    returncode: int
    stdout: str
    lines: list[tuple[str, bool]] = field(default_factory=list)  # (line, before any stdout)

    @property
    def stderr(self) -> str:
        return "\n".join(line for line, _ in self.lines)

    def matches(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [found for line, _ in self.lines if (found := pattern.search(line))]

    def early(self, pattern: str) -> list[str]:
        """The stderr lines matching ``pattern`` that came before the answer reached stdout."""
        return [line for line, before in self.lines if before and re.search(pattern, line)]


def _watch(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Watched:
    """Run sciagent with stdout and stderr on pipes, noting when stderr's lines arrive."""
    process = subprocess.Popen(
        [*SCIAGENT, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    answer_began = threading.Event()
    chunks: list[str] = []

    def read_stdout() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read(1):
            answer_began.set()
            chunks.append(chunk + process.stdout.read())

    reader = threading.Thread(target=read_stdout)
    reader.start()
    lines = [(line.rstrip("\n"), not answer_began.is_set()) for line in process.stderr]
    reader.join(timeout=90)
    return Watched(process.wait(timeout=90), "".join(chunks), lines)


def test_ask_tells_the_running_tool_and_the_simulation_before_the_answer(tmp_path: Path) -> None:
    run = {"structure": "villin", "length_ps": 8, "timestep_fs": 4, "solvent": "vacuum"}
    with OpenAIServer() as server:
        (tmp_path / "sciagent.toml").write_text(
            f'[llm.scripted]\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
        )
        server.script(
            tool_call_reply("simulate", run),
            tool_call_reply("wait_for_task", {"task_id": "sim-1", "timeout_s": 300}),
            text_reply("The simulation of villin finished."),
        )
        done = _watch(["ask", "Simulate villin in vacuum.", "--llm", "scripted", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout is still exactly the one JSON object
    assert done.stdout.strip().count("\n") == 0 and summary["status"] == "answered"
    (ui,) = done.matches(UI_LINE)  # once
    assert ui.group(2) == summary["session_id"]
    assert Path(ui.group(1)) == (tmp_path / "sciagent-runs").resolve()
    assert done.early(r"step 1 · tool simulate\(.*structure=villin.*\): ok \([\d.]+ s\)$")
    assert done.early(r"step 2 · tool wait_for_task\(task_id=sim-1, timeout_s=300\) running \d+ s")
    progress = done.early(r"simulation sim-1 \(300 K\): (equilibration|production) \d+%")
    assert progress, done.stderr
    assert all(PLAIN.match(line) for line, _ in done.lines if "·" in line or "simulation" in line)
    assert "\x1b[" not in done.stderr  # not a terminal: no live redraw, no colour codes
    # the board's holder journals the simulation's end: the web UI and `show` do not see it still running
    assert journal_rows(tmp_path, "SELECT key, status FROM tasks") == [("sim-1", "completed")]


def test_chem_energy_tells_its_step_while_it_runs(tmp_path: Path) -> None:
    done = _watch(["chem", "energy", DODECANE, "--optimize", "--vibrations", "--json"], tmp_path,
                  _env(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # unchanged: one JSON object
    assert result["converged"] is True
    (ui,) = done.matches(UI_LINE)
    assert ui.group(2) == result["run_id"]
    assert done.early(rf"^\d\d:\d\d:\d\d chem_energy {DODECANE} running \d+ s$"), done.stderr
    assert done.early(r"chem_energy: completed \([\d.]+ s\) · C12H26 GFN2-xTB")


def test_simulate_on_a_site_tells_the_simulation_s_progress(tmp_path: Path) -> None:
    args = ["simulate", "villin", "--steps", "2000", "--equilibration", "0", "--solvent", "vacuum"]
    done = _watch([*args, "--site", "local", "--json", "--out", str(tmp_path / "run")], tmp_path)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["result"]["status"] == "completed"
    lines = done.early(r"simulation villin on site local \(300 K\): production \d+%")
    assert lines, done.stderr
    assert re.search(r"100% · [\d.]+ steps/s$", lines[-1]) or any(
        re.search(r"\d+% · [\d.]+ steps/s · ETA \d+:\d\d$", line) for line in lines
    )
    assert not UI_LINE.search(done.stderr)  # not a journal run: nothing for `sciagent ui` to show


def test_on_a_terminal_the_status_is_drawn_live(tmp_path: Path) -> None:
    """stderr on a pseudo-terminal: rich's live status line (redrawn, with escape codes), no timestamps;
    stdout, a pipe, still gets only the JSON."""
    controller, terminal = pty.openpty()
    env = _env(tmp_path) | {"TERM": "xterm-256color", "COLUMNS": "160"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [*SCIAGENT, "chem", "energy", DODECANE, "--optimize", "--vibrations", "--json"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    drawn = b""
    began = time.monotonic()
    while time.monotonic() - began < 100:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert process.stdout is not None
    stdout = process.stdout.read()
    assert process.wait(timeout=60) == 0, drawn.decode(errors="replace")
    assert json.loads(stdout)["converged"] is True
    screen = drawn.decode(errors="replace")
    assert "watch in a browser: sciagent ui --workspace" in screen
    assert re.search(rf"chem_energy {DODECANE} running \d+ s", screen)
    assert "\x1b[" in screen  # drawn, and cleared as it is redrawn
    assert len(re.findall(f"chem_energy {DODECANE} running", screen)) >= 2  # redrawn as seconds pass
    assert not re.search(r"(?m)^\d\d:\d\d:\d\d ", screen)  # no plain lines


def _read_for(fd: int, seconds: float, until: bytes | None = None) -> bytes:
    """What the terminal shows within ``seconds`` (or until ``until`` appears)."""
    seen, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or until not in seen):
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def test_an_approval_prompt_pauses_the_live_status_until_it_is_answered(tmp_path: Path) -> None:
    """On a terminal the status line stops while the approval prompt waits for the user's line (a
    redrawn spinner would overwrite what they type), and comes back after."""
    with OpenAIServer() as server:
        (tmp_path / "sciagent.toml").write_text(
            f'[llm.scripted]\nbase_url = "{server.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
        )
        server.script(
            slow_reply(4, tool_call_reply("cancel_task", {"task_id": "sim-1"})),  # asks first
            slow_reply(4, text_reply("Nothing was cancelled.")),
        )
        controller, terminal = pty.openpty()
        env = os.environ | {"TERM": "xterm-256color", "COLUMNS": "160"}
        process = subprocess.Popen(
            [*SCIAGENT, "ask", "Cancel sim-1.", "--llm", "scripted"], cwd=tmp_path, env=env,
            stdin=terminal, stdout=subprocess.PIPE, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        before = _read_for(controller, 60, until=b"approve? [y/N] ")
        assert b"approve? [y/N] " in before, before.decode(errors="replace")
        assert re.search(rb"step 1 \xc2\xb7 asking the model \d+ s", before)  # drawn while the model thought
        during = _read_for(controller, 3)  # the prompt waits: nothing is redrawn over it
        assert during == b"", during
        os.write(controller, b"n\n")
        after = _read_for(controller, 60, until=b"asking the model")
        assert re.search(rb"step 2 \xc2\xb7 asking the model", after), after.decode(errors="replace")
        assert process.stdout is not None
        answer = process.stdout.read().decode()
        assert process.wait(timeout=60) == 0
        os.close(controller)
    assert answer.startswith("Nothing was cancelled.\n")


def test_a_fifo_named_state_csv_does_not_hang_the_progress_reader(tmp_path: Path) -> None:
    """Model code can write in a session's directory: a FIFO where a simulation's state.csv goes must
    not block the reader (and with it the command). Control: a plain open of the same FIFO blocks."""
    fifo = tmp_path / "runs" / "sim-1" / "state.csv"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    spec = MDSpec(structure="villin", production_steps=100, equilibration_steps=0, report_interval=10)
    began = time.monotonic()
    assert StateFile(fifo, spec, "simulation sim-1").read(since=0.0) is None
    assert time.monotonic() - began < 1.0
    opened = threading.Event()
    blocked = threading.Thread(target=lambda: (open(fifo).close(), opened.set()), daemon=True)
    blocked.start()
    assert not opened.wait(1.0)  # the plain open is still waiting for a writer
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer: lets the plain open finish
    assert opened.wait(5.0)
