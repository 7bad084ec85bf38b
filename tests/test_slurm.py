"""A real single-node Slurm (slurmctld + slurmd under a temp dir) runs an MD task for a ``slurm`` site.

No munge: ``AuthType=auth/none`` and ``CredType=cred/none``. Skipped, with the reason, only where the
Slurm daemons are not installed (``.ci/run`` installs ``slurm-wlm``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from sciagent.compute.sites import make_executor
from sciagent.config import Settings
from sciagent.science.md import run_md
from sciagent.science.spec import MDSpec
from slurm_cluster import PARTITION

# xdist_group: one cluster at a time (make test runs the suite on pytest-xdist workers)
pytestmark = [pytest.mark.hpc, pytest.mark.timeout(300), pytest.mark.xdist_group("slurm")]


def test_md_runs_through_a_slurm_site(slurm_cluster, tmp_path, monkeypatch, quick_spec_fields) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    settings = Settings(sites={"slurm": {"partition": PARTITION, "walltime": "00:10:00"}})
    spec = MDSpec(**quick_spec_fields)
    with make_executor("slurm", settings.sites, run_dir=tmp_path / "parsl") as executor:
        result = executor.result(executor.submit(run_md, spec, tmp_path / "md"), timeout=240)
    assert result.ok, result.message
    assert result.production_steps_completed == 200 and Path(result.files["trajectory"]).exists()

    (script,) = [
        p
        for p in (tmp_path / "parsl").rglob("parsl.slurm.block-*")
        if not p.name.endswith((".stdout", ".stderr"))
    ]
    lines = script.read_text().splitlines()
    assert f"#SBATCH --partition={PARTITION}" in lines and "#SBATCH --time=10" in lines
    assert any(line.startswith("srun ") for line in lines)  # the slurm template's launcher
    assert _queue_empty(slurm_cluster), "shutting the executor down must end its Slurm job"


def _queue_empty(env: dict[str, str]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30)
        if queue.returncode == 0 and not queue.stdout.strip():
            return True
        time.sleep(0.5)
    return False
