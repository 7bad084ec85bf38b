"""Production until the deadline (issue 24): run_md on the real villin headpiece, implicit solvent, 4 fs HMR.

``MDSpec.production_deadline_unix`` ends production, completed, at the first report step at or after it,
with an exact checkpoint there; ``production_steps`` is the maximum. A deadline that has already passed
when production starts still gives one report interval of production (one frame for the analysis), which
also makes the deadline stops here exact without depending on this machine's speed. A stop request still
wins (stopped, never completed), and a stopped or deadline-ended run resumes with no step computed twice.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from sciagent.science.md import MDResult, run_md
from sciagent.science.outputs import dcd_frame_count
from sciagent.science.reporters import MDProgress
from sciagent.science.segments import read_segments
from sciagent.science.spec import MDSpec
from sciagent.workflows.jobs.allocation import segments as allocation_segments

EQUILIBRATION, EVERY, MAXIMUM = 100, 50, 400
FIELDS = {
    "structure": "villin",
    "timestep_fs": 4.0,
    "hydrogen_mass_amu": 3.0,
    "platform": "CPU",
    "cpu_threads": 1,
    "minimize_max_iterations": 200,
    "equilibration_steps": EQUILIBRATION,
    "production_steps": MAXIMUM - EQUILIBRATION,
    "report_interval": EVERY,
    "checkpoint_interval": 100,
}
FAR_FUTURE_S = 3600.0


def _spec(**changes: object) -> MDSpec:
    return MDSpec(**{**FIELDS, **changes})


def _past() -> float:
    """A deadline that has already passed when production starts."""
    return time.time() - 1.0


def _csv_steps(workdir: Path) -> list[int]:
    with open(workdir / "state.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def _checkpoint_step(workdir: Path) -> int:
    return json.loads((workdir / "checkpoint.json").read_text())["step"]


def _assert_consistent_at(workdir: Path, result: MDResult, step: int) -> None:
    """Checkpoint, state CSV and trajectory all end at ``step``, a production report step."""
    assert result.steps_completed == step
    assert (step - EQUILIBRATION) % EVERY == 0
    assert _checkpoint_step(workdir) == step == _csv_steps(workdir)[-1]
    assert dcd_frame_count(workdir / "trajectory.dcd") == (step - EQUILIBRATION) // EVERY


def _assert_rate_from_steps_run(result: MDResult, steps_run: int) -> None:
    """ns/day counts the production steps this call computed, over this call's production seconds."""
    seconds = result.timings_s["production"]
    assert seconds > 0 and steps_run > 0
    expected = steps_run * result.spec.timestep_fs * 1e-6 / seconds * 86400
    assert result.ns_per_day == pytest.approx(expected)


def _assert_contiguous(workdir: Path, expected: list[tuple[int, int]]) -> None:
    """The ledger's segments chain from 0 with no gap or overlap; state rows are each written once."""
    segments = read_segments(workdir)
    assert [(s["from_step"], s["to_step"]) for s in segments] == expected
    for before, after in itertools.pairwise(segments):
        assert after["from_step"] == before["to_step"]
    steps = _csv_steps(workdir)
    assert steps == sorted(set(steps)) == list(range(EVERY, expected[-1][1] + 1, EVERY))


def test_a_deadline_already_passed_ends_production_at_its_first_report_step(workdir: Path) -> None:
    result = run_md(_spec(production_deadline_unix=_past()), workdir)

    assert result.ok, result.message
    assert (result.status, result.ended_by, result.failure_class) == ("completed", "deadline", None)
    assert result.production_steps_completed == EVERY  # equilibration whole, then one report interval
    _assert_consistent_at(workdir, result, EQUILIBRATION + EVERY)
    assert [step for step in _csv_steps(workdir) if step <= EQUILIBRATION] == [50, 100]
    assert (workdir / "final.pdb").exists()
    assert "production ended at its deadline, before its maximum of 400 steps" in result.message
    assert set(result.timings_s) == {"setup", "equilibration", "production"}
    assert all(seconds > 0 for seconds in result.timings_s.values())
    assert sum(result.timings_s.values()) <= result.wall_time_s
    _assert_rate_from_steps_run(result, EVERY)  # not the 300 the maximum asked for
    assert json.loads((workdir / "result.json").read_text())["ended_by"] == "deadline"
    (line,) = read_segments(workdir)
    assert line["timings_s"] == {phase: round(s, 3) for phase, s in result.timings_s.items()}


def test_control_the_same_spec_without_a_deadline_runs_to_its_maximum(workdir: Path) -> None:
    result = run_md(_spec(), workdir)

    assert result.ok, result.message
    assert result.ended_by == "max"
    _assert_consistent_at(workdir, result, MAXIMUM)
    assert "deadline" not in result.message
    _assert_rate_from_steps_run(result, MAXIMUM - EQUILIBRATION)


def test_a_deadline_during_production_stops_at_a_report_step_at_or_after_it(workdir: Path) -> None:
    maximum = 100_000  # minutes of simulation here: the deadline comes first
    spec = _spec(production_steps=maximum, production_deadline_unix=_past())
    assert run_md(spec, workdir).steps_completed == 150  # set up once; a resume starts in seconds
    deadline = time.time() + 2.0
    result = run_md(spec.model_copy(update={"production_deadline_unix": deadline}), workdir)

    assert time.time() >= deadline  # never before it
    assert result.ok, result.message
    assert result.ended_by == "deadline"
    assert 150 < result.steps_completed < EQUILIBRATION + maximum
    _assert_consistent_at(workdir, result, result.steps_completed)
    _assert_rate_from_steps_run(result, result.steps_completed - 150)
    _assert_contiguous(workdir, [(0, 150), (150, result.steps_completed)])


def test_the_maximum_ends_production_before_a_later_deadline(workdir: Path) -> None:
    result = run_md(_spec(production_deadline_unix=time.time() + FAR_FUTURE_S), workdir)

    assert result.ok, result.message
    assert result.ended_by == "max"
    _assert_consistent_at(workdir, result, MAXIMUM)
    assert "deadline" not in result.message


def test_a_deadline_stop_resumes_under_a_later_deadline_to_the_maximum_with_no_step_twice(
    tmp_path: Path, workdir: Path
) -> None:
    first = run_md(_spec(production_deadline_unix=_past()), workdir)
    assert (first.ended_by, first.steps_completed) == ("deadline", 150)

    second = run_md(_spec(production_deadline_unix=_past()), workdir)  # a new deadline, passed again
    assert second.ok and second.ended_by == "deadline"
    assert (second.resumed_from, second.resumed_from_step) == ("checkpoint", 150)
    _assert_consistent_at(workdir, second, 200)
    assert second.message.startswith("completed 200 steps") and ", 50 of them in this call" in second.message

    last = run_md(_spec(production_deadline_unix=time.time() + FAR_FUTURE_S), workdir)
    assert last.ok and last.ended_by == "max"
    assert (last.resumed_from, last.resumed_from_step) == ("checkpoint", 200)
    _assert_consistent_at(workdir, last, MAXIMUM)
    assert set(last.timings_s) == {"setup", "production"}  # a resume loads; equilibration was done
    _assert_rate_from_steps_run(last, MAXIMUM - 200)

    _assert_contiguous(workdir, [(0, 150), (150, 200), (200, MAXIMUM)])
    ledger = read_segments(workdir)
    assert all(set(line["timings_s"]) >= {"setup", "production"} for line in ledger)
    # The batch-job allocation table still reads the ledger, new key and all.
    assert [(s.from_step, s.to_step) for s in allocation_segments(tmp_path)] == [
        (0, 150),
        (150, 200),
        (200, MAXIMUM),
    ]


def test_a_stop_request_wins_over_the_deadline_and_the_stopped_run_resumes_under_one(
    tmp_path: Path, workdir: Path
) -> None:
    stop_file = tmp_path / "stop"

    def stop_at_first_production_report(update: MDProgress) -> None:
        if update.step > EQUILIBRATION and not stop_file.exists():
            stop_file.write_text("the study was stopped")

    spec = _spec(production_deadline_unix=_past(), stop_file=str(stop_file))
    # Both fire at step 150: the stop file's guard and the passed deadline's (the control is the first test).
    stopped = run_md(spec, workdir, progress=stop_at_first_production_report)
    assert (stopped.status, stopped.failure_class, stopped.ended_by) == ("failed", "stopped", None)
    assert "the study was stopped" in stopped.message
    _assert_consistent_at(workdir, stopped, 150)
    assert stopped.ns_per_day is None and stopped.timings_s["production"] > 0

    stop_file.unlink()
    resumed = run_md(spec.model_copy(update={"production_deadline_unix": _past()}), workdir)
    assert resumed.ok and resumed.ended_by == "deadline"
    assert resumed.resumed_from_step == 150
    _assert_consistent_at(workdir, resumed, 200)
    _assert_contiguous(workdir, [(0, 150), (150, 200)])


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.0, -5.0])
def test_a_production_deadline_must_be_a_finite_positive_time(value: float) -> None:
    with pytest.raises(ValidationError, match="production_deadline_unix"):
        _spec(production_deadline_unix=value)


def test_control_a_real_deadline_is_accepted_and_keeps_the_restart_key() -> None:
    assert _spec(production_deadline_unix=time.time()).restart_key() == _spec().restart_key()
