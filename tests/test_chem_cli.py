"""``sciagent chem energy`` as a user runs it: real processes, real tblite, offline; MACE, a tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

TINY_MACE = Path(__file__).parent / "data" / "chem" / "tiny_mace.py"


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "SCIAGENT_CHEM_CACHE": str(tmp_path / "cache"),
        "SCIAGENT_PUBCHEM_URL": "http://127.0.0.1:9/rest/pug",  # closed: PubChem unreachable, as offline
        "OMP_NUM_THREADS": "1",
    }


def _chem(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", "chem", "energy", *args],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_water_optimised_offline_reports_energy_convergence_and_fmax(tmp_path: Path) -> None:
    completed = _chem(tmp_path, "water", "--optimize", "--json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["converged"] is True and result["final_fmax_ev_per_a"] < 0.01
    assert result["energy_hartree"] == pytest.approx(-5.0705, abs=1e-3)  # GFN2-xTB, see test_chem_science
    assert result["molecule"]["cid"] == 962 and "bundled table" in result["molecule"]["source"]
    assert Path(tmp_path, result["trace_plot"]).read_bytes()[:4] == b"\x89PNG"
    assert Path(tmp_path, result["files"]["final_xyz"]).read_text().startswith("3\n")
    # A journal run of its own: the step with the numbers, the files as artifacts, a report beside them.
    with sqlite3.connect(tmp_path / "sciagent-runs" / "journal.sqlite") as journal:
        ((kind, status),) = journal.execute(
            "SELECT json_extract(config, '$.kind'), status FROM runs"
        ).fetchall()
        (summary,) = journal.execute("SELECT summary FROM steps WHERE kind = 'chem_energy'").fetchone()
        artifacts = dict(journal.execute("SELECT kind, path FROM artifacts").fetchall())
    assert (kind, status) == ("chem", "completed")
    assert summary == f"H2O GFN2-xTB: {result['energy_hartree']:.6f} Eh, converged in {result['steps']} steps"
    assert Path(artifacts["plot"]) == Path(tmp_path, result["trace_plot"])
    report = Path(tmp_path, result["report"]).read_text()
    assert "| converged | true |" in report and "optimisation-trace.png" in report
    assert f"| energy | {result['energy_hartree']:.8g} | Eh |" in report
    refused = subprocess.run(
        [sys.executable, "-m", "sciagent", "resume", result["run_id"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "is a chemistry calculation: it is not resumed" in refused.stderr


def test_the_table_says_when_an_optimisation_did_not_converge(tmp_path: Path) -> None:
    completed = _chem(tmp_path, "CCO", "--optimize", "--max-steps", "2")
    assert completed.returncode == 0, completed.stderr
    assert "converged" in completed.stdout and "false" in completed.stdout
    assert "did not converge in 2 steps" in completed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["unobtainium"], "cannot resolve 'unobtainium'"),
        (["water", "--device", "cuda"], "GFN2-xTB runs on the CPU only"),
        (["water", "--method", "mace"], "needs --model"),
        (["water", "--fmax", "-1"], "--fmax"),
        (["water", "--method", "PM7"], "--method"),
    ],
    ids=["unknown-name", "xtb-on-gpu", "mace-without-model", "negative-fmax", "unknown-method"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    completed = _chem(tmp_path, *args)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr and "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    journal = tmp_path / "sciagent-runs" / "journal.sqlite"
    if journal.exists():  # the arguments were valid: the run is journalled as failed, with the reason
        with sqlite3.connect(journal) as connection:
            ((status, error),) = connection.execute("SELECT status, error FROM runs").fetchall()
        assert status == "failed" and message in error
    else:
        assert args[1:2] in (["--fmax"], ["--method"])  # refused before a run began


needs_mace = pytest.mark.skipif(
    importlib.util.find_spec("mace") is None, reason="the ml extra (torch, mace-torch) is not installed"
)


@needs_mace
def test_mace_with_a_tiny_model_built_here(tmp_path: Path) -> None:
    model = tmp_path / "tiny.model"
    helper = [sys.executable, str(TINY_MACE)]
    subprocess.run([*helper, "build", str(model)], check=True, capture_output=True, timeout=120)
    single = _chem(tmp_path, "water", "--method", "mace", "--model", str(model), "--json")
    assert single.returncode == 0, single.stderr
    result = json.loads(single.stdout)
    assert result["method"] == "mace" and result["dipole_debye"] is None
    # the same model evaluated by mace's own calculator in another process, on the same input geometry
    direct = subprocess.run([*helper, "energy", str(model), str(tmp_path / result["files"]["input_xyz"])],
                            check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result["energy_ev"] == pytest.approx(float(direct.stdout.strip().splitlines()[-1]), abs=1e-6)
    short = _chem(tmp_path, "water", "--method", "mace", "--model", str(model), "--optimize", "--max-steps",
                  "2", "--json")  # fmt: skip
    assert short.returncode == 0 and json.loads(short.stdout)["converged"] is False
    on_gpu = _chem(tmp_path, "water", "--method", "mace", "--model", str(model), "--device", "cuda")
    assert on_gpu.returncode != 0 and "device cuda was requested but torch sees no CUDA GPU" in on_gpu.stderr


@needs_mace
def test_mace_foundation_model_offline_fails_naming_the_cause(tmp_path: Path) -> None:
    env = _env(tmp_path) | {"HOME": str(tmp_path)}  # no cached weights
    completed = subprocess.run(
        [sys.executable, "-m", "sciagent", "chem", "energy", "water", "--method", "mace", "--model",
         "mace-mp"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 1
    assert (
        "could not load the mace-mp foundation model" in completed.stderr
        and "--model PATH" in completed.stderr
    )
