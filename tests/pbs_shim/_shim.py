"""Shared state of the PBS shim (``qsub``, ``qstat``, ``qdel``, ``qhold``, ``qrls``, ``pbsnodes`` next
to this file): the PBS Pro boundary stand-in.

Everything up to these commands is real code: Parsl's ``PBSProProvider`` (``qsub``, ``qstat -x -f
-F json``, ``qdel``), psij's PBS executor (the same three) and sciagent's scheduler tools (``qstat -Q
-f -F json``, ``pbsnodes -a -F json``, ``qstat -f -F json``, ``qhold``, ``qrls``); from here on the
"cluster" is this machine. The server has the queues in ``QUEUES`` and two nodes: this host, which
runs every job (``job-busy`` while one runs, as if each job had it to itself), and an offline one.
A job is one JSON file under ``$PBS_SHIM_DIR/jobs``; a detached runner
process (``python3 _shim.py run SEQ``) moves it Q -> R -> F: it waits ``PBS_SHIM_QUEUE_S`` seconds
(default 0.5) in the queue (held jobs, state H, wait until ``qrls`` and then that long again),
runs the script with bash in its own process group and a PBS-like
environment (not the submitter's, unless ``qsub -V``), enforces the walltime, kills whatever the
job left behind, and records ``Exit_status`` as PBS does (the script's code; 256 + N when killed by
signal N; -29 past the walltime). ``qdel`` marks the job E and SIGTERMs its group (SIGKILL after 3 s).

Only the standard library: the shim must run with any ``python3``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SERVER = "pbs-shim"
KILL_GRACE_S = 3.0
EXIT_WALLTIME = -29  # PBS Pro's JOB_EXEC_KILL_WALLTIME
EXIT_UNKNOWN_JOB = 153  # PBSE_UNKJOBID, as qstat/qdel exit with
EXIT_JOB_FINISHED = 35  # qstat without -x (and qdel) on a finished job: "Job has finished"
SUBSTATE = {"Q": 10, "R": 42, "E": 51, "F": 92}
EXIT_BAD_STATE = 170  # PBSE_BADSTATE: qhold on a running job
BASE_ENV = ("HOME", "USER", "LOGNAME", "LANG", "TZ")  # what a job gets from the submitter without -V
VERSION = "2022.1.shim"
DEFAULT_QUEUE = "workq"
# name -> (enabled and started, resources_max): a default queue, a limited one and one stopped for maintenance
QUEUES: dict[str, tuple[bool, dict]] = {
    "workq": (True, {}),
    "debug": (True, {"walltime": "01:00:00", "nodect": 2}),
    "maint": (False, {}),
}
OFFLINE_NODE = "shim-offline-1"


def state_dir() -> Path:
    """``$PBS_SHIM_DIR``, created if needed; without it there is no "server" to talk to."""
    where = os.environ.get("PBS_SHIM_DIR")
    if not where:
        sys.stderr.write(f"cannot connect to server {SERVER}: PBS_SHIM_DIR is not set\n")
        raise SystemExit(1)
    path = Path(where)
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialise every read-modify-write of job records (qsub, qstat, qdel and runners race)."""
    with open(root / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def job_path(root: Path, seq: int) -> Path:
    return root / "jobs" / f"{seq}.json"


def load(root: Path, seq: int) -> dict | None:
    path = job_path(root, seq)
    return json.loads(path.read_text()) if path.exists() else None


def save(root: Path, job: dict) -> None:
    path = job_path(root, job["seq"])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(job, indent=1))
    partial.replace(path)


def next_seq(root: Path) -> int:
    """The next job number (call with the lock held)."""
    counter = root / "counter"
    seq = int(counter.read_text()) + 1 if counter.exists() else 1000
    counter.write_text(str(seq))
    return seq


def seq_of(job_id: str) -> int | None:
    """``1234.pbs-shim`` or ``1234`` -> 1234; anything else -> None."""
    head, _, server = job_id.partition(".")
    return int(head) if head.isdigit() and server in ("", SERVER) else None


def all_seqs(root: Path) -> list[int]:
    return sorted(int(p.stem) for p in (root / "jobs").glob("*.json"))


def all_jobs(root: Path) -> list[dict]:
    """Every job record (call with the lock held)."""
    return [job for job in (load(root, seq) for seq in all_seqs(root)) if job is not None]


def walltime_seconds(text: str) -> int:
    """``HH:MM:SS``, ``MM:SS`` or seconds; ValueError otherwise."""
    parts = [int(part) for part in text.split(":")]
    if not 1 <= len(parts) <= 3 or any(part < 0 for part in parts):
        raise ValueError(text)
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def hostname() -> str:
    return socket.gethostname().split(".")[0]


def ctime(stamp: float | None) -> str | None:
    return time.ctime(stamp) if stamp else None


def header() -> dict:
    """What every ``-F json`` report of PBS Pro starts with."""
    return {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER}


def queue_refusal(queue: str, walltime_s: int, nodect: int) -> str | None:
    """Why the server refuses a job for ``queue`` (qsub's message), or None."""
    if queue not in QUEUES:
        return "Unknown queue"
    started, limits = QUEUES[queue]
    if not started:
        return "Queue is not enabled"
    too_long = "walltime" in limits and walltime_s > walltime_seconds(limits["walltime"])
    if too_long or nodect > limits.get("nodect", nodect):
        return "Job exceeds queue resource limits"
    return None


def queues_report(jobs: list[dict]) -> dict:
    """``qstat -Q -f -F json``: each queue's type, job counts, limits and whether it is up."""
    queues = {}
    for name, (started, limits) in QUEUES.items():
        states = [job["state"] for job in jobs if job["queue"] == name and job["state"] != "F"]
        counts = {
            word: states.count(word[0])
            for word in ("Transit", "Queued", "Held", "Waiting", "Running", "Exiting", "Begun")
        }
        queues[name] = {
            "queue_type": "Execution",
            "total_jobs": len(states),
            "state_count": "".join(f"{word}:{count} " for word, count in counts.items()),
            **({"resources_max": limits} if limits else {}),
            "enabled": str(started),
            "started": str(started),
        }
    return header() | {"Queue": queues}


def nodes_report(jobs: list[dict]) -> dict:
    """``pbsnodes -a -F json``: this host (free, or job-busy while a job runs) and an offline node."""
    running = [job["id"] for job in jobs if job["state"] in ("R", "E")]
    cpus = os.cpu_count() or 1

    def node(name: str, state: str, **extra: object) -> dict:
        return {
            "Mom": name,
            "Port": 15002,
            "pbs_version": VERSION,
            "ntype": "PBS",
            "state": state,
            "pcpus": cpus,
            "resources_available": {"arch": "linux", "host": name, "ncpus": cpus, "vnode": name},
            "resources_assigned": {"ncpus": cpus if running and state != "offline" else 0},
            "resv_enable": "True",
            "sharing": "default_shared",
            **extra,
        }

    host = hostname()
    here = node(host, "job-busy" if running else "free", **({"jobs": running} if running else {}))
    offline = node(OFFLINE_NODE, "offline", comment="taken offline for maintenance")
    return header() | {"nodes": {host: here, OFFLINE_NODE: offline}}


def set_hold(command: str, ids: list[str]) -> int:
    """``qhold`` (Q -> H, a user hold) or ``qrls`` (H -> Q) each job in ``ids``; the exit status.

    As PBS Pro: a running job cannot be held without checkpointing (the shim has none), releasing
    a job that is not held changes nothing, and an unknown or finished job is an error.
    """
    if not ids:
        sys.stderr.write(f"usage: {command} job_identifier ...\n")
        return 2
    root = state_dir()
    code = 0
    with locked(root):
        for arg in ids:
            seq = seq_of(arg)
            job = load(root, seq) if seq is not None else None
            if job is None:
                sys.stderr.write(f"{command}: Unknown Job Id {arg}\n")
                code = EXIT_UNKNOWN_JOB
            elif job["state"] == "F":
                sys.stderr.write(f"{command}: Job has finished {job['id']}\n")
                code = EXIT_JOB_FINISHED
            elif command == "qhold" and job["state"] not in ("Q", "H"):
                sys.stderr.write(f"{command}: Request invalid for state of job {job['id']}\n")
                code = EXIT_BAD_STATE
            elif command == "qhold" or job["state"] == "H":
                held = command == "qhold"
                job.update(state="H" if held else "Q", Hold_Types="u" if held else "n")
                save(root, job)
    return code


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _job_env(job: dict) -> dict[str, str]:
    """The environment PBS gives a job: a login-like base plus PBS_* (or the submitter's with -V)."""
    if job["export_all"]:
        env = dict(job["submit_env"])
    else:
        env = {k: v for k, v in job["submit_env"].items() if k in BASE_ENV}
        env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        env["SHELL"] = "/bin/bash"
    env.update(job["variables"])
    env.update(
        PBS_JOBID=job["id"],
        PBS_JOBNAME=job["name"],
        PBS_QUEUE=job["queue"],
        PBS_O_WORKDIR=job["submit_dir"],
        PBS_O_HOST=hostname(),
        PBS_NODEFILE=job["nodefile"],
        PBS_ENVIRONMENT="PBS_BATCH",
    )
    return env


def _start(job: dict) -> subprocess.Popen:
    """Q -> R: start the job's script (call with the lock held, and save ``job`` after)."""
    Path(job["nodefile"]).write_text(f"{hostname()}\n" * job["nodect"])
    with open(job["stdout"], "ab") as out, open(job["stderr"], "ab") as err:
        proc = subprocess.Popen(
            ["/bin/bash", job["script"]],
            cwd=job["jobdir"],
            env=_job_env(job),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: qdel and the walltime end all of it
        )
    job.update(state="R", stime=time.time(), pgid=proc.pid, session_id=proc.pid)
    return proc


def _watch(root: Path, seq: int, proc: subprocess.Popen) -> tuple[int, str | None]:
    """Wait for the job; enforce the walltime and a pending qdel. Returns (Exit_status, comment)."""
    job = load(root, seq) or {}
    deadline = job["stime"] + job["walltime_s"]
    term_sent_at: float | None = None
    comment = None
    while proc.poll() is None:
        time.sleep(0.2)
        now = time.time()
        with locked(root):
            job = load(root, seq) or {}
        if term_sent_at is None and now > deadline:
            comment, term_sent_at = "job exceeded its walltime", now
            signal_group(proc.pid, signal.SIGTERM)
        elif term_sent_at is None and job.get("deleted_at"):
            term_sent_at = job["deleted_at"]
        if term_sent_at is not None and now > term_sent_at + KILL_GRACE_S:
            signal_group(proc.pid, signal.SIGKILL)
    code = proc.returncode
    status = 256 + (-code) if code < 0 else code  # PBS reports a signal death as 256 + signal
    if comment:
        status = EXIT_WALLTIME
    elif job.get("deleted_at"):
        comment = "job deleted by qdel"
    return status, comment


def _queued(root: Path, seq: int) -> subprocess.Popen | None:
    """Wait in the queue (and while held), then start the job; None if it was deleted first."""
    delay = float(os.environ.get("PBS_SHIM_QUEUE_S", "0.5"))
    eligible_at = time.time() + delay
    while True:
        time.sleep(0.1)
        with locked(root):
            job = load(root, seq) or {}
            if job.get("state") == "H":  # a released job waits one more scheduling cycle
                eligible_at = time.time() + delay
            elif job.get("state") != "Q":
                return None
            elif time.time() >= eligible_at:
                proc = _start(job)
                save(root, job)
                return proc


def run_job(root: Path, seq: int) -> None:
    """The runner's life: queued delay, run, watch, clean up, record F."""
    proc = _queued(root, seq)
    if proc is None:
        return
    status, comment = _watch(root, seq, proc)
    signal_group(proc.pid, signal.SIGKILL)  # PBS ends whatever the job left running
    with locked(root):
        job = load(root, seq) or {}
        job.update(state="F", Exit_status=status, obittime=time.time())
        if comment:
            job["comment"] = comment
        save(root, job)


if __name__ == "__main__" and sys.argv[1:2] == ["run"]:
    run_job(state_dir(), int(sys.argv[2]))
