"""One batch job's node: how it is split between the model server and the simulations, and when it ends.

The split is checked as the environment each side gets on NVIDIA, Intel (tiles) and AMD sites and on
CPU. The end of the allocation is read from a real Slurm job (the ``slurm_cluster`` fixture) and from
a job of the PBS stand-in (``tests/pbs_shim``), each by a ``python -c`` running inside the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sciagent.compute.sites import BUILTIN_SITES, SiteConfig
from sciagent.errors import UserError
from sciagent.workflows.jobs.devices import pin, pinning_preexec, split_node
from sciagent.workflows.jobs.spec import ModelInJob
from sciagent.workflows.jobs.walltime import (
    current_job_id,
    job_end_time,
    pre_limit_signal,
    slurm_signal_option,
    stop_margin_s,
)

SHIM = Path(__file__).parent / "pbs_shim"
POLARIS, AURORA = BUILTIN_SITES["polaris"], BUILTIN_SITES["aurora"]
AMD = SiteConfig(kind="parsl", provider="slurm", gpus_per_node=8, gpu_vendor="amd")
CPU_SITE = BUILTIN_SITES["slurm"]
JOB_CPUS = set(range(8))
# What the job runs: the supervisor's own call, its answer written where the test can read it.
WRITE_END = "import sys; from sciagent.workflows.jobs.walltime import job_end_time; open(sys.argv[1], 'w').write(repr(job_end_time()))"  # noqa: E501


def vllm(devices: int) -> ModelInJob:
    return ModelInJob(backend="vllm", model="meta-llama/Meta-Llama-3.1-8B-Instruct", devices=devices)


def test_nvidia_split_pins_the_model_to_the_first_gpus_and_simulations_to_the_rest() -> None:
    split = split_node(POLARIS, vllm(1), cpus=JOB_CPUS)
    assert split.model_env == {"CUDA_VISIBLE_DEVICES": "0"} and split.model_devices == ("0",)
    assert split.simulation_devices == ("1", "2", "3") and split.model_threads is None
    assert split.model_cpus == frozenset() and split.simulation_cpus == frozenset(JOB_CPUS)
    site = split.simulation_site
    assert (site.kind, site.provider, site.accelerators) == ("parsl", "local", ["1", "2", "3"])
    assert site.gpu_vendor == "nvidia" and site.platform == "CUDA"
    two = split_node(POLARIS, vllm(2), cpus=JOB_CPUS)
    assert two.model_env == {"CUDA_VISIBLE_DEVICES": "0,1"} and two.simulation_site.accelerators == ["2", "3"]


def test_intel_tiles_are_flat_indices_for_vllm_and_tile_ids_for_the_workers() -> None:
    """vLLM runs in FLAT mode (one device per tile); the workers keep the site's COMPOSITE tile ids."""
    split = split_node(AURORA, vllm(2), cpus=JOB_CPUS)
    assert split.model_devices == ("0.0", "0.1")
    assert split.model_env == {"ZE_FLAT_DEVICE_HIERARCHY": "FLAT", "ZE_AFFINITY_MASK": "0,1"}
    assert split.simulation_devices == tuple(f"{g}.{t}" for g in range(1, 6) for t in range(2))
    site = split.simulation_site
    assert site.platform == "OpenCL" and site.accelerators == list(split.simulation_devices)
    assert "export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE" in site.effective_worker_init()
    three = split_node(AURORA, vllm(3), cpus=JOB_CPUS)  # card 1, tile 0 is flat device 2
    assert three.model_env["ZE_AFFINITY_MASK"] == "0,1,2" and three.simulation_devices[0] == "1.1"
    plain = SiteConfig(kind="parsl", provider="pbspro", gpus_per_node=4, gpu_vendor="intel")
    assert split_node(plain, vllm(1), cpus=JOB_CPUS).model_env == {"ZE_AFFINITY_MASK": "0"}


def test_amd_split_uses_rocr_visible_devices() -> None:
    split = split_node(AMD, vllm(2), cpus=JOB_CPUS)
    assert split.model_env == {"ROCR_VISIBLE_DEVICES": "0,1"}
    assert split.simulation_site.accelerators == [str(i) for i in range(2, 8)]
    assert split.simulation_site.platform == "HIP"


def test_llama_cpp_takes_cpu_threads_and_leaves_every_gpu_to_simulations() -> None:
    on_cpu = split_node(CPU_SITE, ModelInJob(backend="llama-cpp", devices=3), cpus={4, 5, 6, 7, 9})
    assert on_cpu.model_cpus == frozenset({4, 5, 6}) and on_cpu.model_threads == 3
    assert on_cpu.simulation_cpus == frozenset({7, 9}) and on_cpu.model_env == {}
    site = on_cpu.simulation_site
    assert (site.kind, site.workers_per_node, site.cores_per_worker) == ("local", 1, 2)
    on_gpu = split_node(POLARIS, ModelInJob(backend="llama-cpp", devices=2), cpus=JOB_CPUS)
    assert on_gpu.simulation_devices == ("0", "1", "2", "3") and on_gpu.model_env == {}
    assert on_gpu.model_cpus == frozenset({0, 1}) and on_gpu.simulation_cpus == frozenset(range(2, 8))


def test_no_model_gives_the_simulations_everything_and_cpus_default_to_the_affinity() -> None:
    gpu = split_node(POLARIS, None, cpus=JOB_CPUS)
    assert gpu.model_env == {} and gpu.simulation_site.accelerators == ["0", "1", "2", "3"]
    mine = os.sched_getaffinity(0)  # inside a batch job: the job's CPUs, not os.cpu_count()
    cpu = split_node(CPU_SITE, None)
    assert cpu.simulation_cpus == frozenset(mine) and cpu.simulation_site.cores_per_worker == len(mine)


@pytest.mark.parametrize(
    ("site", "model", "message"),
    [
        (POLARIS, vllm(4), r"^--llm-devices 4 gives the model every GPU of the job \(4\) .*: lower --llm"),
        (POLARIS, vllm(5), r"^--llm-devices 5 asks for more GPUs than the job has \(4\): lower --llm"),
        (CPU_SITE, ModelInJob(backend="llama-cpp", devices=8), r"every CPU of the job \(8\).*: lower --llm"),
        (CPU_SITE, ModelInJob(backend="llama-cpp", devices=9), r"more CPUs than the job has \(8\)"),
        (CPU_SITE, vllm(1), r"^vllm needs GPUs and this site lists none .*: use --llm-in-job llama-cpp"),
    ],
)
def test_bad_splits_are_refused_in_one_line(site: SiteConfig, model: ModelInJob, message: str) -> None:
    with pytest.raises(UserError, match=message) as caught:
        split_node(site, model, cpus=JOB_CPUS)
    assert "\n" not in str(caught.value)


def test_pinning_a_child_and_this_process() -> None:
    mine = sorted(os.sched_getaffinity(0))
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        preexec_fn=pinning_preexec({mine[-1]}), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert child.stdout.strip() == str([mine[-1]])
    try:
        pin({mine[0]})
        assert os.sched_getaffinity(0) == {mine[0]}
    finally:
        pin(mine)


def test_stop_margin_and_pre_limit_signals() -> None:
    assert stop_margin_s(300, 45) == 390  # one checkpoint interval plus twice the time to stop
    assert stop_margin_s(5, 10) == 60  # never under the scheduler's own early-signal slack
    assert stop_margin_s(300, 45, configured=120) == 120
    assert pre_limit_signal("slurm").name == "SIGUSR1" and pre_limit_signal("pbspro").name == "SIGTERM"
    assert slurm_signal_option(390.4) == "--signal=B:USR1@390"


def test_outside_a_batch_job_there_is_no_end(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SLURM_JOB_ID", "PBS_JOBID"):
        monkeypatch.delenv(variable, raising=False)
    assert job_end_time() is None and current_job_id() is None
    assert current_job_id({"PBS_JOBID": "12.pbs01"}) == "12.pbs01"


def _wait_for(path: Path, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{path} was not written within {timeout_s} s")


@pytest.mark.hpc
@pytest.mark.timeout(180)
@pytest.mark.xdist_group("slurm")
def test_slurm_job_reads_its_end_from_the_scheduler(slurm_cluster, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    out = tmp_path / "end.txt"
    command = f'{sys.executable} -c "{WRITE_END}" {out}; sleep 120'
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--time=5", "-o", str(tmp_path / "job.log"), "--wrap", command],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    try:
        written = float(_wait_for(out))
        shown = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%S|%e"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    start, end = (time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S")) for t in shown.split("|"))
    assert written == end and end - start == 300, (shown, written)
    assert abs(written - (time.time() + 300)) < 60  # five minutes after it started, which was just now
    unlimited = tmp_path / "unlimited.txt"  # the partition's MaxTime is INFINITE: no end to read
    subprocess.run(
        ["sbatch", "-o", "/dev/null", "--wrap", f'{sys.executable} -c "{WRITE_END}" {unlimited}'],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert _wait_for(unlimited) == "None"


@pytest.mark.timeout(120)
def test_pbs_job_reads_its_end_from_qstat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    out = tmp_path / "end.txt"
    script = tmp_path / "job.sh"
    script.write_text(
        f'#!/bin/bash\n#PBS -l walltime=00:05:00\n{sys.executable} -c "{WRITE_END}" {out}\nsleep 60\n'
    )
    job_id = subprocess.run(
        ["qsub", "-V", str(script)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    try:
        written = float(_wait_for(out))
        record = json.loads((tmp_path / "pbs" / "jobs" / f"{job_id.split('.')[0]}.json").read_text())
    finally:
        subprocess.run(["qdel", job_id], capture_output=True, timeout=30)
    assert abs(written - (record["stime"] + 300)) < 1.0  # qstat prints stime to the second
    assert abs(written - (time.time() + 300)) < 60
