"""ASE calculators by method name: GFN2-xTB / GFN1-xTB through tblite (CPU), MACE through mace-torch.

A MACE model is loaded once per process (``_MODELS``, keyed by model and device); mace-torch makes
later ``torch.load`` calls in its process unpickle freely, so callers run MACE in a worker process.
A requested accelerator is used or the call fails saying why: never a silent CPU run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Literal

from sciagent.errors import RunFailure, SpecError

Method = Literal["GFN2-xTB", "GFN1-xTB", "mace"]
Device = Literal["cpu", "cuda", "xpu"]
XTB_METHODS = ("GFN2-xTB", "GFN1-xTB")
MACE_FOUNDATIONS = ("mace-mp", "mace-off")
ML_HINT = "pip install torch==2.13.0 (a CPU wheel, or your GPU's build) first, then 'sciagent[ml]'"

_MODELS: dict[tuple[str, str, str], Any] = {}


def xtb_calculator(method: str, charge: int, unpaired: int, device: str) -> Any:
    """A tblite calculator; tblite runs on CPU only, so another device is refused."""
    if device != "cpu":
        raise SpecError(
            f"{method} runs on the CPU only (tblite): use --device cpu, or --method mace for {device}"
        )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tblite.ase import TBLite

    return TBLite(method=method, charge=charge, multiplicity=unpaired + 1, verbosity=0)


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RunFailure("setup", "device cuda was requested but torch sees no CUDA GPU here")
    if device == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise RunFailure(
            "setup", "device xpu was requested but torch sees no Intel XPU here (intel torch build?)"
        )


def mace_calculator(model: str, device: str, dtype: str = "float64") -> Any:
    """A MACE calculator for a model file, or a foundation model (``mace-mp``, ``mace-off``) from the
    cache or downloaded; loaded once per process."""
    key = (model, device, dtype)
    if key in _MODELS:
        return _MODELS[key]
    try:
        with contextlib.redirect_stdout(sys.stderr):  # mace prints notices; stdout may carry --json
            import mace.calculators as mace_calculators
    except ImportError as exc:
        raise SpecError(f"MACE needs torch and mace-torch, which are not installed: {ML_HINT}") from exc
    _check_device(device)
    if model in MACE_FOUNDATIONS:
        build = mace_calculators.mace_mp if model == "mace-mp" else mace_calculators.mace_off
        try:
            with contextlib.redirect_stdout(sys.stderr):
                calculator = build(device=device, default_dtype=dtype)
        except Exception as exc:
            raise RunFailure(
                "setup",
                f"could not load the {model} foundation model (downloaded on first use; offline?): "
                f"{type(exc).__name__}: {exc}; pass a local model file with --model PATH",
            ) from exc
    else:
        if not Path(model).is_file():
            raise SpecError(f"MACE model file {model} does not exist: give a model path, mace-mp or mace-off")
        try:
            with contextlib.redirect_stdout(sys.stderr):
                calculator = mace_calculators.MACECalculator(
                    model_paths=model, device=device, default_dtype=dtype
                )
        except Exception as exc:
            raise RunFailure(
                "setup", f"could not load MACE model {model}: {type(exc).__name__}: {exc}"
            ) from exc
    _MODELS[key] = calculator
    return calculator


def loaded_models() -> list[tuple[str, str, str]]:
    """The MACE models this process holds (model, device, dtype), for tests and diagnostics."""
    return list(_MODELS)


def make_calculator(method: str, charge: int, unpaired: int, device: str, model: str | None) -> Any:
    """The ASE calculator for ``method``.

    Raises:
        SpecError: unknown method, a device the method cannot use, MACE without a model or without
            mace-torch installed.
    """
    if method in XTB_METHODS:
        return xtb_calculator(method, charge, unpaired, device)
    if method == "mace":
        if model is None:
            raise SpecError("--method mace needs --model: a MACE model file, mace-mp or mace-off")
        return mace_calculator(model, device)
    raise SpecError(f"unknown method {method!r}: use GFN2-xTB, GFN1-xTB or mace")
