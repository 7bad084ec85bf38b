"""The speed book and the probe folded into the runs: a study probes only where it can change the plan.

The book's own rules are tested on the real ``SpeedBook`` (a workspace file); the workflow's through its
real caller: ``sciagent run`` as a process, a scripted OpenAI-protocol model (tests/openai_server.py),
the local executor and OpenMM. A planted book is an attack: each is shown stopped, with its control
(the same file, one value in bounds, is used), so removing the validation fails the test.
"""

from __future__ import annotations

import json
import os
import pty
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from journal_sql import journal_rows
from openai_server import OpenAIServer, Reply, text_reply
from sciagent.science.spec import MDSpec
from sciagent.workflows.study.speeds import Measurement, SpeedBook, step_cost_system, this_machine
from scripted_plans import villin_plan

SUMMARY = {"summary": "At 300 K the backbone held; the hotter run is compared in the findings."}
EXPLICIT_PLAN = villin_plan(solvent="explicit", timestep_fs=2, hydrogen_mass_repartitioning=False)
MACHINE = this_machine(workers=2)
SYSTEM = step_cost_system(MDSpec(structure="villin", timestep_fs=4.0, hydrogen_mass_amu=3.0))


def _measurement(steps_per_s: float, task: str = "T300-r1/run1/attempt1") -> Measurement:
    when = datetime(2026, 12, 1, tzinfo=timezone.utc)
    run_id = "20261201-120000-ab12"
    return Measurement(steps_per_s=steps_per_s, source="run", run_id=run_id, task=task, when=when)


def _book(path: Path) -> tuple[SpeedBook, list[str]]:
    warnings: list[str] = []
    return SpeedBook(path, warnings.append), warnings


def _plant(path: Path, steps_per_s: object) -> None:
    """Rewrite every measurement's speed in a genuine book file, as someone shipping a project could."""
    raw = json.loads(path.read_text())
    for entry in raw["entries"].values():
        for measurement in entry["measurements"]:
            measurement["steps_per_s"] = steps_per_s
    path.write_text(json.dumps(raw))


# --- the book ---------------------------------------------------------------------------------------
def test_a_speed_is_found_for_the_same_system_and_machine_whatever_the_timestep(tmp_path: Path) -> None:
    book, warnings = _book(tmp_path / "speeds.json")
    assert book.lookup(SYSTEM, MACHINE) is None  # no file: an empty book, no warning
    for speed, task in ((90.0, "T300-r1/run1/attempt1"), (120.0, "T400-r1/run1/attempt1"), (60.0, "x")):
        assert book.record(SYSTEM, MACHINE, _measurement(speed, task))
    assert not book.record(SYSTEM, MACHINE, _measurement(1.0, "x"))  # one task counts once
    reread, _ = _book(tmp_path / "speeds.json")
    two_fs = step_cost_system(MDSpec(structure="villin", timestep_fs=2.0))  # a step costs the same
    found = reread.lookup(two_fs, MACHINE)
    assert found is not None and found.steps_per_s == 90.0  # the median of 60, 90 and 120
    explicit = step_cost_system(MDSpec(structure="villin", solvent="explicit"))
    assert reread.lookup(explicit, MACHINE) is None  # another system
    assert reread.lookup(SYSTEM, this_machine(workers=4)) is None  # four runs at once contend more
    assert warnings == []


@pytest.mark.parametrize(
    "planted",
    [1e12, float("nan"), float("inf"), -5.0, 0.0, "fast"],
    ids=["absurdly-fast", "nan", "infinite", "negative", "zero", "not-a-number"],
)
def test_a_planted_speed_is_ignored_with_one_warning(tmp_path: Path, planted: object) -> None:
    path = tmp_path / "speeds.json"
    genuine, _ = _book(path)
    genuine.record(SYSTEM, MACHINE, _measurement(80.0))
    _plant(path, planted)
    book, warnings = _book(path)
    assert book.lookup(SYSTEM, MACHINE) is None and book.lookup(SYSTEM, MACHINE) is None
    assert len(warnings) == 1 and "speeds.json ignored (entries." in warnings[0]
    book.record(SYSTEM, MACHINE, _measurement(70.0))  # the next record replaces the planted file
    found = _book(path)[0].lookup(SYSTEM, MACHINE)
    assert found is not None and found.steps_per_s == 70.0


def test_control_a_planted_speed_in_bounds_is_used(tmp_path: Path) -> None:
    """The control of the test above: the same file, the same key, a value in bounds: it is used."""
    path = tmp_path / "speeds.json"
    _book(path)[0].record(SYSTEM, MACHINE, _measurement(80.0))
    _plant(path, 4321.0)
    book, warnings = _book(path)
    found = book.lookup(SYSTEM, MACHINE)
    assert found is not None and found.steps_per_s == 4321.0 and warnings == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b'{"version": 2, "entries": {}}', b"[]", b" " * ((1 << 20) + 1)],
    ids=["not-json", "not-utf8", "foreign-version", "foreign-shape", "oversized"],
)
def test_a_corrupt_or_foreign_book_is_ignored_with_one_warning(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "speeds.json"
    path.write_bytes(content)
    book, warnings = _book(path)
    assert book.lookup(SYSTEM, MACHINE) is None and len(warnings) == 1
    assert book.record(SYSTEM, MACHINE, _measurement(80.0)) and warnings[1:] == []


def test_a_book_that_is_a_link_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    """A link is not followed (to a book of another machine, or to a file the person cannot see) and a
    FIFO never blocks the study; the control reads the link's target directly: it is a valid book."""
    elsewhere = tmp_path / "elsewhere.json"
    _book(elsewhere)[0].record(SYSTEM, MACHINE, _measurement(80.0))
    assert _book(elsewhere)[0].lookup(SYSTEM, MACHINE) is not None  # control: the target itself is valid
    link = tmp_path / "linked" / "speeds.json"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    book, warnings = _book(link)
    assert book.lookup(SYSTEM, MACHINE) is None
    assert warnings == [f"speed book {link} ignored (a symbolic link); studies will record anew"]
    fifo = tmp_path / "fifo" / "speeds.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    book, warnings = _book(fifo)
    assert book.lookup(SYSTEM, MACHINE) is None and "not a regular file" in warnings[0]


# --- through sciagent run ---------------------------------------------------------------------------
def _workspace(tmp_path: Path, base_url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nkind = "openai"\nbase_url = "{base_url}"\nmodel = "scripted-model"\n'
        "max_retries = 0\ntimeout_s = 30\n[study]\nextensions = 0\n"
    )
    return tmp_path


def _studies(plan: dict, count: int) -> list[Reply]:
    """The model's answers for ``count`` studies, one after another: the plan, then the interpretation."""
    return [text_reply(json.dumps(answer)) for _ in range(count) for answer in (plan, SUMMARY)]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sciagent", "run", "--llm", "scripted", *args]


def _declined(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Plan and fit for real (a new run, or ``command``), then decline the batch at the terminal."""
    command = command or tuple(_command("--budget", "150s"))
    controller, terminal = pty.openpty()
    os.write(controller, b"n\n")
    try:
        return subprocess.run([*command, "--approve", "--json"], cwd=cwd, stdin=terminal, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)


def _probing(cwd: Path) -> str | None:
    """The run whose probe step is running, if one is."""
    rows = journal_rows(cwd, "SELECT run_id FROM steps WHERE kind = 'probe' AND status = 'running'")
    return rows[0][0] if rows else None


def _until(ready: Callable[[], str | None], process: subprocess.Popen[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        assert process.poll() is None, "the study ended first"
        time.sleep(0.1)
    raise AssertionError(f"not ready within {timeout_s} s")


def _steps(cwd: Path, run_id: str) -> list[tuple[str, str, str, str]]:
    sql = f"SELECT kind, status, summary, finished_at FROM steps WHERE run_id = '{run_id}' ORDER BY id"
    return journal_rows(cwd, sql)


def _events(cwd: Path, run_id: str, level: str) -> list[str]:
    sql = f"SELECT message FROM events WHERE run_id = '{run_id}' AND level = '{level}' ORDER BY id"
    return [row[0] for row in journal_rows(cwd, sql)]


def _book_file(cwd: Path) -> dict:
    return json.loads((cwd / "sciagent-runs" / "speeds.json").read_text())


def _measurements(cwd: Path) -> list[dict]:
    return [m for entry in _book_file(cwd)["entries"].values() for m in entry["measurements"]]


@pytest.mark.slow
@pytest.mark.whole_machine
def test_the_default_plan_runs_without_a_probe_and_the_next_study_takes_its_speed(tmp_path: Path) -> None:
    """The cheapest plan (implicit, 4 fs, HMR) with an empty book: no probe, the fit is provisional, and
    the simulations are the first thing after it; the runs' own speeds go into the book, and the next
    study of the same system here is fitted at that speed, the journal naming the run it came from."""
    with OpenAIServer() as server:
        server.script(*_studies(villin_plan(), 2))
        cwd = _workspace(tmp_path, server.base_url)
        first = subprocess.run(_command("--budget", "60s", "--json"), cwd=cwd, capture_output=True, text=True,
                               timeout=300)  # fmt: skip
        assert first.returncode == 0, first.stderr
        run_id = json.loads(first.stdout)["run_id"]
        second = _declined(cwd)
    steps = _steps(cwd, run_id)
    assert [kind for kind, *_ in steps] == ["plan", "fit", "simulate", "report"]  # no probe step
    fit = steps[1]
    assert fit[1] == "completed" and "no measured speed yet: a provisional fit" in fit[2]
    assert not (cwd / "sciagent-runs" / run_id / "probes").exists()
    started = journal_rows(cwd, f"SELECT MIN(started_at) FROM tasks WHERE run_id = '{run_id}'")[0][0]
    assert started is not None and started >= fit[3]  # the first run starts after the fit, nothing between
    recorded = _measurements(cwd)
    assert {(m["source"], m["run_id"]) for m in recorded} == {("run", run_id)}
    assert sorted(m["task"] for m in recorded) == ["T300-r1/run1/attempt1", "T400-r1/run1/attempt1"]
    assert second.returncode == 1, second.stderr  # declined: not run
    (later,) = [row[0] for row in journal_rows(cwd, f"SELECT id FROM runs WHERE id != '{run_id}'")]
    later_steps = _steps(cwd, later)
    assert [kind for kind, *_ in later_steps] == ["plan", "fit", "simulate", "report"]
    named = [f"steps/s per worker (speed book: T{t}-r1/run1/attempt1 of run {run_id} at " for t in (300, 400)]
    assert any(text in later_steps[1][2] for text in named), later_steps[1][2]


@pytest.mark.slow
@pytest.mark.whole_machine
def test_an_explicit_plan_probes_once_and_the_next_study_takes_the_book(tmp_path: Path) -> None:
    """Explicit solvent at 2 fs has cheaper physics to choose: with an empty book the implicit system is
    probed (and the plan made implicit at 4 fs). The first study is killed inside its probe and resumed:
    the killed round is not reused, a fresh one measures, and its speed goes into the book. The same
    plan in the next study is fitted from the book, with no probe and the journal naming the probe."""
    with OpenAIServer() as server:
        server.script(*_studies(EXPLICIT_PLAN, 2))
        cwd = _workspace(tmp_path, server.base_url)
        process = subprocess.Popen(_command("--budget", "150s"), cwd=cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            one = _until(lambda: _probing(cwd), process)
            time.sleep(random.uniform(0.0, 2.0))
        finally:
            process.kill()
            process.wait(timeout=30)
        first = _declined(cwd, sys.executable, "-m", "sciagent", "resume", one)
        second = _declined(cwd)
    assert first.returncode == 1 and second.returncode == 1, (first.stderr, second.stderr)
    (two,) = [row[0] for row in journal_rows(cwd, f"SELECT id FROM runs WHERE id != '{one}'")]
    assert [kind for kind, status, *_ in _steps(cwd, one)] == [
        "plan", "fit", "probe", "fit", "probe", "simulate", "report"
    ]  # fmt: skip
    state = json.loads((cwd / "sciagent-runs" / one / "state.json").read_text())
    (probe,) = state["probes"]
    assert state["probe_rounds"] == 2 and probe["round"] == 2 and probe["source"] == "probe"
    (measurement,) = _measurements(cwd)
    assert (measurement["source"], measurement["run_id"]) == ("probe", one)
    assert measurement["task"] == "probe round 2"
    steps = _steps(cwd, two)
    assert [kind for kind, *_ in steps] == ["plan", "fit", "simulate", "report"]  # no probe
    assert f"(speed book: probe round 2 of run {one} at " in steps[1][2]
    assert any("speed from the speed book" in e and one in e for e in _events(cwd, two, "info"))
    state = json.loads((cwd / "sciagent-runs" / two / "state.json").read_text())
    assert state["probe_rounds"] == 0 and [p["source"] for p in state["probes"]] == ["book"]
    assert state["fitted"]["solvent"] == "implicit" and state["fitted"]["timestep_fs"] == 4


@pytest.mark.slow
@pytest.mark.whole_machine
def test_a_planted_speed_book_is_ignored_with_a_warning_and_its_control_is_used(tmp_path: Path) -> None:
    """A genuine book (an explicit plan's probe of the implicit system, which the default plan shares)
    is edited as a shipped project could: 1e12 steps/s. The default study warns once, ignores the book
    and fits provisionally. The control: the same file with a speed in bounds (42 steps/s) is taken as
    is, so only the validation stopped the planted value."""
    with OpenAIServer() as server:
        server.script(*_studies(EXPLICIT_PLAN, 1), *_studies(villin_plan(), 2))
        cwd = _workspace(tmp_path, server.base_url)
        genuine = _declined(cwd)
        book = cwd / "sciagent-runs" / "speeds.json"
        _plant(book, 1e12)
        attacked = _declined(cwd)
        _plant(book, 42.0)
        control = _declined(cwd)
    assert (genuine.returncode, attacked.returncode, control.returncode) == (1, 1, 1), attacked.stderr
    _, attack, control_run = (row[0] for row in journal_rows(cwd, "SELECT id FROM runs ORDER BY created_at"))
    (warning,) = [e for e in _events(cwd, attack, "warning") if "speed book" in e]  # one, not one a look-up
    assert warning.startswith(f"speed book {book} ignored (entries.") and "steps_per_s" in warning
    steps = _steps(cwd, attack)
    assert [kind for kind, *_ in steps] == ["plan", "fit", "simulate", "report"]
    assert steps[1][2].startswith("no measured speed yet: a provisional fit")
    assert [e for e in _events(cwd, control_run, "warning") if "speed book" in e] == []
    steps = _steps(cwd, control_run)
    assert [kind for kind, *_ in steps] == ["plan", "fit", "simulate", "report"]
    assert steps[1][2].startswith("42 steps/s per worker (speed book: probe round 1 of run ")
