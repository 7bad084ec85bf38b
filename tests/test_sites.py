"""Sites: config resolution and its one-line errors, the built-in templates, ``sciagent sites``, and
the PBS Pro path for real up to the scheduler (``tests/pbs_shim`` stands in for qsub/qstat/qdel)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sciagent.compute.sites import BUILTIN_SITES, SiteUnavailable, all_sites, make_executor, resolve_site
from sciagent.config import Settings
from sciagent.errors import ConfigError
from sciagent.science.md import run_md
from sciagent.science.spec import MDSpec

if TYPE_CHECKING:
    from parsl.executors import HighThroughputExecutor

SHIM = Path(__file__).parent / "pbs_shim"
BIN = Path(sys.executable).parent
# The sites CLI as its own process; the lead's `sciagent sites` runs the same typer app.
SITES_CLI = [sys.executable, "-c", "from sciagent.cli.sites import sites_app; sites_app(prog_name='sites')"]

FAKEPBS = """
[sites.fakepbs]
kind = "parsl"
provider = "pbspro"
account = "MYPROJ"
queue = "debug"
walltime = "00:10:00"
filesystems = "home:eagle"
cpus_per_node = 2
select_options = "mem=4gb"
scheduler_options = "#PBS -l place=scatter"
workers_per_node = 1
cores_per_worker = 1
worker_init = '''
export PATH="{bin}:$PATH"
export SCIAGENT_CACHE_DIR="{cache}"
'''
"""


def settings_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str) -> Settings:
    """Settings read from a real ./sciagent.toml, as a user's would be."""
    (tmp_path / "sciagent.toml").write_text(textwrap.dedent(toml))
    monkeypatch.chdir(tmp_path)
    return Settings()


def sites_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SITES_CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def one_line_error(completed: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_polaris_and_aurora_templates_follow_the_facility_layout() -> None:
    polaris, aurora = BUILTIN_SITES["polaris"], BUILTIN_SITES["aurora"]
    assert (polaris.provider, polaris.filesystems, polaris.launcher) == ("pbspro", "home:eagle", "mpiexec")
    assert polaris.accelerators == ["0", "1", "2", "3"] and polaris.platform == "CUDA"
    assert polaris.select_options == "ngpus=4" and polaris.cpus_per_node == 64
    assert (aurora.provider, aurora.filesystems, aurora.platform) == ("pbspro", "home:flare", "OpenCL")
    assert aurora.accelerators == [f"{gpu}.{tile}" for gpu in range(6) for tile in range(2)]
    blocks = aurora.cpu_affinity.removeprefix("list:").split(":")
    assert len(blocks) == 12 and blocks[0] == "1-8,105-112" and blocks[6] == "53-60,157-164"
    assert BUILTIN_SITES["slurm"].provider == "slurm" and BUILTIN_SITES["local"].kind == "local"
    assert BUILTIN_SITES["local-parsl"].where == "this machine (Parsl workers)"


def test_toml_tables_add_sites_and_override_builtin_fields(tmp_path, monkeypatch) -> None:
    settings = settings_from(
        tmp_path,
        monkeypatch,
        """
        [sites.polaris]
        account = "MYPROJ"
        queue = "prod"

        [sites.cluster]
        kind = "parsl"
        provider = "slurm"
        partition = "gpu"
        gpus_per_node = 2
        gpu_vendor = "amd"
        """,
    )
    polaris = resolve_site("polaris", settings.sites)
    assert (polaris.account, polaris.queue, polaris.filesystems) == ("MYPROJ", "prod", "home:eagle")
    cluster = resolve_site("cluster", settings.sites)
    assert (cluster.partition, cluster.accelerators, cluster.platform) == ("gpu", ["0", "1"], "HIP")
    assert set(BUILTIN_SITES) < set(all_sites(settings.sites))


@pytest.mark.parametrize(
    ("toml", "name", "expected"),
    [
        (
            "",
            "nowhere",
            "unknown site nowhere: known sites are aurora, local, local-parsl, polaris, slurm; "
            "add [sites.nowhere] to sciagent.toml",
        ),
        ("", "aurora", "site aurora: account is not set"),
        ('[sites.gc]\nkind = "globus"\n', "gc", "site gc: endpoint_id is not set"),
    ],
)
def test_resolution_errors_name_the_site_and_the_option(tmp_path, monkeypatch, toml, name, expected) -> None:
    settings = settings_from(tmp_path, monkeypatch, toml)
    with pytest.raises(ConfigError) as caught:
        resolve_site(name, settings.sites)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert f"[sites.{name}]" in str(caught.value)


@pytest.mark.parametrize(
    ("table", "where", "says"),
    [
        ('kind = "parsl"\nprovider = "slurm"\nwalltime = "2h"', "sites.bad.walltime", "HH:MM:SS"),
        ('kind = "parsl"\nprovider = "slurm"\nqueue = "debug"', "sites.bad", "queue applies to pbspro"),
        ('kind = "parsl"\nprovider = "pbspro"\nnodes = 2', "sites.bad.nodes", "Extra inputs"),
    ],
)
def test_invalid_site_tables_are_one_line_config_errors(tmp_path, table, where, says) -> None:
    (tmp_path / "sciagent.toml").write_text(f"[sites.bad]\n{table}\n")
    completed = sites_cli("list", cwd=tmp_path)
    assert completed.returncode == 2
    line = one_line_error(completed)
    assert where in line and says in line


def test_sites_list_shows_every_site_and_no_secrets(tmp_path) -> None:
    (tmp_path / "sciagent.toml").write_text(
        '[sites.polaris]\naccount = "MYPROJ"\nworker_init = "export HF_TOKEN=hf_s3cr3t"\n'
        '[sites.gc]\nkind = "globus"\nendpoint_id = "5b0f2a3e-0000-4000-8000-000000000001"\n'
    )
    completed = sites_cli("list", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    for word in ("aurora", "local-parsl", "polaris", "slurm", "pbspro", "built-in + config", "5b0f2a3e"):
        assert word in completed.stdout
    assert "s3cr3t" not in completed.stdout + completed.stderr


def test_a_scheduler_missing_from_path_is_a_one_line_unreachable_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no qsub
    settings = settings_from(
        tmp_path, monkeypatch, '[sites.fakepbs]\nkind = "parsl"\nprovider = "pbspro"\naccount = "A"\n'
    )
    with pytest.raises(SiteUnavailable, match=r"^site slurm: `sbatch` is not on PATH"):
        make_executor("slurm", settings.sites, run_dir=tmp_path / "parsl")
    with pytest.raises(SiteUnavailable, match=r"^site fakepbs: `qsub` is not on PATH"):
        make_executor("fakepbs", settings.sites, run_dir=tmp_path / "parsl")
    completed = sites_cli("check", "slurm", cwd=tmp_path, env=os.environ | {"PATH": str(tmp_path)})
    assert completed.returncode == 1
    assert "site slurm: `sbatch` is not on PATH" in one_line_error(completed)


def test_check_of_a_misconfigured_site_exits_2(tmp_path) -> None:
    completed = sites_cli("check", "polaris", cwd=tmp_path)
    assert completed.returncode == 2
    assert "site polaris: account is not set" in one_line_error(completed)
    completed = sites_cli("check", "nowhere", cwd=tmp_path)
    assert completed.returncode == 2
    assert "unknown site nowhere" in one_line_error(completed)


@pytest.mark.hpc
@pytest.mark.parametrize("name", ["local", "local-parsl"])
def test_sites_check_runs_a_real_round_trip(tmp_path, name) -> None:
    completed = sites_cli("check", name, "--timeout", "120", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    report = dict(line.split(":", 1) for line in completed.stdout.splitlines() if ":" in line)
    assert report["site"].strip() == name
    assert report["python"].strip() == ".".join(map(str, sys.version_info[:3]))
    assert report["openmm"].strip().startswith("8.") and "CPU" in report["platforms"]
    assert report["round trip"].strip().endswith(" ms")
    assert report["encryption"].strip().startswith("CurveZMQ" if name == "local-parsl" else "-")


@pytest.mark.hpc
def test_check_of_a_site_whose_scheduler_refuses_the_job_exits_1(tmp_path) -> None:
    (tmp_path / "sciagent.toml").write_text(
        '[sites.fakepbs]\nkind = "parsl"\nprovider = "pbspro"\naccount = "A"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PBS_SHIM_DIR"}  # qsub: cannot connect to server
    env["PATH"] = f"{SHIM}{os.pathsep}{env['PATH']}"
    completed = sites_cli("check", "fakepbs", "--timeout", "120", cwd=tmp_path, env=env)
    assert completed.returncode == 1
    line = one_line_error(completed)
    assert line.startswith("error: site fakepbs: its batch job could not be started: Failed to start block")
    assert "cannot connect to server" in line


def test_pbs_shim_speaks_pbs_pro_to_parsls_own_provider(tmp_path, monkeypatch) -> None:
    """Parsl's PBSProProvider reads the shim's ``qstat -x -f -F json`` (Q -> R -> F); qdel ends a job."""
    from parsl.jobs.states import JobState
    from parsl.providers import PBSProProvider

    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    monkeypatch.setenv("PBS_SHIM_QUEUE_S", "1")
    provider = PBSProProvider(account="MYPROJ", queue="debug", walltime="00:01:00")
    provider.script_dir = str(tmp_path)

    def record(job_id: str) -> dict:
        return json.loads((tmp_path / "pbs" / "jobs" / f"{job_id.split('.')[0]}.json").read_text())

    long_job, short_job = provider.submit("sleep 60", 1), provider.submit("sleep 1", 1)
    assert long_job.endswith(".pbs-shim")
    assert provider.status([long_job])[0].state == JobState.PENDING
    assert _wait_for(lambda: record(long_job)["state"] == "R")
    assert provider.status([long_job])[0].state == JobState.RUNNING
    assert _wait_for(lambda: record(short_job)["state"] == "F")
    assert provider.status([short_job])[0].state == JobState.COMPLETED  # from qstat -x: F
    assert record(short_job)["Exit_status"] == 0
    assert provider.cancel([long_job]) == [True]
    assert _wait_for(lambda: record(long_job)["state"] == "F")
    assert record(long_job)["Exit_status"] == 256 + 15  # killed by SIGTERM, as PBS reports it
    assert _group_gone(record(long_job)["pgid"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "polaris",
            ["#PBS -l select=2:ncpus=64:ngpus=4", "#PBS -l filesystems=home:eagle", "#PBS -l place=scatter"],
        ),
        (
            "aurora",
            [
                "#PBS -l select=2:ncpus=208",
                "#PBS -l filesystems=home:flare",
                "export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE",
            ],
        ),
    ],
)
def test_facility_sites_submit_the_job_the_facility_expects(tmp_path, monkeypatch, name, expected) -> None:
    """The provider a facility site builds, submitting through the shim (the job never leaves the queue)."""
    from sciagent.compute import _site_builders

    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    monkeypatch.setenv("PBS_SHIM_QUEUE_S", "600")
    settings = settings_from(
        tmp_path, monkeypatch, f'[sites.{name}]\naccount = "MYPROJ"\nnodes_per_block = 2\n'
    )
    site = resolve_site(name, settings.sites)
    provider = _site_builders._pbspro_provider(site, _site_builders._launcher(site))
    provider.script_dir = str(tmp_path)
    job_id = provider.submit("process_worker_pool.py", 1)
    try:
        job = json.loads((tmp_path / "pbs" / "jobs" / f"{job_id.split('.')[0]}.json").read_text())
        lines = Path(job["script"]).read_text().splitlines()
        for line in [*expected, "#PBS -l walltime=01:00:00"]:
            assert line in lines, line
        assert any(line.startswith("mpiexec --cpu-bind none") and "--ppn 1" in line for line in lines)
        assert (job["queue"], job["account"]) == ("debug", "MYPROJ")
    finally:
        assert provider.cancel([job_id]) == [True]


def test_make_executor_builds_local_and_globus_executors(tmp_path, monkeypatch) -> None:
    from sciagent.compute.base import Executor
    from sciagent.compute.globus_executor import GlobusExecutor
    from sciagent.compute.local import LocalExecutor

    toml = '[sites.gc]\nkind = "globus"\nendpoint_id = "5b0f2a3e-0000-4000-8000-000000000001"\n'
    settings = settings_from(tmp_path, monkeypatch, toml)
    with make_executor("local", settings.sites, run_dir=tmp_path) as local:
        assert isinstance(local, LocalExecutor) and isinstance(local, Executor) and local.name == "local"
    remote = make_executor("gc", settings.sites, run_dir=tmp_path)  # builds nothing remote until a submit
    assert isinstance(remote, GlobusExecutor) and remote.endpoint_id.startswith("5b0f2a3e")
    remote.shutdown()


@pytest.mark.hpc
def test_md_runs_through_a_pbspro_site_and_the_job_script_asks_for_the_site(
    tmp_path, monkeypatch, quick_spec_fields
) -> None:
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    cache = os.environ["SCIAGENT_CACHE_DIR"]
    settings = settings_from(tmp_path, monkeypatch, FAKEPBS.format(bin=BIN, cache=cache))
    spec = MDSpec(**quick_spec_fields)
    with make_executor("fakepbs", settings.sites, run_dir=tmp_path / "parsl") as executor:
        result = executor.result(executor.submit(run_md, spec, tmp_path / "md"), timeout=300)
    assert result.ok, result.message
    assert result.production_steps_completed == 200 and Path(result.files["trajectory"]).exists()

    (job,) = [json.loads(path.read_text()) for path in (tmp_path / "pbs" / "jobs").glob("*.json")]
    script = Path(job["script"]).read_text()
    for line in (
        "#PBS -l select=1:ncpus=2:mem=4gb",
        "#PBS -l walltime=00:10:00",
        "#PBS -l filesystems=home:eagle",
        "#PBS -l place=scatter",
        f'export PATH="{BIN}:$PATH"',
    ):
        assert line in script.splitlines(), line
    assert "-q debug" in job["submit_args"] and "-A MYPROJ" in job["submit_args"]
    assert (job["queue"], job["account"]) == ("debug", "MYPROJ")
    assert job["submitted_script"].startswith(str(tmp_path / "parsl"))  # Parsl wrote it in its run dir
    assert _wait_for(
        lambda: json.loads(next((tmp_path / "pbs" / "jobs").glob("*.json")).read_text())["state"] == "F"
    )
    assert _group_gone(job["pgid"])  # shutdown qdel'd the block: no worker is left behind


def _built_htex(name: str, sites) -> HighThroughputExecutor:
    """The HTEX the site's executor would run on, built as ``parsl_executor`` builds it (not started)."""
    from sciagent.compute import _site_builders as builders

    site = resolve_site(name, sites)
    build = {"local": builders._local_provider, "pbspro": builders._pbspro_provider}
    provider = build.get(site.provider, builders._slurm_provider)(site, builders._launcher(site))
    return builders._htex(name, site, provider, builders.workers_per_node(site))


@pytest.mark.parametrize(("name", "encrypted"), [("fakepbs", True), ("slurm", True), ("local-parsl", True)])
def test_parsl_sites_encrypt_their_htex_traffic(tmp_path, monkeypatch, name, encrypted) -> None:
    """Loopback too: any user of the machine reaches 127.0.0.1 (tests/test_attacks_loopback.py)."""
    settings = settings_from(tmp_path, monkeypatch, FAKEPBS.format(bin=BIN, cache=tmp_path))
    htex = _built_htex(name, settings.sites)
    assert htex.encrypted is encrypted
    assert htex.address == ("127.0.0.1" if name == "local-parsl" else None)


def test_aurora_workers_connect_over_hsn0_and_polaris_over_any_address(tmp_path, monkeypatch) -> None:
    """ALCF's user guides: Aurora's configs set ``address_by_interface('hsn0')``, Polaris' no address."""
    polaris, aurora = BUILTIN_SITES["polaris"], BUILTIN_SITES["aurora"]
    assert (aurora.interface, aurora.address, aurora.encrypts) == ("hsn0", None, True)
    assert (polaris.interface, polaris.address, polaris.encrypts) == (None, None, True)
    settings = settings_from(
        tmp_path,
        monkeypatch,
        '[sites.aurora]\naccount = "A"\ninterface = "lo"\n[sites.polaris]\naccount = "A"\n'
        '[sites.pinned]\nkind = "parsl"\nprovider = "slurm"\ninterface = "lo"\naddress = "10.1.2.3"\n',
    )
    aurora_htex = _built_htex("aurora", settings.sites)  # lo stands in for hsn0 on this host
    assert (aurora_htex.address, aurora_htex.all_addresses) == ("127.0.0.1", {"127.0.0.1"})
    assert _built_htex("polaris", settings.sites).address is None  # Parsl offers every address here
    assert _built_htex("pinned", settings.sites).address == "10.1.2.3"  # address wins over interface


def test_a_missing_interface_is_a_one_line_config_error(tmp_path, monkeypatch) -> None:
    here = [interface for _, interface in socket.if_nameindex()]
    if "hsn0" in here:
        pytest.skip("this host has an hsn0")
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    settings = settings_from(tmp_path, monkeypatch, '[sites.aurora]\naccount = "MYPROJ"\n')
    with pytest.raises(ConfigError) as caught:
        make_executor("aurora", settings.sites, run_dir=tmp_path / "parsl")
    message = str(caught.value)
    assert message.startswith("site aurora: network interface hsn0 does not exist on this host")
    assert f"(it has {', '.join(here)})" in message and "[sites.aurora]" in message and "\n" not in message
    assert not (tmp_path / "pbs" / "jobs").exists() or not list((tmp_path / "pbs" / "jobs").iterdir())


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('kind = "parsl"\nprovider = "local"\ninterface = "eth0"', "interface applies to pbspro and slurm"),
        ('kind = "local"\naddress = "10.0.0.1"', "address applies to pbspro and slurm"),
        ('kind = "local"\nencrypted = true', "encrypted applies to parsl sites"),
    ],
)
def test_network_options_fit_the_site(tmp_path, table, says) -> None:
    (tmp_path / "sciagent.toml").write_text(f"[sites.bad]\n{table}\n")
    completed = sites_cli("list", cwd=tmp_path)
    assert completed.returncode == 2
    assert says in one_line_error(completed)


def test_without_curve_a_batch_site_fails_in_one_line_unless_encryption_is_off(
    tmp_path, monkeypatch, caplog
) -> None:
    import zmq

    from sciagent.compute import _site_builders

    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    monkeypatch.setattr(_site_builders, "_WARNED_UNENCRYPTED", set())
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    toml = FAKEPBS.format(bin=BIN, cache=tmp_path) + '\n[sites.plain]\nkind = "parsl"\nprovider = "slurm"\n'
    settings = settings_from(tmp_path, monkeypatch, toml + "encrypted = false\n")
    with pytest.raises(SiteUnavailable) as caught:
        make_executor("fakepbs", settings.sites, run_dir=tmp_path / "parsl")
    message = str(caught.value)
    assert message.startswith("site fakepbs: this pyzmq's libzmq") and "without CURVE" in message
    assert "pip install --force-reinstall pyzmq" in message and "encrypted = false" in message
    assert "\n" not in message
    with caplog.at_level("WARNING", logger="sciagent.compute._site_builders"):
        assert _built_htex("local-parsl", settings.sites).encrypted is False  # runs, and says why
        assert _built_htex("plain", settings.sites).encrypted is False
        assert _built_htex("plain", settings.sites).encrypted is False
    warnings = [r.getMessage() for r in caplog.records if "encrypted = false" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("site plain: encrypted = false")
    (local,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("site local-parsl")]
    assert "without CURVE, so its interchange is unencrypted and any user of this machine" in local


@pytest.mark.hpc
def test_an_encrypted_htex_runs_a_task_over_curvezmq(tmp_path, monkeypatch) -> None:
    """A local site with ``encrypted = true``: the real interchange and workers, over CurveZMQ."""
    import operator

    import zmq

    from sciagent.compute import _site_builders

    assert zmq.has("curve")
    built: list[HighThroughputExecutor] = []

    def keep(*args, **kwargs) -> HighThroughputExecutor:
        built.append(real_htex(*args, **kwargs))
        return built[-1]

    real_htex = _site_builders._htex
    monkeypatch.setattr(_site_builders, "_htex", keep)
    toml = '[sites.curve]\nkind = "parsl"\nprovider = "local"\nencrypted = true\nworkers_per_node = 1\n'
    settings = settings_from(tmp_path, monkeypatch, toml)
    with make_executor("curve", settings.sites, run_dir=tmp_path / "parsl") as executor:
        assert executor.result(executor.submit(operator.mul, 6, 7), timeout=120) == 42
        (htex,) = built
        assert htex.encrypted and htex.cert_dir is not None
        certificates = Path(htex.cert_dir)
        assert {"server.key_secret", "client.key_secret"} <= {path.name for path in certificates.iterdir()}
        assert certificates.stat().st_mode & 0o777 == 0o700


def _wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _group_gone(pgid: int) -> bool:
    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    return _wait_for(gone, timeout=15)
