"""The sandbox with real bubblewrap and real processes: files, output, exit statuses, refusals.

Attacks (network, secrets, fork bombs, escapes) are in tests/test_sandbox_security.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from sciagent.errors import SandboxUnavailable, UserError
from sciagent.sandbox import Layers, Limits, Sandbox, SandboxRun, cgroups, probe_layers, rundir

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)"
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made per run only as root")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def python(scratch: Path, code: str, sandbox: Sandbox | None = None, **options) -> SandboxRun:
    return (sandbox or Sandbox()).run([sys.executable, "-c", code], workdir=scratch, **options)


def without_namespaces(**changes) -> Layers:
    """This machine's layers with bubblewrap switched off (configuration, as on a machine without it)."""
    found = probe_layers()
    fields = {
        "namespaces": False,
        "network_isolated": False,
        "rlimits": found.rlimits,
        "cgroup_pids": found.cgroup_pids,
        "cgroup_memory": found.cgroup_memory,
        "bwrap": None,
    }
    return Layers(**(fields | changes))


def sandbox_cgroups() -> list[Path]:
    """This test process's run cgroups (a suite running beside it may have its own)."""
    mine = f"sciagent-sandbox-{os.getpid()}-*"
    return [p for parent in cgroups.find_parents().values() for p in parent.path.glob(mine)]


@needs_bwrap
def test_probe_finds_bubblewrap_and_caches_its_answer() -> None:
    layers = probe_layers()
    assert layers.namespaces and layers.network_isolated and layers.rlimits
    assert layers.bwrap == shutil.which("bwrap")
    assert probe_layers() is layers
    assert layers.active()[:3] == ["namespaces", "network", "rlimits"]
    if os.geteuid() == 0:
        assert layers.cgroup_pids and layers.cgroup_memory and not layers.missing()
        assert layers.describe() == "sandbox: namespaces, network, rlimits, cgroup-pids, cgroup-memory"


@needs_bwrap
def test_a_script_in_the_scratch_runs_and_its_files_reach_the_host(scratch: Path) -> None:
    (scratch / "analysis.py").write_text(
        "import os\nopen('/work/result.txt', 'w').write(f'{os.getcwd()} {os.getuid()}')\nprint('done')\n"
    )
    run = Sandbox().run([sys.executable, "analysis.py"], workdir=scratch)
    assert run.ok, run.stderr
    assert (run.exit_code, run.signal, run.stdout, run.stderr) == (0, None, "done\n", "")
    assert (scratch / "result.txt").read_text() == "/work 65534"
    assert "namespaces" in run.layers and "network" in run.layers
    assert run.summary().startswith("exit 0 after ")


@needs_bwrap
def test_python_starts_cleanly_without_the_source_tree(scratch: Path) -> None:
    code = (
        "import sys, numpy\n"
        "print(sys.flags.dont_write_bytecode, numpy.__name__)\n"
        "try:\n    import sciagent\nexcept ImportError:\n    print('no sciagent')\n"
    )
    run = python(scratch, code)
    assert run.ok and run.stderr == ""
    assert run.stdout == "1 numpy\nno sciagent\n"
    assert sorted(os.listdir(scratch)) == []  # the venv's mount points below /work were removed


@needs_bwrap
def test_read_only_entries_are_readable_and_not_writable(scratch: Path, tmp_path: Path) -> None:
    (tmp_path / "villin.pdb").write_text("ATOM\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "one.json").write_text("{}")
    code = (
        "import os\n"
        "print(open('villin.pdb').read().strip(), open('runs/one.json').read())\n"
        "for path in ('villin.pdb', 'runs/new.txt', 'runs/one.json'):\n"
        "    try:\n        open(path, 'a').write('x')\n        print('wrote', path)\n"
        "    except OSError as exc:\n        print('refused', path, exc.errno)\n"
    )
    read_only = {"villin.pdb": tmp_path / "villin.pdb", "runs": tmp_path / "runs"}
    run = python(scratch, code, read_only=read_only)
    assert run.ok, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "ATOM {}"
    assert all(line.startswith("refused ") for line in lines[1:]) and len(lines) == 4
    assert (tmp_path / "villin.pdb").read_text() == "ATOM\n"
    assert sorted(os.listdir(tmp_path / "runs")) == ["one.json"]
    assert os.listdir(scratch) == []  # bubblewrap's mount points are gone


@needs_bwrap
def test_output_keeps_the_head_and_counts_the_rest(scratch: Path) -> None:
    code = "import sys\nsys.stdout.write('a' * 200_000)\nsys.stderr.write('é' * 100_000)\n"
    run = python(scratch, code, limits=Limits(output_bytes=1000))
    assert run.ok
    assert run.stdout == "a" * 1000 and run.stdout_dropped == 199_000
    assert run.stderr == "é" * 500 and run.stderr_dropped == 199_000


@needs_bwrap
def test_exit_codes_signals_and_the_wall_clock_are_reported(scratch: Path) -> None:
    exited = python(scratch, "import sys; sys.exit(3)")
    assert (exited.exit_code, exited.signal, exited.ok, exited.limits_hit) == (3, None, False, ())
    assert exited.summary().startswith("exit 3 after ")

    killed = python(scratch, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert (killed.exit_code, killed.signal, killed.limits_hit) == (None, "SIGTERM", ())
    assert killed.summary().startswith("killed (SIGTERM) after ")

    slow = python(
        scratch, "import time; print('started', flush=True); time.sleep(60)", limits=Limits(wall_s=1)
    )
    assert slow.timed_out and slow.signal == "SIGKILL" and slow.limits_hit == ("wall",)
    assert slow.stdout == "started\n" and 1 <= slow.duration_s < 10
    assert slow.summary().startswith("killed (SIGKILL: the wall-clock limit) after 1.")


@needs_bwrap
def test_stdin_and_the_callers_environment_reach_the_code(scratch: Path) -> None:
    code = "import os, sys; print(sys.stdin.read().upper(), os.environ['RUN_ID'], os.environ['HOME'])"
    run = python(scratch, code, stdin="hello", env={"RUN_ID": "r1"})
    assert run.stdout == "HELLO r1 /tmp\n"
    with pytest.raises(ValueError, match="NAME=value"):
        python(scratch, "pass", env={"BAD NAME": "x"})
    with pytest.raises(ValueError, match="relative name"):
        python(scratch, "pass", read_only={"../up": scratch})


@needs_bwrap
@needs_root
def test_each_run_removes_its_cgroups(scratch: Path) -> None:
    before = sandbox_cgroups()
    run = python(scratch, "import os; os.fork() and os.wait()")
    assert run.ok and {"cgroup-pids", "cgroup-memory"} <= set(run.layers)
    assert sandbox_cgroups() == before


def test_check_refuses_without_bubblewrap_and_names_the_fix(scratch: Path) -> None:
    sandbox = Sandbox(layers=without_namespaces())
    with pytest.raises(SandboxUnavailable) as refused:
        sandbox.check()
    message = str(refused.value)
    assert isinstance(refused.value, UserError)
    assert message.startswith("model-written code is not run: no filesystem, user or network isolation")
    assert "(bubblewrap not found: not installed" in message and "apt-get install bubblewrap" in message
    assert "--allow-unsandboxed-code to run it with resource limits" in message
    with pytest.raises(SandboxUnavailable):
        python(scratch, "open('ran', 'w')", sandbox=sandbox)
    assert not (scratch / "ran").exists()


@needs_bwrap
def test_check_refuses_without_a_network_namespace_and_names_the_fix(scratch: Path) -> None:
    sandbox = Sandbox(layers=dataclasses.replace(probe_layers(), network_isolated=False))
    with pytest.raises(SandboxUnavailable) as refused:
        python(scratch, "open('ran', 'w')", sandbox=sandbox)
    message = str(refused.value)
    assert message.startswith("model-written code is not run: no network isolation (")
    assert "let bubblewrap create network namespaces here" in message
    assert "--allow-unsandboxed-code to run it with filesystem and user isolation, resource limits" in message
    assert not (scratch / "ran").exists()


def test_read_back_reads_only_bounded_regular_files(scratch: Path) -> None:
    (scratch / "result.json").write_text("{}")
    (scratch / "big").write_bytes(b"x" * 101)
    (scratch / "folder").mkdir()
    assert rundir.read_back(scratch, "result.json", 100) == b"{}"
    refusals = {
        "missing": "missing is missing",
        "big": "big is larger than 100 bytes",
        "folder": "folder is a directory, not a regular file",
        "../result.json": "is not a file name",
    }
    for name, why in refusals.items():
        with pytest.raises(rundir.ScratchFileError, match=re.escape(why)):
            rundir.read_back(scratch, name, 100)


def test_allowed_unsandboxed_runs_keep_rlimits_and_a_clean_environment(
    scratch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIAGENT_TEST_TOKEN", "tok-123")
    (tmp_path / "input.txt").write_text("data")
    sandbox = Sandbox(allow_unsandboxed=True, layers=without_namespaces())
    sandbox.check()
    code = "import os; print(os.getcwd(), open('input.txt').read(), 'SCIAGENT_TEST_TOKEN' in os.environ)"
    run = python(scratch, code, sandbox=sandbox, read_only={"input.txt": tmp_path / "input.txt"})
    assert run.ok, run.stderr
    assert run.stdout == f"{scratch} data False\n"
    assert "namespaces" not in run.layers and "rlimits" in run.layers
    assert os.listdir(scratch) == []  # the read-only entry's symlink is gone

    spin = python(scratch, "while True: pass", sandbox=sandbox, limits=Limits(cpu_s=1, wall_s=20))
    assert spin.signal == "SIGXCPU" and spin.limits_hit == ("cpu",) and not spin.timed_out
    assert spin.summary().startswith("killed (SIGXCPU: the CPU-time limit) after ")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)
    with pytest.raises(ValueError, match="pids"):
        Limits(pids=0)
    assert Limits().output_bytes == 64_000
