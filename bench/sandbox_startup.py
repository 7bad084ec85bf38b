"""Start-up cost of the sandbox: the same commands plain and sandboxed, side by side in one run.

Each command runs ``--repeats`` times plain (``subprocess.run``) and sandboxed (``Sandbox().run``),
alternating so machine noise falls on both; prints the median wall times, the ratio
sandboxed/plain and the absolute cost per call in milliseconds. The sandbox's layers are printed
first (bubblewrap namespaces, rlimits, cgroups: what this machine gave it).

    python bench/sandbox_startup.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sciagent.sandbox import Sandbox, probe_layers

COMMANDS = {
    "/bin/true": ["/bin/true"],
    "python -c pass": [sys.executable, "-c", "pass"],
    "python: import numpy, mdtraj, openmm": [sys.executable, "-c", "import numpy, mdtraj, openmm"],
}


def plain(argv: list[str], scratch: Path) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=scratch, check=True, capture_output=True)
    return time.perf_counter() - began


def sandboxed(sandbox: Sandbox, argv: list[str], scratch: Path) -> float:
    began = time.perf_counter()
    run = sandbox.run(argv, workdir=scratch)
    elapsed = time.perf_counter() - began
    if not run.ok:
        raise SystemExit(f"{argv} failed in the sandbox: {run.summary()}\n{run.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    began = time.perf_counter()
    layers = probe_layers()
    print(f"probe_layers(): {(time.perf_counter() - began) * 1000:.0f} ms; {layers.describe()}")
    print(f"median of {args.repeats} alternating runs each; cost = sandboxed - plain")
    print(f"{'command':<38} {'plain ms':>9} {'sandboxed ms':>13} {'ratio':>6} {'cost ms':>8}")
    sandbox = Sandbox()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name, argv in COMMANDS.items():
            plain(argv, scratch), sandboxed(sandbox, argv, scratch)  # warm-up: page cache, imports
            plain_s, sandboxed_s = [], []
            for _ in range(args.repeats):
                plain_s.append(plain(argv, scratch))
                sandboxed_s.append(sandboxed(sandbox, argv, scratch))
            p, s = statistics.median(plain_s) * 1000, statistics.median(sandboxed_s) * 1000
            print(f"{name:<38} {p:9.1f} {s:13.1f} {s / p:6.2f} {s - p:8.1f}")


if __name__ == "__main__":
    main()
