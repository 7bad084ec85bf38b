"""Shared fixtures. Tests use real OpenMM systems; the bundled villin headpiece needs no network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Keep tests away from the user's real cache (downloaded PDB files, the bundled villin copy).
os.environ.setdefault("SCIAGENT_CACHE_DIR", tempfile.mkdtemp(prefix="sciagent-test-cache-"))
# A test's ./sciagent.toml is its own configuration, trusted as a user trusts a file they wrote (the
# flag's env var, sciagent.config_trust.TRUST_ENV); the tests of untrusted project files remove it.
os.environ.setdefault("SCIAGENT_TRUST_LOCAL_CONFIG", "1")
# Keep the per-user job ledgers (sciagent.compute.scheduler.ledger) away from the user's own.
os.environ.setdefault("SCIAGENT_STATE_DIR", tempfile.mkdtemp(prefix="sciagent-test-state-"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker gets a CPU set of its own.

    sciagent sizes its OpenMM threads and the throughput probe by the CPUs it may use (its affinity),
    and the processes a test starts inherit it: with disjoint sets, two workers' simulations do not
    take each other's cores, so a plan fitted to a probe's throughput still fits when its run goes.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if count <= len(cpus):
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) :: count])


@pytest.fixture(autouse=True)
def _own_job_ledgers(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own per-user state (job ledgers): one test's queued jobs do not count in another's."""
    monkeypatch.setenv("SCIAGENT_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def quick_spec_fields() -> dict:
    """Settings for a short, real villin run in implicit solvent on the CPU platform (a few seconds)."""
    return {
        "structure": "villin",
        "production_steps": 200,
        "report_interval": 50,
        "checkpoint_interval": 100,
        "platform": "CPU",
        "minimize_max_iterations": 200,
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def openai_server():
    """A scripted OpenAI-protocol server on 127.0.0.1 (see tests/openai_server.py)."""
    from openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running single-node Slurm; yields the environment its commands need (see tests/slurm_cluster.py)."""
    from slurm_cluster import running_slurm

    yield from running_slurm(tmp_path_factory)
