"""Budget use of the default study on this machine: quiet, beside a CPU-bound process, and slowed.

Each scenario runs exactly what ``make run`` runs (``sciagent run``: the default goal, model and budget)
in a fresh temporary workspace, and prints side by side: the budget use (simulation wall time, i.e.
setup, equilibration and production across the workers, / (workers x budget), from the report's time
breakdown), whether the 300 K condition got a verdict, the production in ps per condition, and the
wall time. A run takes its whole budget (about 5 minutes each by default).

- quiet: nothing else started by this script (other work on the machine shows in the load average);
- busy: one CPU-bound process (a Python busy loop) beside the study;
- slowed: one busy loop per usable core, so every worker shares its core (threads per worker cannot
  go below 1, so this is how the study's speed is lowered).

The ensemble scaling ratio (two runs side by side vs one after the other) is ``bench/ensemble_scaling.py``.

    python bench/budget_use.py [--scenarios quiet,busy,slowed] [--budget 5m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sciagent.durations import parse_duration

SCENARIOS = {
    "quiet": "nothing beside it",
    "busy": "one busy loop beside it",
    "slowed": "a busy loop per core",
}
DEFAULT_BUDGET = "5m"  # `sciagent run`'s default, which `make run` uses
REFERENCE_K = 300.0
BUSY_LOOP = "while True:\n    pass\n"


@dataclass(frozen=True)
class Outcome:
    """What one scenario's study gave, as the table prints it."""

    scenario: str
    budget_use: str
    verdict_300k: str
    production_ps: str
    wall_s: float
    load: str
    breakdown: str  # every part of the time breakdown as a share of workers x budget


def busy_loops(scenario: str) -> list[subprocess.Popen[bytes]]:
    """The CPU-bound processes this scenario runs beside the study."""
    count = {"quiet": 0, "busy": 1, "slowed": len(os.sched_getaffinity(0))}[scenario]
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def run_study(scenario: str, budget: str | None) -> Outcome:
    """``sciagent run`` in a fresh workspace, with this scenario's busy loops beside it."""
    command = [sys.executable, "-m", "sciagent", "run", "--json"] + (["--budget", budget] if budget else [])
    loops = busy_loops(scenario)
    try:
        with tempfile.TemporaryDirectory(prefix=f"budget-use-{scenario}-") as workspace:
            began = time.perf_counter()
            completed = subprocess.run(command, cwd=workspace, capture_output=True, text=True)
            wall_s = time.perf_counter() - began
            load = f"{os.getloadavg()[0]:.2f}"
            if not completed.stdout.strip():
                raise SystemExit(
                    f"{scenario}: sciagent run printed nothing: {completed.stderr.strip()[-500:]}"
                )
            summary = json.loads(completed.stdout)
            if "results_json" not in summary:
                raise SystemExit(f"{scenario}: no report: {summary.get('error', summary)}")
            results = json.loads(Path(summary["results_json"]).read_text())
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    record = results["record"]
    verdict, production = _verdict(results["table"]), _production(record)
    return Outcome(scenario, _budget_use(record), verdict, production, wall_s, load, _breakdown(record))


def _budget_use(record: dict) -> str:
    breakdown = record.get("time_breakdown")
    return f"{breakdown['budget_use']:.2f}" if breakdown else "not recorded"


def _breakdown(record: dict) -> str:
    breakdown = record.get("time_breakdown")
    if not breakdown:
        return "not recorded"
    shares = breakdown["fractions"]
    return ", ".join(f"{part} {share:.0%}" for part, share in shares.items() if share or part != "overrun")


def _verdict(table: list[dict]) -> str:
    """The 300 K verdict(s) of the report's results table, or the status where there is none."""
    verdicts = [row["verdict"] or row["status"] for row in table if row["temperature_k"] == REFERENCE_K]
    reached = [v for v in verdicts if v in ("stable", "unstable")]
    return ("yes: " if reached else "no: ") + (", ".join(verdicts) or "no 300 K condition")


def _production(record: dict) -> str:
    """Production ps per condition, from each run's analysis (what its frames cover)."""
    cells = []
    for condition in record["conditions"]:
        analysis = (condition.get("outcome") or {}).get("analysis")
        cells.append(
            f"{condition['name']} {analysis['production_ps']:.1f}" if analysis else f"{condition['name']} -"
        )
    return ", ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: quiet,busy,slowed")
    parser.add_argument(
        "--budget", default=None, help=f"passed to sciagent run (default: its own, {DEFAULT_BUDGET})"
    )
    args = parser.parse_args()
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown or not scenarios:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}: use {', '.join(SCENARIOS)}"
        )
    try:
        budget_s = parse_duration(args.budget or DEFAULT_BUDGET)
    except ValueError as exc:
        parser.error(f"--budget: {exc}")
    print(
        f"Each scenario runs the default study (`sciagent run`) for its whole budget ({budget_s:.0f} s): "
        f"{len(scenarios)} scenario(s) take about {len(scenarios) * budget_s / 60:.1f} min. "
        f"Cores usable: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.2f} at the start.",
        flush=True,
    )
    outcomes = []
    for scenario in scenarios:
        print(f"- {scenario} ({SCENARIOS[scenario]}) ...", flush=True)
        outcomes.append(run_study(scenario, args.budget))
    header = (
        "scenario",
        "budget use",
        "300 K verdict",
        "production ps per condition",
        "wall s",
        "load after",
    )
    rows = [header] + [
        (o.scenario, o.budget_use, o.verdict_300k, o.production_ps, f"{o.wall_s:.0f}", o.load)
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print("Where the time went (shares of workers x budget):")
    for outcome in outcomes:
        print(f"  {outcome.scenario}: {outcome.breakdown}")
    print(
        "budget use = simulation wall time (setup + equilibration + production, from each run's segment "
        "ledger) across the workers / (workers x budget). The ensemble scaling ratio: "
        "python bench/ensemble_scaling.py"
    )


if __name__ == "__main__":
    main()
