"""Live telemetry of a run's simulations: each ``state.csv`` as plot series and health badges.

The state file is what the MD kernel's ``StateCsvReporter`` writes (``science/reporters.py``): one row
per report step with the phase, step, time, energies, temperature and speed, flushed as written. A run
directory holds one per simulation: a study's conditions (``conditions/<name>/run<n>/``) and probes, a
session's tasks (``runs/<task id>/``). Next to it, ``spec.json`` gives the planned steps and the target
temperature, and ``result.json`` appears when a call of ``run_md`` ends.

Files are read as the web page polls them, while the simulation appends: only complete lines count (a
row being written has no line end yet), a file too big to read whole is sampled at evenly spaced offsets
plus its tail, and nothing that is not a regular file is opened (a FIFO named ``state.csv`` would
block the server; a link could point anywhere).
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sciagent.science.outputs import RunFiles
from sciagent.science.reporters import CSV_COLUMNS
from sciagent.science.stability import DEFAULT_THRESHOLDS

STATE_FILE = RunFiles(Path()).state_csv.name
MAX_FILES = 32  # simulations shown per run: the most recently written ones
MAX_SCANNED = 20_000  # directory entries looked at while finding them (a study's parsl logs are many)
MAX_POINTS = 500  # per series, the last row always among them
WHOLE_FILE_BYTES = 256 << 10  # about 3,600 rows; a bigger file is sampled (MAX_POINTS lines) plus its tail
TAIL_BYTES = 16 << 10  # about 230 rows: what the badges that look at the last rows need
LAST_ROWS = 20  # rows whose mean temperature is compared with the target
MIN_DRIFT_ROWS = 10  # production rows before a trend is judged
# Energy drift. With a thermostat the potential energy fluctuates about a constant mean once the
# system is equilibrated; a trend means it is not (still relaxing after minimisation, or heating
# towards a blow-up). The rise of a line fitted through the production rows is judged per degree of
# freedom in kT (each row gives the degrees of freedom: T = 2 KE / (dof R)). Measured on villin in
# implicit solvent at 300 K on the CPU platform (1,450 degrees of freedom): 20 ps of production after
# 5 ps of equilibration (2 fs) rose by -55 kJ/mol, 0.015 kT/dof and 0.8 deviations about the line;
# 2 ps after 3 ps (4 fs, the tests' run) 0.029 kT/dof; the first 2 to 5 ps after minimisation rose by
# 490-560 kJ/mol, 0.14-0.16 kT/dof and 5-7 deviations. Flagged when large and clear of the noise both:
DRIFT_KT_PER_DOF = 0.05  # a third of the relaxation above; over 3x the equilibrated runs'
DRIFT_SIGMAS = 3.0  # the rise against the scatter about the fitted line
# A line does not see a relaxation that is over: 20 ps from minimisation with no equilibration fit
# 0.058 kT/dof at 1.8 deviations, not flagged; the plot shows it.
STALE_MIN_S = 60.0
STALE_INTERVALS = 10  # no row for this many typical row intervals: stale
_R = 0.0083144626  # the gas constant in kJ/(mol K), as the reporter's temperature uses it
_SERIES = ("time_ps", "potential_kj_mol", "temperature_k", "speed_ns_day")
_NUMERIC = CSV_COLUMNS[1:]


@dataclass(frozen=True)
class _Rows:
    """The parsed rows: all of them, or a sample spread over the file then every row of its tail.

    Attributes:
        tail_from: index of the first of the consecutive rows at the end (0: every row was read).
        count: rows in the file (estimated from the tail's line length when it was sampled).
    """

    phase: list[str]
    values: dict[str, np.ndarray]  # by column; NaN where a cell is empty or not a number
    tail_from: int
    count: int

    @property
    def sampled(self) -> bool:
        return self.tail_from > 0

    def spread(self) -> np.ndarray:
        """Indices of rows spread evenly over the whole run (the sample and the last row)."""
        n = len(self.phase)
        return np.arange(n) if not self.sampled else np.append(np.arange(self.tail_from), n - 1)


def telemetry_of(run_dir: Path, *, now: float | None = None) -> list[dict[str, Any]]:
    """Every simulation's telemetry under ``run_dir`` (the contract's ``Telemetry``), by key.

    ``now`` (a ``time.time()`` value) is when staleness is judged; the present by default.
    """
    now = time.time() if now is None else now
    found = [_one(run_dir, path, now) for path in state_files(run_dir)]
    return sorted((item for item in found if item is not None), key=lambda item: item["key"])


def state_files(run_dir: Path) -> list[Path]:
    """The run's state files, at most ``MAX_FILES`` (the newest), found without following links."""
    found: list[tuple[float, Path]] = []
    scanned = 0
    for top, dirs, files in os.walk(run_dir):  # os.walk does not follow directory links by default
        scanned += len(dirs) + len(files)
        if STATE_FILE in files:
            path = Path(top) / STATE_FILE
            try:
                found.append((path.lstat().st_mtime, path))
            except OSError:  # removed meanwhile
                continue
        if scanned > MAX_SCANNED:
            break
        dirs.sort()
    found.sort(key=lambda item: item[0], reverse=True)
    return [path for _, path in found[:MAX_FILES]]


def _one(run_dir: Path, path: Path, now: float) -> dict[str, Any] | None:
    opened = _open_regular(path)
    if opened is None:
        return None
    with opened as handle:
        mtime = os.fstat(handle.fileno()).st_mtime
        rows = _read_rows(handle)
    if rows is None:
        return None
    workdir = path.parent
    spec = _json_of(workdir / "spec.json")
    finished = simulation_outcome(workdir)
    target = _number(spec.get("temperature_k"))
    key = workdir.relative_to(run_dir).as_posix()
    return {
        "key": key,
        "path": path.relative_to(run_dir).as_posix(),
        "done_fraction": _done_fraction(rows, spec, finished),
        "target_temperature_k": target,
        "last_update": mtime,
        "rows": rows.count,
        "series": _series(rows),
        "badges": [
            _finite_badge(rows, finished),
            _drift_badge(rows, target),
            _temperature_badge(rows, target),
            _stale_badge(rows, mtime, now, finished),
        ],
    }


def simulation_outcome(workdir: Path) -> dict[str, Any] | None:
    """The simulation's ``result.json`` if it has ended, else None.

    ``run_md`` writes it at the end of each call, and a resumed run appends rows after an earlier
    call's result: it has ended when the result is at least as new as the last row.
    """
    written = _mtime(workdir / "result.json")
    if written == -math.inf or written < _mtime(workdir / STATE_FILE):
        return None
    return _json_of(workdir / "result.json") or None


def _open_regular(path: Path) -> BinaryIO | None:
    """``path`` opened for reading if it is a regular file; never a link, never blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return open(fd, "rb")


def _read_rows(handle: BinaryIO) -> _Rows | None:
    """The complete rows of an open state file; None if it has no header of ours yet."""
    size = os.fstat(handle.fileno()).st_size
    header = handle.readline()
    if not header.endswith(b"\n"):
        return None
    columns = next(csv.reader([header.decode("utf-8", "replace")]))
    if any(column not in columns for column in ("phase", *_NUMERIC)):
        return None
    body_start = handle.tell()
    if size <= WHOLE_FILE_BYTES:
        lines = _complete_lines(handle.read(size - body_start))
        return _parsed(columns, lines, tail_from=0, count=len(lines))
    handle.seek(size - TAIL_BYTES)
    handle.readline()  # the rest of the line the offset fell in
    tail_start = handle.tell()
    tail = _complete_lines(handle.read(size - tail_start))
    sample: dict[int, bytes] = {}  # by where the line starts: no line twice
    for i in range(MAX_POINTS):  # the first whole line after each of evenly spaced offsets
        handle.seek(body_start + (tail_start - body_start) * i // MAX_POINTS)
        if i:
            handle.readline()
        start, line = handle.tell(), handle.readline()
        if start < tail_start and line.endswith(b"\n"):
            sample[start] = line
    estimate = round((size - body_start) / (sum(map(len, tail)) / len(tail))) if tail else len(sample)
    return _parsed(columns, [*sample.values(), *tail], tail_from=len(sample), count=estimate)


def _complete_lines(data: bytes) -> list[bytes]:
    """The lines of ``data`` that end with a line end: the last row may still be being written."""
    lines = data.splitlines(keepends=True)
    return [line for line in lines if line.endswith(b"\n") and line.strip()]


def _parsed(columns: list[str], lines: list[bytes], *, tail_from: int, count: int) -> _Rows:
    """The rows of ``lines`` (a line with too few or too many cells is left out)."""
    rows, kept_before_tail = [], 0
    for n, row in enumerate(csv.reader(line.decode("utf-8", "replace") for line in lines)):
        if len(row) == len(columns):
            rows.append(row)
            kept_before_tail += n < tail_from
    index = {name: columns.index(name) for name in ("phase", *_NUMERIC)}
    values = {
        name: np.array([_cell(row[index[name]]) for row in rows], dtype=np.float64) for name in _NUMERIC
    }
    return _Rows([row[index["phase"]] for row in rows], values, kept_before_tail, count)


def _cell(text: str) -> float:
    """A cell's number; NaN for a blank (the first row's speed) or anything that is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _series(rows: _Rows) -> dict[str, list[float | None]]:
    """At most ``MAX_POINTS`` rows spread over the run, the last included; JSON has no NaN, so None."""
    spread = rows.spread()
    n = len(spread)
    picked = spread[np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(int))] if n else spread
    return {
        name: [float(v) if math.isfinite(v) else None for v in rows.values[name][picked]] for name in _SERIES
    }


def _done_fraction(rows: _Rows, spec: dict[str, Any], finished: dict[str, Any] | None) -> float | None:
    if finished is not None and finished.get("status") == "completed":
        return 1.0
    total = (_number(spec.get("equilibration_steps")) or 0) + (_number(spec.get("production_steps")) or 0)
    steps = rows.values["step"]
    if total <= 0 or not len(steps) or not math.isfinite(steps[-1]):
        return None
    return round(min(1.0, max(0.0, float(steps[-1]) / total)), 4)


def _finite_badge(rows: _Rows, finished: dict[str, Any] | None) -> dict[str, str]:
    if finished is not None and finished.get("failure_class") == "instability":
        return _badge("finite", "error", str(finished.get("message", "the simulation blew up")))
    columns = ("step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "total_kj_mol", "temperature_k")
    for name in columns:
        bad = np.flatnonzero(~np.isfinite(rows.values[name]))
        if len(bad):
            where = rows.values["step"][bad[0]]
            at = f"step {int(where)}" if math.isfinite(where) else "a row"
            return _badge("finite", "error", f"{name} is not a finite number at {at}")
    return _badge("finite", "ok", "every value is finite" + (" in the rows sampled" if rows.sampled else ""))


def _drift_badge(rows: _Rows, target: float | None) -> dict[str, str]:
    """The potential energy's linear trend over the production rows (see ``DRIFT_KT_PER_DOF``)."""
    spread = rows.spread()
    production = spread[[rows.phase[i] == "production" for i in spread]]
    time_ps, potential = rows.values["time_ps"][production], rows.values["potential_kj_mol"][production]
    # The reporter's own count: temperature = 2 KE / (dof R), so each row gives the degrees of freedom.
    dof = 2 * rows.values["kinetic_kj_mol"][production] / (_R * rows.values["temperature_k"][production])
    usable = np.isfinite(time_ps) & np.isfinite(potential)
    time_ps, potential = time_ps[usable], potential[usable]
    if target is None or len(time_ps) < MIN_DRIFT_ROWS or np.ptp(time_ps) <= 0:
        return _badge("drift", "ok", f"not judged yet: {len(time_ps)} production rows")
    slope, intercept = np.polyfit(time_ps, potential, 1)
    span = float(np.ptp(time_ps))
    rise, scatter = float(slope * span), float(np.std(potential - (slope * time_ps + intercept)))
    degrees = float(np.nanmedian(dof[usable]))
    per_dof = abs(rise) / (degrees * _R * target) if degrees > 0 else math.inf
    said = f"potential energy {rise:+.4g} kJ/mol over {span:.4g} ps of production ({per_dof:.3f} kT/dof"
    if per_dof > DRIFT_KT_PER_DOF and abs(rise) > DRIFT_SIGMAS * scatter:
        return _badge("drift", "warning", f"{said}, over {DRIFT_KT_PER_DOF:g}): not equilibrated")
    return _badge("drift", "ok", f"{said})")


def _temperature_badge(rows: _Rows, target: float | None) -> dict[str, str]:
    """The mean of the last production rows against the target (equilibration is still heating up)."""
    tail = np.arange(rows.tail_from, len(rows.phase))
    production = [i for i in tail if rows.phase[i] == "production"][-LAST_ROWS:]
    last = rows.values["temperature_k"][production]
    last = last[np.isfinite(last)]
    if target is None or len(last) < LAST_ROWS:  # a probe's few rows are still heating up from 200 K
        return _badge("temperature", "ok", f"not judged yet: {len(last)} of {LAST_ROWS} production rows")
    mean, allowed = float(np.mean(last)), DEFAULT_THRESHOLDS.temperature_tolerance_fraction * target
    said = f"mean of the last {len(last)} rows {mean:.1f} K, target {target:g} K"
    if abs(mean - target) > allowed:
        return _badge("temperature", "warning", f"{said}: more than {allowed:.3g} K off")
    return _badge("temperature", "ok", said)


def _stale_badge(rows: _Rows, mtime: float, now: float, finished: dict[str, Any] | None) -> dict[str, str]:
    if finished is not None:
        return _badge("stale", "ok", f"finished: {finished.get('status', 'ended')}")
    limit = max(STALE_MIN_S, STALE_INTERVALS * (_row_interval_s(rows) or 0.0))
    quiet = now - mtime
    if quiet > limit:
        text = f"no new row for {quiet:.0f} s (more than {limit:.0f} s) and not finished"
        return _badge("stale", "warning", text)
    return _badge("stale", "ok", f"last row {max(0.0, quiet):.0f} s ago")


def _row_interval_s(rows: _Rows) -> float | None:
    """The median wall time between consecutive rows: the simulated time between them over the speed
    the later row gives."""
    time_ps = rows.values["time_ps"][rows.tail_from :]
    speed = rows.values["speed_ns_day"][rows.tail_from + 1 :]
    step_ps = np.diff(time_ps)
    usable = np.isfinite(step_ps) & np.isfinite(speed) & (step_ps > 0) & (speed > 0)
    if not usable.any():
        return None
    return float(np.median(step_ps[usable] * 1e-3 / speed[usable] * 86400))  # ps -> ns; per day -> s


def _badge(name: str, level: str, text: str) -> dict[str, str]:
    return {"name": name, "level": level, "text": text}


def _json_of(path: Path) -> dict[str, Any]:
    """A small JSON file's object, or {} if it is missing, being replaced, or not ours."""
    opened = _open_regular(path)
    if opened is None:
        return {}
    with opened as handle:
        try:
            value = json.loads(handle.read(1 << 20))
        except (ValueError, UnicodeDecodeError):
            return {}
    return value if isinstance(value, dict) else {}


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return -math.inf


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
