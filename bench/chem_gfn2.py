"""Wall time of GFN2-xTB through sciagent.science.chem: single point and BFGS optimisation, offline.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/chem_gfn2.py`` (molecules from the bundled table).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("SCIAGENT_PUBCHEM_URL", "http://127.0.0.1:9/rest/pug")  # offline: the bundled table

from sciagent.science.chem import ChemTask, calculate, resolve, smiles_to_structure

MOLECULES = ["water", "ethanol", "benzene", "aspirin", "caffeine"]


def main() -> None:
    print(f"{'molecule':10s} {'atoms':>5s} {'E_sp/Eh':>14s} {'sp s':>6s} {'E_opt/Eh':>14s} {'steps':>5s} "
          f"{'conv':>5s} {'fmax':>8s} {'opt s':>6s}")  # fmt: skip
    for name in MOLECULES:
        structure = smiles_to_structure(resolve(name).smiles)
        start = time.perf_counter()
        single = calculate(structure, ChemTask())
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        opt = calculate(structure, ChemTask(optimize=True))
        opt_s = time.perf_counter() - start
        print(f"{name:10s} {len(structure.symbols):5d} {single.energy_hartree:14.6f} {single_s:6.2f} "
              f"{opt.energy_hartree:14.6f} {opt.steps:5d} {opt.converged!s:>5s} "
              f"{opt.final_fmax_ev_per_a:8.4f} {opt_s:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
