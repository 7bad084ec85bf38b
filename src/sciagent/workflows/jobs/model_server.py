"""The model server a batch job starts on its own share of the node, and the gate it must pass first.

A server that lists its models is not yet a server that answers: vLLM can list a model whose
weights failed to fit, and any server can answer ``/v1/models`` while its completions fail. The
facility's own single-system example checks health and then ignores the result. So the gate has
two stages, within ``ModelInJob.ready_timeout_s`` together: (1) ``GET /v1/models`` answers with
the server's key (``start_server`` waits for it, and notices a server that exits first), then (2) a
one-token chat completion returns a choice. A server that fails either is stopped, with its whole
process group, and ``HealthGateFailed`` says which stage failed and ends with the server log's tail,
so the supervisor can record why and use a fallback profile or end the job.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sciagent.config import Settings
from sciagent.errors import ConfigError, ModelError, ModelUnavailable, SciagentError
from sciagent.llm.profiles import BUILTIN_PROFILES, LLMProfile, make_model, resolve_profile
from sciagent.llm.serve import ServerHandle, key_file, log_tail, start_server, stop_server
from sciagent.workflows.jobs.devices import NodeSplit, pinning_preexec
from sciagent.workflows.jobs.spec import ModelInJob

SERVED_PROFILE = "llm-in-job"  # the name the study is handed the served model under (Settings.llm)
REACHABLE_TIMEOUT_S = 10.0
_PROFILE_BASE = {"llama-cpp": "llama-cpp-local", "vllm": "vllm-local"}  # the served dialect of each backend


class HealthGateFailed(SciagentError):
    """The model server did not start, or failed a stage of the health gate; it has been stopped.

    Attributes:
        stage: ``start`` (it could not be launched), ``models`` (``GET /v1/models`` never answered,
            or the server exited) or ``completion`` (the one-token completion failed).
        reason: what went wrong, in one line.
        log_tail: the last lines of the server's log ("" when it never started).
    """

    def __init__(self, stage: str, reason: str, log_tail: str = "") -> None:
        message = f"the model server failed its health gate at stage {stage!r}: {reason}"
        if log_tail:
            message += f"\nlast lines of the server log:\n{log_tail}"
        super().__init__(message)
        self.stage = stage
        self.reason = reason
        self.log_tail = log_tail


@dataclass(frozen=True)
class ServedModel:
    """A model server that passed the health gate.

    Attributes:
        profile: how the study reaches it; put it in ``Settings.llm[SERVED_PROFILE]`` and build the
            model with ``make_model(SERVED_PROFILE, settings.llm, workspace=workdir)`` (its key is
            read from ``workdir``, as ``served_key`` does).
        handle: the server's record (pid, port, log file).
        workdir: where the server's pid, key and log files are.
        ready_s: seconds from launch until both stages of the gate passed.
    """

    profile: LLMProfile
    handle: ServerHandle
    workdir: Path
    ready_s: float

    def stop(self) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL) and remove its records."""
        stop_server(self.workdir, self.handle.port)


def serve_model(model: ModelInJob, split: NodeSplit, workdir: Path) -> ServedModel:
    """Start ``model`` on its share of the node (``split``) on a free port and pass the health gate.

    Args:
        model: what to serve and how long it may take to be ready.
        split: the node split (the server's visible GPUs, CPUs and threads).
        workdir: where the server's pid, key and log go: the workspace the study's ``make_model`` reads.

    Raises:
        HealthGateFailed: the server could not start or failed a stage; nothing of it is left running.
    """
    started = time.monotonic()
    port = _free_port()
    vllm = model.backend == "vllm"
    try:
        handle = start_server(
            model.backend,
            model=model.model,
            port=port,
            workdir=workdir,
            ready_timeout_s=model.ready_timeout_s,
            tensor_parallel_size=len(split.model_devices) if vllm else 1,
            env=split.model_env,
            preexec=pinning_preexec(split.model_cpus) if split.model_cpus else None,
            threads=split.model_threads,
            gpu_memory_fraction=model.gpu_memory_fraction if vllm else None,
        )
    except ConfigError as exc:
        raise HealthGateFailed("start", str(exc)) from exc
    except ModelUnavailable as exc:  # exited, or not answering in time: start_server stopped it
        reason = str(exc).split("; last lines of", 1)[0].splitlines()[0]
        raise HealthGateFailed("models", reason, log_tail(workdir / f"llm-server-{port}.log")) from exc
    try:
        key = key_file(workdir, port).read_text()
        model_id = _one_token(handle.base_url, key, model.ready_timeout_s - (time.monotonic() - started))
    except (HealthGateFailed, OSError) as exc:
        stop_server(workdir, port)
        reason = exc.reason if isinstance(exc, HealthGateFailed) else f"cannot read the server's key: {exc}"
        raise HealthGateFailed("completion", reason, log_tail(handle.log_file)) from exc
    except BaseException:  # Ctrl-C or a signal during the gate: leave nothing behind
        stop_server(workdir, port)
        raise
    base = BUILTIN_PROFILES[_PROFILE_BASE[model.backend]]
    profile = LLMProfile.model_validate(base.model_dump() | {"base_url": handle.base_url, "model": model_id})
    return ServedModel(profile=profile, handle=handle, workdir=workdir, ready_s=time.monotonic() - started)


def _one_token(base_url: str, key: str, timeout_s: float) -> str:
    """Ask the server for its model and a one-token completion from it; returns the model id.

    Raises:
        HealthGateFailed: (stage ``completion``) no time left, an HTTP error, or no choice returned.
    """
    if timeout_s <= 0:
        raise HealthGateFailed(
            "completion", "no time left for a completion after the server listed its models"
        )
    deadline = time.monotonic() + timeout_s
    listed = _call(f"{base_url}/models", key, None, timeout_s)
    models = [entry.get("id") for entry in listed.get("data") or [] if isinstance(entry, dict)]
    if not models or not isinstance(models[0], str):
        raise HealthGateFailed("completion", f"{base_url}/models lists no model to ask")
    ask = {"model": models[0], "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
    answer = _call(f"{base_url}/chat/completions", key, ask, max(deadline - time.monotonic(), 0.1))
    if not answer.get("choices"):
        raise HealthGateFailed(
            "completion", f"the completion from {models[0]} has no choices: {str(answer)[:200]}"
        )
    return models[0]


def _call(url: str, key: str, body: dict | None, timeout_s: float) -> dict:
    """One JSON request to the local server, never through a proxy; errors as ``HealthGateFailed``."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    what = "POST" if body is not None else "GET"
    try:
        with opener.open(request, timeout=timeout_s) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        said = " ".join(exc.read().decode(errors="replace").split())[:300]
        raise HealthGateFailed("completion", f"{what} {url} answered HTTP {exc.code}: {said}") from exc
    except (OSError, ValueError) as exc:  # refused, reset, timed out, or not JSON
        raise HealthGateFailed("completion", f"{what} {url} failed: {exc}") from exc


def check_reachable(profile_name: str, settings: Settings) -> None:
    """Check that a fallback profile's endpoint answers ``GET /models`` with its credentials, quickly.

    Done before the job relies on it, so a fallback that cannot help is reported at once rather
    than after the served model failed. An ``embedded`` profile runs in this process: nothing to reach.

    Raises:
        ConfigError: unknown profile, or a key it needs is not available.
        ModelError: the endpoint did not answer, or refused the credentials; one line naming the profile.
    """
    name, profile = resolve_profile(profile_name, settings.llm)
    if profile.kind == "embedded":
        return
    quick = profile.model_copy(update={"timeout_s": REACHABLE_TIMEOUT_S, "max_retries": 0, "model": None})
    try:
        make_model(name, {name: quick}, workspace=settings.workspace)  # model None: it lists the models
    except ModelError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelUnavailable(
            f"fallback profile {name} is not reachable at {profile.base_url}: {first}"
        ) from exc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
