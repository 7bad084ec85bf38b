"""Attacks a model's code could make, each run in the sandbox and, where safe, outside it as a control.

A control runs the same code as a plain subprocess and must succeed at the attack, so every test
here fails if the protection it checks were removed (not only if the attack code were broken).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sciagent.sandbox import Limits, Sandbox, SandboxRun, cgroups, command

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)"
)

# Tries each path given on the command line; prints one verdict per path.
READ_EACH = """
import sys
for path in sys.argv[1:]:
    try:
        print("LEAKED", open(path).read().strip())
    except OSError as exc:
        print("BLOCKED", type(exc).__name__)
"""


def inside(scratch: Path, code: str, *args: str, **options) -> SandboxRun:
    return Sandbox().run([sys.executable, "-c", code, *args], workdir=scratch, **options)


def control(scratch: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The same code as a plain subprocess: what happens without the sandbox."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def home_secret() -> Iterator[Path]:
    """A secret file in the real home directory, removed afterwards."""
    path = Path.home() / f".sciagent-sandbox-test-secret-{uuid.uuid4().hex}"
    path.write_text("s3cret")
    try:
        yield path
    finally:
        path.unlink()


def test_network_is_unreachable(scratch: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    code = (
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        "    print('CONNECTED')\n"
        "except OSError as exc:\n    print('BLOCKED', type(exc).__name__)\n"
    )
    try:
        assert inside(scratch, code).stdout.startswith("BLOCKED")
        assert accepted == []
        assert control(scratch, code).stdout == "CONNECTED\n"
        assert accepted == [1]
    finally:
        server.close()


def test_home_directory_secrets_are_invisible(scratch: Path, home_secret: Path) -> None:
    assert inside(scratch, READ_EACH, str(home_secret)).stdout == "BLOCKED FileNotFoundError\n"
    assert control(scratch, READ_EACH, str(home_secret)).stdout == "LEAKED s3cret\n"


def test_parent_environment_tokens_do_not_reach_the_code(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("SCIAGENT_TEST_TOKEN", token)
    monkeypatch.setenv("OPENAI_API_KEY", token)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{token}@proxy:3128")
    code = f"import os; print(sorted(k for k, v in os.environ.items() if {token!r} in v))"
    assert inside(scratch, code).stdout == "[]\n"
    assert control(scratch, code).stdout == "['HTTPS_PROXY', 'OPENAI_API_KEY', 'SCIAGENT_TEST_TOKEN']\n"


def test_a_fork_bomb_is_contained(scratch: Path) -> None:
    marker = f"bomb-{uuid.uuid4().hex}"
    # Every process forks until the deadline, children too; failed forks are retried.
    code = (
        f"import os, time  # {marker}\n"
        "deadline = time.monotonic() + 3\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    )
    run = inside(scratch, code, limits=Limits(pids=32, wall_s=15))
    assert run.duration_s < 15
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still start processes
    survivors = [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker.encode() in _read(p)]
    assert survivors == []
    if os.geteuid() == 0:  # the pids cgroup is what stops it (RLIMIT_NPROC spares root)
        assert "pids" in run.limits_hit
        mine = f"sciagent-sandbox-{os.getpid()}-*"
        assert not [p for c in cgroups.find_parents().values() for p in c.path.glob(mine)]


def test_a_memory_hog_fails_within_the_address_space_limit(scratch: Path) -> None:
    run = inside(scratch, "data = b'x' * (8 << 30)", limits=Limits(wall_s=30))
    assert run.exit_code == 1 and "MemoryError" in run.stderr
    assert run.duration_s < 10


@pytest.mark.skipif(os.geteuid() != 0, reason="the memory cgroup is made per run only as root")
def test_a_memory_hog_within_the_address_space_is_killed_by_the_memory_cgroup(scratch: Path) -> None:
    limits = Limits(address_space_mb=16384, memory_mb=256, wall_s=30)
    run = inside(scratch, "data = b'x' * (1 << 30)\nprint('ALLOCATED')", limits=limits)
    assert run.signal == "SIGKILL" and "memory" in run.limits_hit and not run.timed_out
    assert run.stdout == ""


def test_a_cpu_spin_is_killed_by_the_cpu_limit(scratch: Path) -> None:
    code = "import time\nwhile time.process_time() < 4:\n    pass\nprint('FINISHED')"
    # The control spins in parallel: it finishes its 4 CPU seconds; the sandboxed copy is stopped at 2.
    plain = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    run = inside(scratch, code, limits=Limits(cpu_s=2, wall_s=30))
    assert plain.communicate(timeout=60)[0] == "FINISHED\n"
    assert run.signal in ("SIGXCPU", "SIGKILL") and "cpu" in run.limits_hit
    assert not run.timed_out and run.stdout == "" and run.duration_s < 15


def test_writes_outside_the_scratch_do_not_reach_the_host(scratch: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    targets = [tmp_path / "outside" / "planted.txt", Path(sys.prefix) / f"planted-{uuid.uuid4().hex}.txt"]
    code = (
        "import os, sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "        open(path, 'w').write('planted')\n"
        "        print('WROTE')\n"
        "    except OSError as exc:\n"
        "        print('BLOCKED', type(exc).__name__)\n"
    )
    try:
        run = inside(scratch, code, *map(str, targets))
        assert run.ok, run.stderr
        assert run.stdout.splitlines()[1] == "BLOCKED OSError"  # the venv is read-only (EROFS)
        assert not any(path.exists() for path in targets)  # the first went to the sandbox's own /tmp
        assert control(scratch, code, *map(str, targets)).stdout == "WROTE\nWROTE\n"
        assert all(path.read_text() == "planted" for path in targets)
    finally:
        for path in targets:
            path.unlink(missing_ok=True)


def test_symlinks_cannot_lead_out_of_the_sandbox(scratch: Path, tmp_path: Path, home_secret: Path) -> None:
    (scratch / "absolute").symlink_to(home_secret)
    (scratch / "relative").symlink_to(os.path.relpath(home_secret, scratch))
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "leak").symlink_to(home_secret)
    names = ["absolute", "relative", "inputs/leak"]
    run = inside(scratch, READ_EACH, *names, read_only={"inputs": tmp_path / "inputs"})
    assert run.stdout == "BLOCKED FileNotFoundError\n" * 3
    plain = control(scratch, READ_EACH, "absolute", "relative", str(tmp_path / "inputs" / "leak"))
    assert plain.stdout == "LEAKED s3cret\n" * 3


def test_deleting_files_elsewhere_fails(scratch: Path, tmp_path: Path) -> None:
    def precious(name: str) -> tuple[Path, Path]:
        folder = tmp_path / name
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "results.csv").write_text("1,2\n")
        (tmp_path / f"{name}.pdb").write_text("ATOM\n")
        return folder, tmp_path / f"{name}.pdb"

    code = (
        "import os, shutil, sys\n"
        "for remove, path in ((shutil.rmtree, sys.argv[1]), (os.remove, sys.argv[2])):\n"
        "    try:\n        remove(path)\n        print('DELETED')\n"
        "    except OSError as exc:\n        print('BLOCKED', type(exc).__name__)\n"
    )
    folder, pdb = precious("kept")
    run = inside(scratch, code, str(folder), "/work/input.pdb", read_only={"input.pdb": pdb})
    assert run.stdout.count("BLOCKED") == 2
    assert (folder / "sub" / "results.csv").read_text() == "1,2\n" and pdb.read_text() == "ATOM\n"
    copy, copy_pdb = precious("copy")
    assert control(scratch, code, str(copy), str(copy_pdb)).stdout == "DELETED\nDELETED\n"
    assert not copy.exists() and not copy_pdb.exists()


def test_host_processes_cannot_be_signalled(scratch: Path) -> None:
    code = (
        f"import os\ntry:\n    os.kill({os.getpid()}, 0)\n    print('REACHED')\n"
        "except OSError as exc:\n    print('BLOCKED', type(exc).__name__)\n"
    )
    assert inside(scratch, code).stdout == "BLOCKED ProcessLookupError\n"
    assert control(scratch, code).stdout == "REACHED\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="nobody inside is root outside only when the caller is root")
def test_setuid_files_made_inside_do_not_keep_the_bit(scratch: Path) -> None:
    code = (
        "import os, shutil\nshutil.copy('/usr/bin/id', 'id')\n"
        "os.chmod('id', 0o6755)\nprint(oct(os.stat('id').st_mode))"
    )
    run = inside(scratch, code)
    assert run.stdout == "0o106755\n"  # it could set the bits inside...
    assert oct((scratch / "id").stat().st_mode) == "0o100755"  # ...but the host file is not setuid root
    (scratch / "id").unlink()
    assert control(scratch, code).stdout == "0o106755\n"
    assert oct((scratch / "id").stat().st_mode) == "0o106755"


def test_a_symlink_at_a_mount_point_cannot_create_host_files(scratch: Path, tmp_path: Path) -> None:
    """A run's code leaves ``villin.pdb -> ../../oldroot/tmp/...``; the next run binds villin.pdb.

    bubblewrap sets up its mounts with the host's root at /oldroot and follows such a link, so,
    running as root, it would create an empty file anywhere on the host (the control shows it in /tmp).
    """
    target = Path("/tmp", f"sciagent-sandbox-planted-{uuid.uuid4().hex}")
    (tmp_path / "villin.pdb").write_text("ATOM\n")
    (scratch / "villin.pdb").symlink_to(f"../../oldroot{target}")
    try:
        with pytest.raises(ValueError, match=r"villin\.pdb is a symlink"):
            inside(
                scratch, "print(open('villin.pdb').read())", read_only={"villin.pdb": tmp_path / "villin.pdb"}
            )
        assert not target.exists()
        bwrap = shutil.which("bwrap")
        assert bwrap is not None
        argv = command.bwrap_argv(
            bwrap,
            ["/bin/true"],
            workdir=scratch,
            read_only={"villin.pdb": tmp_path / "villin.pdb"},
            env={},
            limits=Limits(),
            network=True,
        )
        subprocess.run(argv, capture_output=True, timeout=30, check=False)
        assert target.exists()
    finally:
        target.unlink(missing_ok=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
