"""The web UI's simulation telemetry, read from a real simulation's ``state.csv``.

One real OpenMM run of villin (implicit solvent, CPU, 4 fs with heavy hydrogens; 3 ps of equilibration
then 2 ps of production) made through ``run_md`` gives the file every test reads. A badge that must
turn is shown on a copy of that real file corrupted in one way (a value set to NaN, the temperature
shifted, the equilibration rows relabelled production, a row half written): each test says which, and
each keeps the untouched real file as the control that leaves the badge ok.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sciagent.science.md import run_md
from sciagent.science.spec import MDSpec
from sciagent.ui.telemetry import MAX_POINTS, STALE_MIN_S, state_files, telemetry_of

pytestmark = pytest.mark.timeout(300)
EQUILIBRATION, PRODUCTION, EVERY = 750, 500, 25


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, finished simulation's work directory (``runs/sim-1`` of a session's layout)."""
    workdir = tmp_path_factory.mktemp("run") / "runs" / "sim-1"
    spec = MDSpec(
        structure="villin", platform="CPU", minimize_max_iterations=200, timestep_fs=4.0,
        hydrogen_mass_amu=4.0, equilibration_steps=EQUILIBRATION, production_steps=PRODUCTION,
        report_interval=EVERY, checkpoint_interval=PRODUCTION,
    )  # fmt: skip
    result = run_md(spec, workdir)
    assert result.ok, result.message
    return workdir


def _copy(simulation: Path, tmp_path: Path, *, finished: bool = True) -> Path:
    """The real run copied into a new run directory at ``runs/sim-1``; without its result if unfinished."""
    workdir = tmp_path / "runs" / "sim-1"
    workdir.mkdir(parents=True)
    names = ["state.csv", "spec.json"] + (["result.json"] if finished else [])
    for name in names:
        shutil.copy2(simulation / name, workdir / name)  # the times too: the result stays newer
    return workdir


def _edit(path: Path, change) -> None:
    """Rewrite the data rows of a state file with ``change(cells) -> cells``; the mtime moves on."""
    header, *rows = path.read_text().splitlines()
    columns = header.split(",")
    lines = [",".join(change(dict(zip(columns, row.split(","), strict=True))).values()) for row in rows]
    path.write_text("\r\n".join([header, *lines]) + "\r\n")


def _badges(run_dir: Path, now: float | None = None) -> dict[str, dict]:
    (telemetry,) = telemetry_of(run_dir, now=now)
    return {badge["name"]: badge for badge in telemetry["badges"]}


def test_a_real_finished_run_reads_as_series_and_all_badges_ok(simulation: Path) -> None:
    run_dir = simulation.parent.parent
    (telemetry,) = telemetry_of(run_dir)
    assert telemetry["key"] == "runs/sim-1" and telemetry["path"] == "runs/sim-1/state.csv"
    assert telemetry["rows"] == (EQUILIBRATION + PRODUCTION) // EVERY
    assert telemetry["done_fraction"] == 1.0 and telemetry["target_temperature_k"] == 300.0
    series = telemetry["series"]
    assert set(series) == {"time_ps", "potential_kj_mol", "temperature_k", "speed_ns_day"}
    assert series["time_ps"][-1] == pytest.approx((EQUILIBRATION + PRODUCTION) * 4e-3)
    assert series["speed_ns_day"][0] is None and all(v > 0 for v in series["speed_ns_day"][1:] if v)
    assert all(badge["level"] == "ok" for badge in telemetry["badges"]), telemetry["badges"]


def test_a_non_finite_value_is_an_error(simulation: Path, tmp_path: Path) -> None:
    """A copy of the real file with one potential energy set to NaN (our reporter never writes one)."""
    workdir = _copy(simulation, tmp_path)
    assert _badges(tmp_path)["finite"]["level"] == "ok"  # control: the real file
    _edit(
        workdir / "state.csv",
        lambda row: {**row, "potential_kj_mol": "nan"} if row["step"] == "1000" else row,
    )
    finite = _badges(tmp_path)["finite"]
    assert (
        finite["level"] == "error"
        and finite["text"] == "potential_kj_mol is not a finite number at step 1000"
    )
    (telemetry,) = telemetry_of(tmp_path)
    assert None in telemetry["series"]["potential_kj_mol"]  # JSON has no NaN: the point is a gap


def test_a_trend_in_the_potential_energy_is_drift(simulation: Path, tmp_path: Path) -> None:
    """The real file's equilibration rows relabelled production: the relaxation after minimisation
    (the potential rising as the protein warms) is then inside production, a real trend."""
    workdir = _copy(simulation, tmp_path)
    drift = _badges(tmp_path)["drift"]
    assert drift["level"] == "ok", drift  # control: the equilibrated production rows
    _edit(workdir / "state.csv", lambda row: {**row, "phase": "production"})
    drift = _badges(tmp_path)["drift"]
    assert drift["level"] == "warning" and "not equilibrated" in drift["text"], drift
    # and the same numbers in another order have no trend: it is the trend that is flagged
    rows = [line.split(",") for line in (workdir / "state.csv").read_text().splitlines()[1:]]
    shuffled = iter(np.random.default_rng(1).permutation([row[3] for row in rows]))
    _edit(workdir / "state.csv", lambda row: {**row, "potential_kj_mol": next(shuffled)})
    assert _badges(tmp_path)["drift"]["level"] == "ok"


def test_a_temperature_off_target_is_a_warning(simulation: Path, tmp_path: Path) -> None:
    """A copy of the real file with every temperature 40 K higher (the thermostat's target is 300 K)."""
    workdir = _copy(simulation, tmp_path)
    assert _badges(tmp_path)["temperature"]["level"] == "ok"
    _edit(
        workdir / "state.csv", lambda row: {**row, "temperature_k": f"{float(row['temperature_k']) + 40:g}"}
    )
    temperature = _badges(tmp_path)["temperature"]
    assert temperature["level"] == "warning" and "target 300 K: more than 15 K off" in temperature["text"]


def test_a_few_rows_still_heating_up_are_not_judged_for_temperature(simulation: Path, tmp_path: Path) -> None:
    """A study's speed probe: a few rows from just after minimisation, still far below the target. The
    real file cut to its first production rows, shifted 80 K down as the probe's 3 rows are."""
    workdir = _copy(simulation, tmp_path)
    state = workdir / "state.csv"
    header, *rows = state.read_text().splitlines()
    first = [row for row in rows if row.startswith("production")][:3]
    state.write_text("\n".join([header, *first]) + "\n")
    _edit(state, lambda row: {**row, "temperature_k": f"{float(row['temperature_k']) - 80:g}"})
    temperature = _badges(tmp_path)["temperature"]
    assert temperature["level"] == "ok" and temperature["text"].startswith("not judged yet: 3 of 20")
    # control: the same rows repeated to a full window are judged, and are off target
    state.write_text("\n".join([header, *(state.read_text().splitlines()[1:] * 7)]) + "\n")
    assert _badges(tmp_path)["temperature"]["level"] == "warning"


def test_no_new_rows_for_a_while_is_stale_unless_the_run_finished(simulation: Path, tmp_path: Path) -> None:
    workdir = _copy(simulation, tmp_path, finished=False)  # as if still running: no result yet
    written = (workdir / "state.csv").stat().st_mtime
    assert _badges(tmp_path, now=written + 5)["stale"]["level"] == "ok"
    stale = _badges(tmp_path, now=written + STALE_MIN_S + 5)["stale"]
    assert stale["level"] == "warning" and "not finished" in stale["text"]
    (telemetry,) = telemetry_of(tmp_path)
    assert telemetry["done_fraction"] == 1.0  # from the last row's step and the spec's planned steps
    # control: the same quiet file with its result written after the last row is finished, not stale
    shutil.copy(simulation / "result.json", workdir / "result.json")
    assert _badges(tmp_path, now=written + 10 * STALE_MIN_S)["stale"]["level"] == "ok"


def test_a_row_being_written_is_not_read(simulation: Path, tmp_path: Path) -> None:
    """The real file with half a row appended (no line end yet), as a reader sees it mid-write."""
    workdir = _copy(simulation, tmp_path, finished=False)
    (before,) = telemetry_of(tmp_path)
    with open(workdir / "state.csv", "a") as handle:
        handle.write("production,1275,5.1,-30")
    (after,) = telemetry_of(tmp_path)
    assert after["rows"] == before["rows"] and after["series"] == before["series"]
    assert {b["name"]: b["level"] for b in after["badges"]}["finite"] == "ok"


def test_a_huge_file_is_sampled_with_its_last_row(simulation: Path, tmp_path: Path) -> None:
    """The real rows repeated to 100,000 (steps and times continued): sampled and the tail read, fast."""
    workdir = _copy(simulation, tmp_path, finished=False)
    header, *rows = (simulation / "state.csv").read_text().splitlines()
    cells = [row.split(",") for row in rows if row.startswith("production")]
    lines = []
    for n in range(100_000):
        phase, _, _, *rest = cells[n % len(cells)]
        lines.append(",".join([phase, str((n + 1) * EVERY), f"{(n + 1) * EVERY * 4e-3:.6g}", *rest]))
    (workdir / "state.csv").write_text("\r\n".join([header, *lines]) + "\r\n")
    began = time.perf_counter()
    (telemetry,) = telemetry_of(tmp_path)
    took = time.perf_counter() - began
    assert took < 0.5, took
    assert abs(telemetry["rows"] - 100_000) < 2_000  # estimated from the tail's line length
    times = telemetry["series"]["time_ps"]
    assert MAX_POINTS - 5 <= len(times) <= MAX_POINTS and times[-1] == pytest.approx(100_000 * EVERY * 4e-3)
    assert times[0] < 1 and times == sorted(times)  # spread over the whole run, in order


def test_a_link_or_a_fifo_named_state_csv_is_not_read(tmp_path: Path) -> None:
    """What a sandboxed run could leave in a session directory: neither is opened as a state file."""
    secret = tmp_path / "elsewhere.csv"
    secret.write_text(
        "phase,step,time_ps,potential_kj_mol,kinetic_kj_mol,total_kj_mol,temperature_k,speed_ns_day\r\n"
    )
    run_dir = tmp_path / "run"
    (run_dir / "runs" / "sim-1").mkdir(parents=True)
    (run_dir / "runs" / "sim-1" / "state.csv").symlink_to(secret)
    fifo = run_dir / "runs" / "sim-2" / "state.csv"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    assert len(state_files(run_dir)) == 2  # both are found...
    assert telemetry_of(run_dir) == []  # ...and neither is read (nor does the FIFO block)
    # control: a plain open follows the link out of the run directory, and blocks on the FIFO
    assert (run_dir / "runs" / "sim-1" / "state.csv").read_text().startswith("phase,step")
    opened = threading.Thread(target=lambda: open(fifo).close(), daemon=True)
    opened.start()
    opened.join(0.5)
    assert opened.is_alive()
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer comes: the blocked reader goes on
    opened.join(5)
