"""Build and save a tiny, untrained MACE model (H, C, N, O), or evaluate one directly: a test helper.

Run as a script in its own process (importing mace changes ``torch.load`` for the whole process):
``python tiny_mace.py build PATH`` or ``python tiny_mace.py energy PATH XYZ`` (prints the energy, eV).
The model is random and untrained: it exercises the MACE plumbing, its energies mean nothing.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def build(path: str) -> None:
    # isort: off
    from mace import modules  # before e3nn: it lets e3nn's own torch.load of its constants through
    from e3nn import o3
    # isort: on

    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=4.0,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=1,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=1,
        num_elements=4,
        hidden_irreps=o3.Irreps("8x0e"),
        MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=np.array([-13.6, -1029.0, -1485.0, -2042.0]),
        avg_num_neighbors=3.0,
        atomic_numbers=[1, 6, 7, 8],
        correlation=2,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    torch.save(model, path)


def energy(path: str, xyz: str) -> None:
    from ase.io import read
    from mace.calculators import MACECalculator

    atoms = read(xyz)
    atoms.calc = MACECalculator(model_paths=path, device="cpu", default_dtype="float64")
    print(repr(float(atoms.get_potential_energy())))


if __name__ == "__main__":
    {"build": build, "energy": energy}[sys.argv[1]](*sys.argv[2:])
