"""What ``ask``, ``chat``, ``chem energy`` and ``simulate --site`` are doing while they do it.

Progress is read from what the work records anyway: the journal's rows of a run (its steps and tool
calls, its sub-agents', its approval requests) and a simulation's ``state.csv``, so the terminal tells
the same story as ``sciagent ui``, which reads the same rows, and no workflow reports twice. A thread
polls them while the work runs.

On a terminal one live status line (rich) says what is running and for how long, and what finished is
printed above it; in a pipe or a batch log, plain timestamped lines on stderr, the status of each
running thing at most every ``PLAIN_EVERY_S``. stdout stays the command's answer, so scripts can pipe
it. Work that is over within ``GRACE_S`` prints nothing at all: a quick answer or a one-line error
stays just that.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from rich.status import Status

from sciagent.agent.approvals import Terminal
from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import StepRow, one_line
from sciagent.agent.session import SESSION_KIND, run_kind
from sciagent.console import err_console, format_eta
from sciagent.science.outputs import RunFiles
from sciagent.science.spec import MDSpec
from sciagent.science.state_rows import last_state_row
from sciagent.tools.approval import ApprovalRequest, Verdict

log = logging.getLogger(__name__)

GRACE_S = 2.0  # work over sooner than this prints nothing: no browser is needed for it
POLL_S = 1.0  # the status shows whole seconds
PLAIN_EVERY_S = 10.0  # a running thing's plain line at most this often, so long logs stay readable

Running = dict[str, str]  # what is running now, by a key that stays the same while it runs


class _Sink(Protocol):
    def lines(self, texts: list[str]) -> None: ...
    def status(self, running: Running) -> None: ...
    def hide(self) -> None: ...
    def close(self) -> None: ...


class _PlainSink:
    """Timestamped lines on stderr: what happened at once, what runs at most every ``PLAIN_EVERY_S``."""

    def __init__(self) -> None:
        self._printed: dict[str, float] = {}  # key of a running thing -> when its line was printed

    def lines(self, texts: list[str]) -> None:
        for text in texts:
            print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    def status(self, running: Running) -> None:
        now = time.monotonic()
        self._printed = {key: at for key, at in self._printed.items() if key in running}
        due = [key for key in running if now - self._printed.get(key, -PLAIN_EVERY_S) >= PLAIN_EVERY_S]
        self.lines([running[key] for key in due])
        self._printed.update(dict.fromkeys(due, now))

    def hide(self) -> None:
        """Plain lines leave nothing drawn."""

    def close(self) -> None:
        """Nothing is drawn to take away."""


class _LiveSink:
    """rich's live status line on the terminal; lines printed above it through the same console."""

    def __init__(self) -> None:
        self._status: Status | None = None

    def lines(self, texts: list[str]) -> None:
        for text in texts:
            err_console.print(text, highlight=False, markup=False, soft_wrap=True)

    def status(self, running: Running) -> None:
        text = "  |  ".join(running.values()) or "working"
        if self._status is None:
            self._status = Status(text, console=err_console)
            self._status.start()
        else:
            self._status.update(text)
            self._status.start()  # again after hide(): a no-op while it is shown

    def hide(self) -> None:
        if self._status is not None:
            self._status.stop()

    def close(self) -> None:
        self.hide()


class Watch:
    """A thread polling ``poll`` while the work runs; ``with`` it around one stretch of work (a turn).

    ``poll`` returns what happened since the last poll (lines) and what is running now. Nothing is shown
    before ``GRACE_S``; then ``announce`` (once per ``Watch``), the lines and the status.
    """

    def __init__(self) -> None:
        self._sink: _Sink = _LiveSink() if err_console.is_terminal else _PlainSink()
        self._lock = threading.Lock()
        self._paused = 0
        self._held: list[str] = []  # lines that came while paused, printed when the prompt is done
        self._announced = False
        self._shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what a kind of work says: overridden ----------------------------------------------------

    def begin(self) -> None:
        """Note where the work stands now, so that only what happens from here is told."""

    def poll(self) -> tuple[list[str], Running]:
        return [], {}

    def announce(self) -> str | None:
        return None

    def end(self) -> None:
        """Release what polling held (a journal connection)."""

    # --- the thread ------------------------------------------------------------------------------

    def __enter__(self) -> Watch:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sciagent-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        began = time.monotonic()
        self._shown = False
        try:
            self._safely(self.begin)
            early: list[str] = []  # what happened within the grace: told if the work goes on past it
            while not self._stop.wait(POLL_S):
                polled = self._safely(self.poll)
                if polled is None:
                    continue
                if self._shown or time.monotonic() - began >= GRACE_S:
                    self._show([*early, *polled[0]], polled[1])
                    early = []
                else:
                    early += polled[0]
            if self._shown:  # what finished as the work ended, said before the command's own output
                polled = self._safely(self.poll)
                self._show(polled[0] if polled else [], {})
        finally:
            with self._lock:
                self._sink.close()
            self._safely(self.end)

    def _safely(self, fn: Callable[[], Any]) -> Any:
        """Progress is a view: a journal busy or a file half-written skips a poll, never stops the work."""
        try:
            return fn()
        except Exception:  # any failure of a view is logged and skipped
            log.debug("progress poll failed", exc_info=True)
            return None

    def _show(self, lines: list[str], running: Running) -> None:
        with self._lock:
            if not self._announced:
                self._announced = True
                heading = self.announce()
                lines = [heading, *lines] if heading else lines
            self._shown = True
            if self._paused:
                self._held += lines
                return
            self._sink.lines(lines)
            if running:
                self._sink.status(running)
            else:
                self._sink.hide()

    # --- prompts ---------------------------------------------------------------------------------

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing drawn while a person is asked something at this terminal; held lines come after."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def pause(self) -> None:
        """Take the status away and hold new lines (a prompt is about to be shown)."""
        with self._lock:
            self._paused += 1
            self._sink.hide()

    def resume(self) -> None:
        """After the last pause: the held lines now, the status at the next poll."""
        with self._lock:
            self._paused = max(0, self._paused - 1)
            if not self._paused and self._held:
                self._sink.lines(self._held)
                self._held = []

    def asking(self, ask: Callable[[str], str] | None) -> Callable[[str], str] | None:
        """``ask`` (the agent's question to the user) with the status paused while it waits."""
        if ask is None:
            return None

        def paused_ask(question: str) -> str:
            with self.paused():
                return ask(question)

        return paused_ask

    def pausing(self, terminal: Terminal | None) -> Terminal | None:
        """An approval terminal whose prompt pauses the status until it is answered."""
        return None if terminal is None else _PausingTerminal(terminal, self)


@dataclass
class _PausingTerminal:
    """A ``Terminal`` that pauses its watch from ``show`` until a line is typed or it is withdrawn."""

    terminal: Terminal
    watch: Watch

    def show(self, request_id: str, request: ApprovalRequest) -> None:
        self.watch.pause()
        self.terminal.show(request_id, request)

    def poll(self, timeout_s: float) -> str | None:
        line = self.terminal.poll(timeout_s)
        if line is not None:
            self.watch.resume()
        return line

    def withdraw(self, verdict: Verdict) -> None:
        self.terminal.withdraw(verdict)
        self.watch.resume()


class RunProgress(Watch):
    """A journal run of ``workspace`` (a session and its sub-agents, a chem run): its steps, tool calls,
    approvals and simulations. ``follow`` names the run once it exists."""

    def __init__(self, workspace: Path) -> None:
        super().__init__()
        self.workspace = Path(workspace).resolve()
        self.run_id: str | None = None
        self._journal: Journal | None = None
        self._told: set[str] = set()  # steps finished, approvals asked or answered, already told
        self._simulations: dict[str, StateFile] = {}
        self._since = 0.0

    def follow(self, run_id: str) -> None:
        self.run_id = run_id

    def announce(self) -> str | None:
        if self.run_id is None:
            return None
        where = shlex.quote(str(self.workspace))
        return f"watch in a browser: sciagent ui --workspace {where} (run {self.run_id})"

    def begin(self) -> None:
        self._since = time.time()
        if self.run_id is not None:  # what was there before this stretch of work is not told again
            self._read()

    def poll(self) -> tuple[list[str], Running]:
        if self.run_id is None:  # not started yet (the session is still being opened)
            return [], {}
        return self._read()

    def end(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _read(self) -> tuple[list[str], Running]:
        assert self.run_id is not None
        if self._journal is None:
            self._journal = Journal.in_workspace(self.workspace)
        journal = self._journal
        lines: list[str] = []
        running: Running = {}
        root = journal.get_run(self.run_id)
        for run, label in [(root, ""), *self._sub_agents(journal, root.id)]:
            steps = journal.steps(run.id)
            for step in steps:
                self._step(step, label, lines, running)
            if run.status == "running" and not any(step.status == "running" for step in steps):
                thinking = _model_turn(steps)
                if thinking:
                    running[f"model {run.id}"] = f"{label}{thinking}"
        self._approvals(journal, root.id, lines, running)
        if run_kind(root.config) == SESSION_KIND:
            self._simulations_of(journal, root.id, lines, running)
        return lines, running

    def _sub_agents(self, journal: Journal, run_id: str) -> list[tuple[Any, str]]:
        found = []
        for child in journal.child_runs(run_id):
            name = (child.config.get("agent") or {}).get("name", child.id)
            found.append((child, f"sub-agent {name} · "))
            found += self._sub_agents(journal, child.id)
        return found

    def _step(self, step: StepRow, label: str, lines: list[str], running: Running) -> None:
        if step.kind == "message":
            return
        key = f"step {step.id}"
        if step.status == "running":
            running[key] = f"{label}{_step_name(step)} running {_elapsed(_age_s(step.started_at))}"
        elif key not in self._told:
            self._told.add(key)
            took = f" ({step.duration_s:.1f} s)" if step.duration_s is not None else ""
            if step.kind == "tool_call":  # its summary is "tool: ok" or "tool: failed · why"
                said = f"{_step_name(step)}: {step.summary.partition(': ')[2] or step.status}{took}"
            else:
                said = f"{step.kind}: {step.status}{took} · {step.summary}"
            lines.append(one_line(f"{label}{said}"))

    def _approvals(self, journal: Journal, run_id: str, lines: list[str], running: Running) -> None:
        events = journal.events(run_id)
        answered = {e.data.get("request") for e in events if e.data.get("kind") == "approval_answer"}
        for event in events:
            kind, request = event.data.get("kind"), str(event.data.get("request"))
            if kind == "approval_request" and request not in answered:
                running[f"approval {request}"] = (
                    f"waiting {_elapsed(_age_s(event.created_at))} for approval {request}: "
                    f"{event.data.get('summary', '')} (`sciagent approve {run_id}`, or in the browser)"
                )
            if kind in ("approval_request", "approval_answer") and f"{kind} {request}" not in self._told:
                self._told.add(f"{kind} {request}")
                lines.append(one_line(event.message))

    def _simulations_of(self, journal: Journal, run_id: str, lines: list[str], running: Running) -> None:
        for task in journal.tasks(run_id):
            known = self._simulations.get(task.key)
            if known is None:
                spec = MDSpec.model_validate((task.spec or {}).get("spec") or {})
                path = self.workspace / "sessions" / run_id / "runs" / task.key / "state.csv"
                known = self._simulations[task.key] = StateFile(path, spec, f"simulation {task.key}")
            said = known.read(self._since)
            if said is None:
                continue
            text, done = said
            if done:
                lines.append(text)
            else:
                running[f"simulation {task.key}"] = text


class SimulationProgress(Watch):
    """One simulation sent to a site (``simulate --site``): its ``state.csv`` where the site writes it
    here (a local or shared file system); elsewhere, how long it has been away."""

    def __init__(self, workdir: Path, spec: MDSpec, site: str) -> None:
        super().__init__()
        label = f"simulation {Path(spec.structure).stem} on site {site}"
        self._file = StateFile(RunFiles(Path(workdir)).state_csv, spec, label)
        self._began = time.monotonic()

    def begin(self) -> None:
        self._began = time.monotonic()

    def poll(self) -> tuple[list[str], Running]:
        said = self._file.read(since=0.0)
        if said is None:
            away = _elapsed(time.monotonic() - self._began)
            return [], {"sent": f"{self._file.label}: sent {away} ago, no state rows here yet"}
        text, done = said
        return ([text], {}) if done else ([], {"simulation": text})


@dataclass
class StateFile:
    """A simulation's ``state.csv``: its last row as progress (%, steps/s, time left).

    Read as ``science/state_rows.py`` reads it: no link followed, no FIFO opened, complete rows only.
    """

    path: Path
    spec: MDSpec
    label: str
    _done: bool = False

    def read(self, since: float) -> tuple[str, bool] | None:
        """The progress line and whether the run is through, or None: no rows yet, not written since
        ``since`` (an earlier turn's run), not a regular file, or its last row already told."""
        row = last_state_row(self.path, since)
        if row is None:
            return None
        step, total = int(float(row["step"])), self.spec.total_steps
        done = step >= total
        if done and self._done:
            return None
        self._done = done
        percent = 100.0 * step / total if total else 100.0
        text = f"{self.label} ({self.spec.temperature_k:g} K): {row.get('phase', '')} {percent:.0f}%"
        rate = _steps_per_s(row.get("speed_ns_day", ""), self.spec.timestep_fs)
        if rate:
            text += f" · {rate:.3g} steps/s"
            if not done:
                text += f" · ETA {format_eta((total - step) / rate)}"
        return text, done


def _steps_per_s(speed_ns_day: str, timestep_fs: float) -> float | None:
    try:
        speed = float(speed_ns_day)
    except ValueError:
        return None
    return speed * 1e6 / (86400 * timestep_fs) if speed > 0 and timestep_fs > 0 else None


def _step_name(step: StepRow) -> str:
    """``step 3 · tool simulate(structure=villin)`` for a tool call, ``chem_energy caffeine`` otherwise."""
    if step.kind != "tool_call":
        return f"{step.kind} {step.summary}".strip() if step.status == "running" else step.kind
    call, record = step.data.get("call") or {}, step.data.get("record") or {}
    arguments = record.get("arguments", call.get("raw")) or {}
    if isinstance(arguments, str):  # a native call's arguments, as the model sent them
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {}
    shown = ", ".join(f"{k}={v}" for k, v in arguments.items()) if isinstance(arguments, dict) else ""
    name = record.get("tool") or call.get("tool") or step.summary.split(":")[0]
    return one_line(f"step {step.data.get('step', record.get('step', '?'))} · tool {name}({shown})", 100)


def _model_turn(steps: list[StepRow]) -> str | None:
    """``step 4 · asking the model 3 s`` while the last message (the question, a tool's result, a
    message told) waits for the model's reply; the loop counts the step before it asks."""
    messages = [step for step in steps if step.kind == "message"]
    if not messages or messages[-1].data.get("message", {}).get("role") == "assistant":
        return None  # nothing asked yet, or the model has replied (its calls run, or it answered)
    last = messages[-1]
    return f"step {int(last.data.get('step', 0)) + 1} · asking the model {_elapsed(_age_s(last.started_at))}"


def _age_s(timestamp: str) -> float:
    return max(0.0, (datetime.now(timezone.utc) - datetime.fromisoformat(timestamp)).total_seconds())


def _elapsed(seconds: float) -> str:
    return f"{int(seconds)} s" if seconds < 60 else format_eta(seconds)
