"""``sciagent llm ...`` and ``sciagent auth ...``: check, serve and list models; log in to the facility.

Exit codes follow ``sciagent.cli.common``: 2 when nothing could start (unknown profile, missing key,
rejected credentials), 1 when a service was asked and failed (unreachable endpoint, server crash).
Keys and tokens are never printed: errors pass through ``redaction.scrub`` in case a server echoed one.
"""

from __future__ import annotations

import signal
import time
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel
from rich.table import Table

from sciagent.agent.journal import JOURNAL_FILENAME, Journal
from sciagent.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, exits_on_error, fail, load_settings
from sciagent.console import err_console, out_console
from sciagent.errors import ModelError, RequestRejected, SciagentError, StructuredOutputError, UserError
from sciagent.llm import auth
from sciagent.llm.base import ChatModel, ToolSpec
from sciagent.llm.openai_compat import OpenAICompatModel
from sciagent.llm.profiles import all_profiles, key_source, make_model, resolve_profile
from sciagent.llm.structured import ask_structured
from sciagent.redaction import scrub
from sciagent.workflows.dialects import remember_dialect

if TYPE_CHECKING:
    from sciagent.llm.serve import ServerHandle

llm_app = typer.Typer(
    help="Language models: check an endpoint, serve one on this node, list the profiles.",
    no_args_is_help=True,
)
auth_app = typer.Typer(help="Log in to the facility inference service with Globus.", no_args_is_help=True)

_CHECK_PROMPT = [{"role": "user", "content": "Reply with one word: ready"}]
_TOOL_PROMPT = [{"role": "user", "content": "Call the ping tool now. Do not answer in text."}]
_PING = ToolSpec(
    name="ping",
    description="Answers a connectivity check. Call it with no arguments.",
    parameters={"type": "object", "properties": {}},
)
_STRUCTURED_PROMPT = [{"role": "user", "content": 'Are you ready? Answer in JSON: {"ready": true}'}]


class ServeBackend(str, Enum):
    llama_cpp = "llama-cpp"
    vllm = "vllm"


@llm_app.command()
def check(
    llm: Annotated[
        str | None, typer.Option("--llm", help="profile name (default: settings' default_llm)")
    ] = None,
) -> None:
    """Round trips to a model: served models, latency, tokens/s, and the structured style that works."""
    settings = load_settings()
    name = llm or settings.default_llm
    try:
        # A ModelAuthError is a UserError (exit 2): the user must fix a key or log in.
        with exits_on_error(describe=_redacted):
            name, profile = resolve_profile(name, settings.llm)
            model = make_model(name, settings.llm, workspace=settings.workspace)
            reply = model.chat(_CHECK_PROMPT, max_tokens=16, temperature=0.0)
    except ValueError as exc:  # a backend constructor refused the profile's values
        fail(f"profile {name}: {scrub(str(exc))}", EXIT_BAD_INPUT)
    rate = f"{reply.tokens_per_s:.1f}" if reply.tokens_per_s else "n/a"
    for label, value in (
        ("profile", name),
        ("endpoint", profile.base_url or "in process"),
        ("model", reply.model or model.model_id),
        ("models", _served_models(model)),
        ("latency", f"{reply.latency_s:.2f} s"),
        ("tokens/s", rate),
        ("reply", " ".join((reply.text or "").split())[:80]),
        ("structured", _structured_style(model, settings.workspace)),
        ("tools", _native_tools(model)),
    ):
        out_console.print(f"{label + ':':<12}{value}", highlight=False, markup=False, soft_wrap=True)


class _Ready(BaseModel):
    ready: bool


def _redacted(error: SciagentError) -> str:
    return scrub(str(error))


def _served_models(model: ChatModel) -> str:
    """What the endpoint lists at /v1/models; an in-process model serves only itself."""
    if not isinstance(model, OpenAICompatModel):
        return model.model_id
    try:
        return ", ".join(model.list_models()) or "none listed"
    except ModelError as exc:
        return f"not listed ({scrub(str(exc))})"


def _native_tools(model: ChatModel) -> str:
    """Whether the endpoint's model really calls a tool given with ``tools=``: one probe request.

    vLLM without ``--enable-auto-tool-choice`` rejects ``tools=`` (HTTP 400); llama.cpp's server and
    small models often answer in text. Either way the agent uses its constrained decision schema.
    """
    profile_says = "yes" if model.supports_native_tools else "no"
    if not isinstance(model, OpenAICompatModel):
        return "no: the in-process model decides through a grammar (decision schema)"
    try:
        reply = model.chat(_TOOL_PROMPT, tools=[_PING], max_tokens=48, temperature=0.0)
    except RequestRejected as exc:
        return f"no: the server refused tools= ({scrub(str(exc))}); profile says {profile_says}"
    except ModelError as exc:
        return f"not known: {scrub(str(exc))}"
    if any(call.name == _PING.name for call in reply.tool_calls):
        return f"yes: the model called the probe tool; profile says {profile_says}"
    return f"no: the model answered in text instead of calling the probe tool; profile says {profile_says}"


def _structured_style(model: ChatModel, workspace: Path) -> str:
    """The structured-output style the model answered in (negotiated for an endpoint), or why none did.

    Probed afresh from the profile's style; one that works is remembered in the workspace journal,
    where later runs start from it.
    """
    try:
        ask_structured(model, _STRUCTURED_PROMPT, _Ready, retries=0, max_tokens=32)
    except StructuredOutputError:
        return f"{model.response_format_style} accepted, but the reply did not validate"
    except ModelError as exc:
        return f"none works: {scrub(str(exc))}"
    if not isinstance(model, OpenAICompatModel):
        return f"{model.response_format_style} (in process)"
    with Journal.in_workspace(workspace) as journal:
        remember_dialect(journal, model)
    return f"{model.response_format_style} (remembered for later runs in {workspace / JOURNAL_FILENAME})"


@llm_app.command()
def serve(
    backend: Annotated[ServeBackend, typer.Option(help="llama-cpp (CPU) or vllm (GPU node)")],
    model: Annotated[
        str | None, typer.Option(help="GGUF path (llama-cpp; default: bundled SmolLM2) or model id (vllm)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="default 8080 for llama-cpp, 8000 for vllm")] = None,
    host: Annotated[str, typer.Option(help="listen address; 0.0.0.0 to serve other nodes")] = "127.0.0.1",
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs (vllm)")] = 1,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for the server to answer")] = 600.0,
    detach: Annotated[bool, typer.Option("--detach", help="return once ready; stop with `llm stop`")] = False,
) -> None:
    """Start a local OpenAI-compatible server; Ctrl-C stops it (or --detach and `sciagent llm stop`)."""
    from sciagent.llm import serve as servers

    kind = backend.value
    port = port or servers.DEFAULT_PORTS[kind]
    workdir = load_settings().workspace
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` of this command stops the server too
    owned = detached = False
    try:
        handle = _start(kind, model, port, host, workdir, ready_timeout, tensor_parallel_size)
        owned = True  # from here on, any way out of this command stops the server unless detached
        out_console.print(f"{kind} server ready at {handle.base_url} (pid {handle.pid})", highlight=False)
        out_console.print(f"log: {handle.log_file}", highlight=False, markup=False)
        out_console.print(
            f"API key (every request needs it): {servers.key_file(workdir, port)}, readable only by you",
            highlight=False, markup=False,
        )  # fmt: skip
        out_console.print(_profile_hint(kind, port, handle.base_url), highlight=False, markup=False)
        if detach:
            out_console.print(f"stop it with: sciagent llm stop --port {port}", highlight=False, markup=False)
            detached = True
            return
        while handle.alive:
            time.sleep(0.5)
    except KeyboardInterrupt:
        err_console.print(f"stopping the {kind} server on port {port}", highlight=False)
        return
    finally:
        if owned and not detached:
            for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
                signal.signal(sig, signal.SIG_IGN)
            servers.stop_server(workdir, port)
    err_console.print(servers.log_tail(handle.log_file), highlight=False, markup=False)
    fail(f"the {kind} server exited on its own; its log is {handle.log_file}", EXIT_FAILED)


def _start(
    kind: str, model: str | None, port: int, host: str, workdir: Path, ready_timeout: float, tp: int
) -> ServerHandle:
    """``start_server``, or a one-line error (plus the server log's tail when it crashed)."""
    from sciagent.llm import serve as servers

    with exits_on_error(describe=_after_the_log_tail):
        try:
            return servers.start_server(
                kind,  # type: ignore[arg-type]  # ServeBackend values are the Backend literals
                model=model,
                port=port,
                host=host,
                workdir=workdir,
                ready_timeout_s=ready_timeout,
                tensor_parallel_size=tp,
            )
        except KeyboardInterrupt:
            fail("interrupted before the server was ready; it was stopped", EXIT_FAILED)


def _after_the_log_tail(error: SciagentError) -> str:
    """A server that failed to start carries its log's tail after the first line: print the tail, keep
    the line for the error. A ``UserError`` (bad option, busy port) is reported as it is."""
    if isinstance(error, UserError):
        return str(error)
    first, _, tail = str(error).partition("\n")
    if tail:
        err_console.print(tail, highlight=False, markup=False)
    return first


@llm_app.command()
def stop(port: Annotated[int | None, typer.Option(help="only the server on this port")] = None) -> None:
    """Stop the servers that `sciagent llm serve` recorded in this workspace."""
    from sciagent.llm import serve as servers

    workdir = load_settings().workspace
    stopped = servers.stop_server(workdir, port) if workdir.is_dir() else []
    if not stopped:
        where = f" on port {port}" if port else ""
        out_console.print(f"no server{where} recorded in {workdir}", highlight=False, markup=False)
    for each in stopped:
        out_console.print(f"stopped the server on port {each}", highlight=False)


@llm_app.command()
def profiles() -> None:
    """List the model profiles (built-in and from config files) and whether each one's key is available."""
    settings = load_settings()
    table = Table("profile", "kind", "auth", "key")
    table.add_column("endpoint", overflow="fold")  # a truncated URL is useless; fold it instead
    table.add_column("model", overflow="fold")
    for name, profile in sorted(all_profiles(settings.llm).items()):
        label = f"{name} (default)" if name == settings.default_llm else name
        model = profile.model or ("bundled SmolLM2" if profile.kind == "embedded" else "first served")
        endpoint = profile.base_url or "in process"
        table.add_row(label, profile.kind, profile.auth, key_source(profile), endpoint, model)
    out_console.print(table)


@auth_app.command()
def login() -> None:
    """Log in with Globus (ANL/ALCF identity) and store refreshable tokens for the inference service."""
    with exits_on_error():
        state = auth.login(input_fn=input, print_fn=typer.echo)  # plain echo: a wrapped URL would break
    out_console.print(f"logged in; tokens stored in {state.token_file}", highlight=False, markup=False)


@auth_app.command()
def status() -> None:
    """Whether a login is stored, until when its access token is valid, and its scopes (never the token)."""
    state = auth.status()
    if state.env_override:
        out_console.print(
            f"{state.env_override} is set: it is used instead of any stored login", markup=False
        )
    if state.problem:
        fail(state.problem, EXIT_FAILED)
    if not state.logged_in:
        if state.env_override:
            return
        fail("not logged in: run `sciagent auth login`", EXIT_FAILED)
    expires = state.expires_at.isoformat(timespec="seconds") if state.expires_at else "unknown"
    refresh = "renewed automatically" if state.refreshable else "not renewable: log in again when it expires"
    for label, value in (
        ("token file", str(state.token_file)),
        ("expires", f"{expires} ({refresh})"),
        ("scopes", " ".join(state.scopes) or "none"),
    ):
        out_console.print(f"{label + ':':<12}{value}", highlight=False, markup=False, soft_wrap=True)


@auth_app.command()
def logout() -> None:
    """Revoke the stored tokens (when Globus can be reached) and delete them."""
    result = auth.logout()
    if not result.removed:
        out_console.print("not logged in: nothing to remove", markup=False)
    elif result.revoked:
        out_console.print("logged out: tokens revoked and deleted", markup=False)
    else:
        out_console.print(
            "logged out: tokens deleted (Globus could not be asked to revoke them)", markup=False
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _profile_hint(backend: str, port: int, base_url: str) -> str:
    from sciagent.llm.serve import DEFAULT_PORTS

    profile = {"llama-cpp": "llama-cpp-local", "vllm": "vllm-local"}[backend]
    if port == DEFAULT_PORTS[backend]:
        return f"use it with: --llm {profile}"
    return (
        f'use it with a profile: [llm.mine] base_url = "{base_url}", auth = "llm-serve" (in your '
        "~/.config/sciagent/config.toml), then --llm mine"
    )
