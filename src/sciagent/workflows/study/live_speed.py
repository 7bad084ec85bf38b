"""Live speed: how fast each running simulation goes, read from the tail of its state CSV.

Workers already write one CSV row per report step (phase, step, ...); the runner reads only the last
few kilobytes of each running local condition's file once a loop, so watching costs the workers
nothing (no extra writes in the step loop). A last line still being written is skipped. A remote
site's files are not on this filesystem: there is no live speed there.
"""

from __future__ import annotations

from pathlib import Path

from sciagent.science.state_rows import last_state_row

WINDOW_S = 30.0  # the rate is measured over the newest this many seconds...
MIN_SPAN_S = 10.0  # ...and not at all from less (a report step or two says little)


def _phase_and_step(path: Path) -> tuple[str, int] | None:
    """The (phase, step) of the state CSV's last complete row, or None when it has none yet."""
    row = last_state_row(path)
    step = (row or {}).get("step", "").strip()
    return (row.get("phase", ""), int(step)) if row and step.isdigit() else None


class LiveSpeed:
    """(time, step) samples per running condition, and the steps per second they show."""

    def __init__(self) -> None:
        self._samples: dict[str, list[tuple[float, int]]] = {}

    def observe(self, name: str, path: Path, now: float) -> int | None:
        """Read ``path``'s last row at ``now``; return the step it reached (None: no row yet)."""
        row = _phase_and_step(path)
        if row is None:
            return None
        samples = self._samples.setdefault(name, [])
        if not samples or row[1] != samples[-1][1]:
            samples.append((now, row[1]))
        while len(samples) > 2 and samples[-1][0] - samples[1][0] >= WINDOW_S:
            samples.pop(0)
        return row[1]

    def rate(self, name: str) -> float | None:
        """Steps per second over the newest samples, once they span ``MIN_SPAN_S``."""
        samples = self._samples.get(name, [])
        if len(samples) < 2:
            return None
        (t0, s0), (t1, s1) = samples[0], samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 - t0 >= MIN_SPAN_S and s1 > s0 else None

    def forget(self, name: str) -> None:
        """A new submission: its setup is not stepping, so the samples start again."""
        self._samples.pop(name, None)
