"""A real single-node Slurm for tests (slurmctld + slurmd in a temp dir), behind conftest's ``slurm_cluster``.

No munge: ``AuthType=auth/none`` and ``CredType=cred/none``. Skipped, with the reason, only where the
Slurm daemons are not installed (``.ci/run`` installs ``slurm-wlm``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PARTITION = "debug"
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _daemon(name: str) -> str | None:
    return shutil.which(name, path=_SBIN_PATH)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _write_conf(root: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    user = getpass.getuser()
    ctld_port, slurmd_port = _free_ports(2)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=sciagent-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/none
CredType=cred/none
SlurmUser={user}
SlurmdUser={user}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def _stop(root: Path, env: dict[str, str]) -> None:
    """Cancel what is left in the queue, then stop slurmd and slurmctld by their pid files."""
    subprocess.run(["scancel", "--partition", PARTITION], env=env, capture_output=True, timeout=30)
    for name in ("slurmd", "slurmctld"):
        pid_file = root / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def running_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running single-node Slurm; yields the environment its commands need (``SLURM_CONF``)."""
    missing = [name for name in ("slurmctld", "slurmd") if _daemon(name) is None]
    if missing or shutil.which("sbatch") is None:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing) or 'sbatch'} not found): apt-get install slurm-wlm"
        )
    root = tmp_path_factory.mktemp("slurm")
    conf = _write_conf(root)
    env = os.environ | {"SLURM_CONF": str(conf)}
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([_daemon(daemon), "-f", str(conf)], env=env, check=True, timeout=30)
        _wait_until_idle(root, env)
        yield env
    finally:
        _stop(root, env)


def _wait_until_idle(root: Path, env: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30
        )
        if state.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join((root / "log" / f"{name}.log").read_text()[-2000:] for name in ("slurmctld", "slurmd"))
    raise RuntimeError(f"the test Slurm did not become idle within 60 s:\n{logs}")
