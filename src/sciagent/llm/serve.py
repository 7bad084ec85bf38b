"""Local inference servers (llama.cpp on CPU, vLLM on a GPU node) as child processes we can always stop.

Single-system mode runs the model next to the agent: ``start_server`` launches an OpenAI-compatible
server in its own session (so it never receives the terminal's Ctrl-C meant for us, and so ``stop_server``
can signal its whole process group, vLLM's workers included), logs to ``<workdir>/llm-server-<port>.log``,
records ``<workdir>/llm-server-<port>.json`` (pid, port, backend, base URL, start time) so another
``sciagent`` process can stop it, and returns once ``GET /v1/models`` answers.

Loopback is not a trust boundary: every user of a login or compute node can reach ``127.0.0.1:8080``.
So every server gets a fresh API key (``secrets.token_urlsafe(32)``), handed to it in its environment
(``API_KEY``, read by llama-cpp-python's server settings; ``VLLM_API_KEY`` for vLLM), never on its
command line, which ``ps`` shows to everyone; the key is kept in ``llm-server-<port>.key`` (mode 0600)
beside the pid file, where a profile with ``auth = "llm-serve"`` (``llama-cpp-local``, ``vllm-local``)
reads it (``served_key``). What the key stops is other users using *your* server. It does not prove
to the client which server answers: ``served_key`` hands it out only while the recorded server
process is alive, i.e. while it holds the port, but anything it cannot see (a server in another
network namespace, a port forward) could still answer.

vLLM runs with the environment Intel GPU nodes need (``ZE_FLAT_DEVICE_HIERARCHY=FLAT``: one device per
GPU tile; ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` for tensor parallelism) and, as on the facility's
compute nodes, without HTTP proxies and with ``NO_PROXY`` covering localhost, so the model must be local
or in the Hugging Face cache. Every launch goes through one seam, ``_launch``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sciagent.atomic import write_atomic
from sciagent.errors import ConfigError, ModelUnavailable
from sciagent.llm.embedded import bundled_model_path, default_threads
from sciagent.redaction import register_secret

log = logging.getLogger(__name__)

Backend = Literal["llama-cpp", "vllm"]
DEFAULT_PORTS: dict[str, int] = {"llama-cpp": 8080, "vllm": 8000}  # what llama-cpp-local / vllm-local expect
KEY_ENV: dict[str, str] = {"llama-cpp": "API_KEY", "vllm": "VLLM_API_KEY"}  # where each server reads its key
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@dataclass(frozen=True)
class ServerHandle:
    """A started server, as recorded in its pid file."""

    pid: int
    port: int
    backend: str
    base_url: str
    started_at: str
    log_file: str
    proc_start: int | None = None  # the kernel's start time of ``pid``: guards against pid reuse

    @property
    def alive(self) -> bool:
        """Whether the server process itself is still running (its workers are not looked at)."""
        _reap(self.pid)
        fields = _stat_fields(self.pid)
        if fields is None and not Path("/proc").is_dir():
            return _signal_ok(self.pid)
        return fields is not None and fields[0] != "Z" and _is_ours(self)


def server_command(
    backend: Backend,
    *,
    model: str | None,
    port: int,
    host: str,
    tensor_parallel_size: int = 1,
    threads: int | None = None,
    gpu_memory_fraction: float | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment for ``backend``; raises ConfigError if it cannot run here.

    ``threads`` is llama.cpp's ``--n_threads`` (default ``default_threads()``); ``gpu_memory_fraction``
    is vLLM's ``--gpu-memory-utilization`` (default vLLM's own).
    """
    env = {"NO_PROXY": _no_proxy(host), "no_proxy": _no_proxy(host)}
    if backend == "llama-cpp":
        if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
            raise ConfigError(
                "llama-cpp-python's server is not installed: `pip install 'llama-cpp-python[server]'`"
            )
        gguf = Path(model) if model else bundled_model_path()
        if not gguf.is_file():
            raise ConfigError(f"model file {gguf} not found: --model takes a path to a .gguf file")
        threads = threads or default_threads()
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", gguf.stem]
        argv += ["--host", host, "--port", str(port), "--n_threads", str(threads), "--n_ctx", "4096"]
        return argv, env
    if backend != "vllm":
        raise ConfigError(f"unknown backend {backend!r}: use llama-cpp or vllm")
    if not model:
        raise ConfigError("vllm needs --model: a Hugging Face model id or a local model directory")
    if shutil.which("vllm"):
        launcher = ["vllm"]
    elif importlib.util.find_spec("vllm") is not None:
        launcher = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    else:
        raise ConfigError(
            "vllm is not installed: install it on the GPU node (pip install vllm, or load the facility's "
            "vLLM module), or use --backend llama-cpp"
        )
    env["ZE_FLAT_DEVICE_HIERARCHY"] = os.environ.get("ZE_FLAT_DEVICE_HIERARCHY", "FLAT")
    if tensor_parallel_size > 1:
        env["VLLM_WORKER_MULTIPROC_METHOD"] = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    argv = [*launcher, "serve", model, "--host", host, "--port", str(port), "--dtype", "bfloat16"]
    argv += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if gpu_memory_fraction is not None:
        argv += ["--gpu-memory-utilization", f"{gpu_memory_fraction:g}"]
    return argv, env


def start_server(
    backend: Backend,
    *,
    model: str | None,
    port: int,
    host: str = "127.0.0.1",
    workdir: Path,
    ready_timeout_s: float = 600.0,
    tensor_parallel_size: int = 1,
    env: Mapping[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    threads: int | None = None,
    gpu_memory_fraction: float | None = None,
) -> ServerHandle:
    """Start a server and return once it answers ``GET /v1/models``.

    ``env`` is added to the server's environment last (e.g. the GPUs it may see); ``preexec`` runs
    in the child before the server does (e.g. pinning it to its CPUs, which every process it starts
    inherits); ``threads`` and ``gpu_memory_fraction`` go to ``server_command``.

    Raises:
        ConfigError: the backend is missing, the model is not found, or the port is taken.
        ModelUnavailable: the server exited, or was not ready in ``ready_timeout_s`` (it is then
            stopped); the message ends with the last lines of its log.
    """
    argv, extra_env = server_command(
        backend,
        model=model,
        port=port,
        host=host,
        tensor_parallel_size=tensor_parallel_size,
        threads=threads,
        gpu_memory_fraction=gpu_memory_fraction,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file = _pid_file(workdir, port)
    running = _read_handle(pid_file)
    if running is not None and running.alive:
        raise ConfigError(
            f"a {running.backend} server already runs on port {port}: `sciagent llm stop --port {port}`"
        )
    stop_server(workdir, port)  # a stale record: clear it and any workers left in its group
    local = _connect_host(host)
    if _port_open(local, port):
        raise ConfigError(f"port {port} is already in use on {local}: pick another with --port")

    key = register_secret(secrets.token_urlsafe(32)) or ""
    write_atomic(key_file(workdir, port), key, mode=0o600)  # before the server can answer anyone
    inherited = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    server_env = inherited | extra_env | dict(env or {}) | {KEY_ENV[backend]: key}
    log_file = workdir / f"llm-server-{port}.log"
    log.info("starting %s server: %s (log %s)", backend, " ".join(argv), log_file)
    try:
        process = _launch(argv, server_env, log_file, preexec)
    except OSError as exc:
        raise ConfigError(f"could not start {argv[0]}: {exc.strerror or exc}") from exc
    handle = ServerHandle(
        pid=process.pid,
        port=port,
        backend=backend,
        base_url=f"http://{local}:{port}/v1",
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        log_file=str(log_file),
        proc_start=_proc_start(process.pid),
    )
    pid_file.write_text(json.dumps(asdict(handle), indent=2))
    try:
        _wait_ready(handle, process, ready_timeout_s, key)
    except BaseException:  # not ready, or Ctrl-C while waiting: leave nothing behind
        stop_server(workdir, port)
        raise
    return handle


def _launch(
    argv: list[str], env: dict[str, str], log_file: Path, preexec: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """The one place a server process is created: its own session, output to ``log_file``."""
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
    _children[process.pid] = process
    return process


# Servers started by this process: polled so they are reaped (a zombie would look alive).
_children: dict[int, subprocess.Popen[bytes]] = {}


def running_servers(workdir: Path) -> list[ServerHandle]:
    """The servers recorded in ``workdir`` (alive or not)."""
    return [h for f in sorted(workdir.glob("llm-server-*.json")) if (h := _read_handle(f)) is not None]


def stop_server(workdir: Path, port: int | None = None, timeout_s: float = 20.0) -> list[int]:
    """Stop the server on ``port`` (``None``: every server recorded in ``workdir``); return the ports.

    SIGTERM to the process group, then SIGKILL after ``timeout_s``; the pid file goes either way. A pid
    file whose process is gone (or whose pid now belongs to another program) is just removed.
    """
    files = [_pid_file(workdir, port)] if port is not None else sorted(workdir.glob("llm-server-*.json"))
    stopped = []
    for pid_file in files:
        handle = _read_handle(pid_file)
        if handle is not None and _is_ours(handle) and _group_alive(handle.pid):
            _terminate_group(handle.pid, timeout_s)
            stopped.append(handle.port)
        pid_file.unlink(missing_ok=True)
        pid_file.with_suffix(".key").unlink(missing_ok=True)
    return stopped


def served_key(workdir: Path, base_url: str) -> str:
    """The API key of the server ``start_server`` recorded in ``workdir`` at ``base_url``.

    Only for the URL the server was started at, and only while that server process is alive (so it,
    not another user's process, holds the port).

    Raises:
        ConfigError: no live server of ours is recorded at ``base_url``, or its key file is not a
            regular file of ours that only we can read.
    """
    port = urlsplit(base_url).port
    handle = _read_handle(_pid_file(workdir, port)) if port else None
    if handle is None or handle.base_url.rstrip("/") != base_url.rstrip("/"):
        raise ConfigError(
            f"no server started by `sciagent llm serve` is recorded at {base_url} in {workdir}: start "
            "one there, or use the workspace it was started from (its key is kept beside its pid file)"
        )
    if not handle.alive:
        raise ConfigError(
            f"the {handle.backend} server recorded at {base_url} (pid {handle.pid}) is not running: "
            f"start it again with `sciagent llm serve --backend {handle.backend}`"
        )
    return register_secret(_read_key(key_file(workdir, handle.port))) or ""


def log_tail(log_file: Path | str, lines: int = 15) -> str:
    """The last ``lines`` lines of a server log (for error messages)."""
    try:
        text = Path(log_file).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(handle: ServerHandle, process: subprocess.Popen[bytes], timeout_s: float, key: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    models = urllib.request.Request(f"{handle.base_url}/models", headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ModelUnavailable(
                f"the {handle.backend} server exited with code {code} before it was ready; "
                f"last lines of {handle.log_file}:\n{log_tail(handle.log_file)}"
            )
        with (
            contextlib.suppress(OSError, ValueError),
            opener.open(models, timeout=2) as reply,
        ):
            if reply.status == 200:
                log.info("%s server ready at %s (pid %d)", handle.backend, handle.base_url, handle.pid)
                return
        time.sleep(0.25)
    raise ModelUnavailable(
        f"the {handle.backend} server was not ready after {timeout_s:g} s and was stopped; "
        f"last lines of {handle.log_file}:\n{log_tail(handle.log_file)}"
    )


def _terminate_group(pgid: int, timeout_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            log.warning("server process group %d ignored SIGTERM for %g s; killing it", pgid, timeout_s)


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in group ``pgid`` (reaping our own children first)."""
    _reap(pgid)
    proc = Path("/proc")
    if not proc.is_dir():
        return _signal_ok(-pgid)
    for entry in proc.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def _signal_ok(pid: int) -> bool:
    """Whether signal 0 reaches ``pid`` (a negative pid: a process group); for systems without /proc."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ... (None if gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _proc_start(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _is_ours(handle: ServerHandle) -> bool:
    """The recorded pid still names the process we started (not a later one that reused the pid)."""
    if handle.proc_start is None or not Path("/proc").is_dir():
        return True
    current = _proc_start(handle.pid)
    return current is None or current == handle.proc_start  # gone: the group may still hold workers


def _read_handle(pid_file: Path) -> ServerHandle | None:
    try:
        return ServerHandle(**json.loads(pid_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _pid_file(workdir: Path, port: int) -> Path:
    return workdir / f"llm-server-{port}.json"


def key_file(workdir: Path, port: int) -> Path:
    """Where the API key of the server on ``port`` is kept (mode 0600)."""
    return workdir / f"llm-server-{port}.key"


def _read_key(path: Path) -> str:
    """The key in ``path``: a regular file (not followed if a link), ours, readable by nobody else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"cannot read the server's key file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ConfigError(
                f"the server's key file {path} is not a private file of yours (mode 0600): stop the "
                "server and start it again"
            )
        key = handle.read(4096).decode(errors="replace").strip()
    if not key:
        raise ConfigError(f"the server's key file {path} is empty: stop the server and start it again")
    return key


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _no_proxy(host: str) -> str:
    hosts = [h for h in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if h]
    for local in ("localhost", "127.0.0.1", "::1", _connect_host(host)):
        if local not in hosts:
            hosts.append(local)
    return ",".join(hosts)
