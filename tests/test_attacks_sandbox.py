"""The sandbox fails closed: attacks on what comes out of it, on its network and on the disk.

Each attack runs against sciagent and is stopped; its control shows the same attack succeeding
without the protection (the old copy with ``shutil.copyfile``, a plain ``open``, a bubblewrap
command line without the bound, a run that is allowed to share the network), so each test fails if
its protection is removed. The draft and FIFO attacks go through a real ``sciagent ask`` process with
a scripted model (tests/openai_server.py) and real bubblewrap.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from openai_server import tool_call_reply
from sciagent.errors import SandboxUnavailable
from sciagent.sandbox import Limits, Sandbox, command, probe_layers, rundir
from sciagent.tools.generated import KEEP_RUNS, SANDBOX_DIR, scratch_dir
from test_codegen import ADD_CODE, ADD_TESTS, _ask, _create_add, _errors

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)"
    ),
]
SECRET = "host-secret-7f3a"


def _session_dir(summary: dict) -> Path:
    return Path(summary["results_json"]).parent


def _only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


def test_a_draft_turned_into_a_link_to_a_host_file_keeps_the_models_text(
    tmp_path: Path, openai_server
) -> None:
    """The model's tests turn tool.py into a link to a file sciagent can read; the draft and the skill
    are the model's own text, and read_file hands the model that text, not the secret."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    swap = f"\n\ndef test_swap():\n    os.remove('tool.py')\n    os.symlink({str(secret)!r}, 'tool.py')\n"
    tests = f"import os\n{ADD_TESTS}{swap}"
    read = tool_call_reply("read_file", {"path": "tool_drafts/add_numbers/round-1/tool.py"})
    summary = _ask(tmp_path, openai_server, _create_add(tests=tests), read)
    created, read = summary["tool_calls"]
    assert (created["status"], read["status"]) == ("ok", "ok"), _errors(summary)
    assert created["result"]["tests_passed"] == 2 and read["result"]["text"] == ADD_CODE
    sent = json.dumps(openai_server.chat_requests()[-1].body["messages"])
    assert SECRET not in sent
    skill = tmp_path / "sciagent-runs" / "skills" / "tools" / "add_numbers" / "v1"
    assert (skill / "tool.py").read_text() == ADD_CODE and (skill / "test_tool.py").read_text() == tests

    # The link is there in the scratch: read back, it is refused; copied as before, it is the secret.
    scratch = _only(_session_dir(summary) / SANDBOX_DIR, "create-add_numbers-*")
    assert (scratch / "tool.py").is_symlink()
    with pytest.raises(rundir.ScratchFileError, match=r"tool\.py is a symlink"):
        rundir.read_back(scratch, "tool.py", 1 << 20)
    shutil.copyfile(scratch / "tool.py", tmp_path / "copied.py")
    assert (tmp_path / "copied.py").read_text() == SECRET


FIFO_CODE = "import os\n\n\ndef leave_fifo() -> dict:\n    os.mkfifo('result.json')\n    os._exit(0)\n"
FIFO_TESTS = (
    "import os\n\nfrom tool import leave_fifo\n\n\ndef test_defined():\n    assert callable(leave_fifo)\n"
    "    os.remove('tool.py')\n    os.mkfifo('tool.py')\n"
)


def test_fifos_left_by_the_code_neither_block_nor_end_the_session(tmp_path: Path, openai_server) -> None:
    """The tests turn tool.py into a FIFO (copying it out used to raise and end the session); the tool
    then leaves result.json a FIFO (reading it used to block forever). The call fails in seconds."""
    create = tool_call_reply(
        "create_tool",
        {
            "name": "leave_fifo",
            "description": "Leaves a FIFO where its result should be.",
            "parameters": {"type": "object", "properties": {}},
            "code": FIFO_CODE,
            "tests": FIFO_TESTS,
        },
    )
    started = time.monotonic()
    summary = _ask(tmp_path, openai_server, create, tool_call_reply("leave_fifo", {}))
    elapsed = time.monotonic() - started
    created, called = summary["tool_calls"]
    assert created["status"] == "ok", _errors(summary)
    assert called["status"] == "failed" and summary["answer"] == "Done."
    assert "leave_fifo v1 left no result: result.json is a FIFO, not a regular file" in called["error"]
    assert elapsed < 60  # the call's own wall-clock limit is 300 s: it was not waited out
    session = _session_dir(summary)
    assert (session / "tool_drafts" / "leave_fifo" / "round-1" / "tool.py").read_text() == FIFO_CODE

    # Controls: the old copy of the drafts raises on the FIFO tool.py; a plain open of result.json blocks.
    drafted = _only(session / SANDBOX_DIR, "create-leave_fifo-*") / "tool.py"
    assert stat.S_ISFIFO(drafted.lstat().st_mode)
    with pytest.raises(shutil.SpecialFileError):
        shutil.copyfile(drafted, tmp_path / "copied.py")
    result = _only(session / SANDBOX_DIR, "leave_fifo-*") / "result.json"
    reader = threading.Thread(target=result.read_text, daemon=True)
    reader.start()
    reader.join(1.0)
    assert reader.is_alive()  # blocked, waiting for a writer that never comes
    os.close(os.open(result, os.O_WRONLY | os.O_NONBLOCK))  # let it go
    reader.join(5.0)
    assert not reader.is_alive()


NO_NETNS_BWRAP = f"""#!/bin/sh
# bubblewrap on a machine without network namespaces: it fails whenever it would make one.
for arg in "$@"; do
    [ "$arg" = --share-net ] && exec {shutil.which("bwrap")} "$@"
    [ "$arg" = -- ] && break
done
echo "bwrap: loopback: Failed RTM_NEWADDR: Operation not permitted" >&2
exit 1
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()
    print('CONNECTED')
except OSError as exc:
    print('BLOCKED', type(exc).__name__)
"""


def test_without_a_network_namespace_code_runs_only_when_allowed(tmp_path: Path, openai_server) -> None:
    wrapper = tmp_path / "bwrap-without-netns"
    wrapper.write_text(NO_NETNS_BWRAP)
    wrapper.chmod(0o755)
    refused = _ask(tmp_path, openai_server, _create_add(), env={"SCIAGENT_BWRAP": str(wrapper)})
    (error,) = _errors(refused)
    assert refused["tool_calls"][0]["status"] == "failed"
    assert "model-written code is not run: no network isolation" in error
    assert f"{wrapper} cannot create a network namespace here" in error
    assert "--allow-unsandboxed-code to run it with filesystem and user isolation" in error
    assert not (_session_dir(refused) / SANDBOX_DIR).exists()

    # Control: the same layers, allowed: the code runs in bubblewrap and reaches a host socket.
    layers = dataclasses.replace(probe_layers(), network_isolated=False, bwrap=str(wrapper))
    with pytest.raises(SandboxUnavailable, match="no network isolation"):
        Sandbox(layers=layers).check()
    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = str(server.getsockname()[1])
        allowed = Sandbox(allow_unsandboxed=True, layers=layers)
        run = allowed.run([sys.executable, "-c", CONNECT, port], workdir=tmp_path)
        assert run.stdout == "CONNECTED\n" and "namespaces" in run.layers and "network" not in run.layers
    finally:
        server.close()


FILL = """
import sys
for path in sys.argv[1:]:
    try:
        with open(path, 'wb') as handle:
            for _ in range(32):
                handle.write(b'x' * (1 << 20))
                handle.flush()
        print('FILLED', path)
    except OSError as exc:
        print('FULL', path, exc.errno)
"""


def test_tmp_and_dev_shm_are_bounded(tmp_path: Path) -> None:
    limits = Limits(tmp_mb=8)
    code = [sys.executable, "-c", FILL, "/dev/shm/fill", "/tmp/fill"]
    run = Sandbox().run(code, workdir=tmp_path, limits=limits)
    assert run.stdout == "FULL /dev/shm/fill 28\nFULL /tmp/fill 28\n"  # ENOSPC at 8 MB
    # Control: bubblewrap's own /dev and an unsized /tmp (the command line less the bounds) hold 32 MB.
    argv = command.bwrap_argv(
        shutil.which("bwrap") or "bwrap", code, workdir=tmp_path, read_only={},
        env=command.sandbox_env({}), limits=limits, network=True,
    )  # fmt: skip
    size = str(limits.tmp_mb << 20)
    joined = "\0".join(argv).replace(f"--size\0{size}\0--tmpfs\0/dev/shm\0", "")
    unbounded = joined.replace(f"--size\0{size}\0", "").split("\0")
    assert len(unbounded) == len(argv) - 6
    plain = subprocess.run(unbounded, capture_output=True, text=True, timeout=60, check=False)
    assert plain.stdout == "FILLED /dev/shm/fill\nFILLED /tmp/fill\n", plain.stderr


GROW = """
import sys, time
for number in range(int(sys.argv[1])):
    with open(f'part-{number}', 'wb') as handle:
        handle.write(b'x' * int(sys.argv[2]))
    time.sleep(float(sys.argv[3]))
print('DONE')
"""


@pytest.mark.parametrize(
    ("files", "size", "limits"),
    [(40, 1 << 20, Limits(scratch_mb=4)), (3000, 0, Limits(scratch_entries=200))],
    ids=["bytes", "entries"],
)
def test_the_run_directory_is_bounded_while_the_code_runs(
    tmp_path: Path, files: int, size: int, limits: Limits
) -> None:
    pause = str(3.0 / files)  # about 3 s of writing
    argv = [sys.executable, "-c", GROW, str(files), str(size), pause]
    (tmp_path / "attack").mkdir()
    run = Sandbox().run(argv, workdir=tmp_path / "attack", limits=limits)
    assert run.limits_hit == ("scratch",) and not run.ok and run.stdout == ""
    assert run.summary().startswith("killed (SIGKILL: the run-directory size limit) after ")
    left = len(os.listdir(tmp_path / "attack"))
    assert 0 < left < files / 2
    # Control: the same code under the default bounds writes all of it.
    (tmp_path / "control").mkdir()
    plain = Sandbox().run(argv, workdir=tmp_path / "control")
    assert plain.ok and plain.stdout == "DONE\n" and len(os.listdir(tmp_path / "control")) == files


def test_old_scratch_directories_are_removed_oldest_first(tmp_path: Path) -> None:
    session = tmp_path / "session"
    made = []
    for number in range(KEEP_RUNS + 5):
        made.append(scratch_dir(session, "call"))
        (made[-1] / "out.txt").write_text("x")
        os.utime(made[-1], (number, number))  # an order that does not depend on the clock's resolution
    kept = sorted((session / SANDBOX_DIR).iterdir())
    assert kept == sorted(made[-KEEP_RUNS:])  # the newest, the one just made among them

    # By size: of five 1 MiB directories, the newest two fit in 2.5 MiB.
    parent = tmp_path / "by-size"
    for number in range(5):
        (parent / f"run-{number}").mkdir(parents=True)
        (parent / f"run-{number}" / "data").write_bytes(b"x" * (1 << 20))
        os.utime(parent / f"run-{number}", (number, number))
    removed = rundir.prune(parent, keep=100, most_bytes=5 << 19)
    assert sorted(p.name for p in removed) == ["run-0", "run-1", "run-2"]
    assert sorted(p.name for p in parent.iterdir()) == ["run-3", "run-4"]
    # Control: directories made as before (a plain mkdir) pile up without a bound.
    for number in range(KEEP_RUNS + 5):
        (tmp_path / "plain" / str(number)).mkdir(parents=True)
    assert len(list((tmp_path / "plain").iterdir())) == KEEP_RUNS + 5


def test_a_fifo_left_in_the_session_is_refused_by_the_tools_that_read_files(tmp_path: Path) -> None:
    """A FIFO left in the session (a sandboxed run's scratch lives there) named where read_file or
    structure_info would read: each refuses in one line at once. Control: a plain open() blocks."""
    from sciagent.tools.catalogue import builtin_tools
    from sciagent.tools.registry import ToolArgumentsError, ToolContext

    session = tmp_path / "session"
    (session / "sandbox" / "run").mkdir(parents=True)
    fifo = session / "sandbox" / "run" / "model.pdb"
    os.mkfifo(fifo)
    tools, context = builtin_tools(), ToolContext(session)
    for name in ("read_file", "structure_info"):
        argument = {"path": "sandbox/run/model.pdb"} if name == "read_file" else {"structure": str(fifo)}
        answered: list[BaseException] = []
        caller = threading.Thread(target=_refused, args=(tools.get(name), argument, context, answered))
        caller.start()
        caller.join(10.0)
        assert not caller.is_alive(), f"{name} blocked on the FIFO"
        (error,) = answered
        assert isinstance(error, ToolArgumentsError) and "model.pdb" in str(error), error
    reader = threading.Thread(target=fifo.read_bytes, daemon=True)  # the control
    reader.start()
    reader.join(1.0)
    assert reader.is_alive()
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(5.0)


def _refused(tool, arguments: dict, context, answered: list[BaseException]) -> None:
    try:
        tool.call(arguments, context)
    except Exception as exc:  # what the loop would turn into an observation
        answered.append(exc)
