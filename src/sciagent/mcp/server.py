"""The catalogue as an MCP server: every tool with its own schemas, its errors in its own words.

Built on the SDK's low-level ``Server`` rather than ``MCPServer``: a catalogue tool already carries its
argument and result schemas (pydantic models, with cross-field rules such as "pressure needs explicit
solvent") and validates its own calls, while ``MCPServer`` would derive a second schema from a Python
signature. So ``tools/list`` shows ``Tool.parameters()`` and the result model's schema, and ``tools/call``
runs ``Tool.parse`` and ``Tool.run`` as the agent loop does:

- a call the model can fix (``ToolArgumentsError``) or a tool that failed (``ToolFailed``) is a tool
  error (``is_error``) whose text is our message, never the SDK's generic one;
- a result is structured content (the result model as JSON), with the same JSON as text for clients
  that read only text.

No call holds the connection for long: a simulation returns its task id at once (the task tools follow
it), a ``timeout_s`` argument is capped at ``max_wait_s``, a tool of cost ``hours`` starts in the
background (``background_calls``), and while a call runs the server sends a progress notification every
few seconds to clients that asked for them.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from pydantic import BaseModel

from sciagent.mcp.background import BackgroundCall, BackgroundCalls
from sciagent.tools.approval import Answerer, ApprovalPolicy, refusal
from sciagent.tools.registry import Effect, Tool, ToolArgumentsError, ToolContext, ToolFailed, ToolRegistry

log = logging.getLogger(__name__)

SERVER_NAME = "sciagent"
MAX_WAIT_S = 60.0  # the longest a served call may be asked to wait (wait_for_task's timeout_s)
PROGRESS_EVERY_S = 5.0
BACKGROUND_NOTE = " Served over MCP it starts in the background: follow its call id with background_call."
INSTRUCTIONS = (
    "sciagent's molecular-dynamics tools. simulate returns a task id at once: follow it with task_status "
    "or wait_for_task (each waits at most a minute: call again), collect it with task_result. Tasks live in "
    "the server's workspace, so a later connection can collect what an earlier one started (list_tasks)."
)


@dataclass(frozen=True)
class ServedApprovals:
    """How the server decides what it offers and whether a call runs: the same approval policy as a
    session (``sciagent.tools.approval``), who answers a call that must ask (None: no one, refused),
    and the tools the operator allowed when starting it (``--allow-tool``: served, and their calls
    that would ask are approved; a deny rule still refuses)."""

    policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    answer: Answerer | None = None
    preapproved: frozenset[str] = frozenset()

    def serves(self, tool: Tool, site: str) -> bool:
        return tool.name in self.preapproved or self.policy.serves_by_default(tool, site)

    def why_not(self, tool: Tool, arguments: BaseModel, context: ToolContext) -> str | None:
        """Why this call may not run, or None."""
        request = self.policy.request(tool, arguments, context)
        return refusal(request, self.answer, approved_up_front=tool.name in self.preapproved)


@dataclass(frozen=True)
class ServedCall:
    """One finished ``tools/call``: what the server's ``on_call`` hears (the session journals it)."""

    tool: str
    arguments: dict[str, Any]
    status: str  # "ok", "invalid" (the caller can fix it) or "failed"
    result: dict[str, Any] | None = None
    error: str | None = None


def catalogue_server(
    registry: ToolRegistry,
    context: ToolContext,
    *,
    on_call: Callable[[ServedCall], None] | None = None,
    approvals: ServedApprovals | None = None,
    max_wait_s: float = MAX_WAIT_S,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> Server:
    """An MCP server for the tools of ``registry`` that ``approvals`` serves, each run with ``context``.

    By default nothing that spends an allocation, destroys or runs model-written code is served, and
    each call is decided by the approval policy before it runs. Tools of cost ``hours`` run in the
    background: their call answers with a call id at once and the served ``background_call`` tool
    reports on it (see ``sciagent.mcp.background``).
    """
    approvals = approvals or ServedApprovals()
    site = context.tasks.default_site if context.tasks is not None else "local"
    background = BackgroundCalls(context, max_wait_s=max_wait_s)
    offered = [tool for tool in registry if approvals.serves(tool, site)]
    served = ToolRegistry.of([*offered, *background.tools()])
    listing = types.ListToolsResult(
        tools=[_described(tool, approvals.policy.effects_at(tool, site), max_wait_s) for tool in served]
    )
    schemas = {tool.name: tool.input_schema for tool in listing.tools}

    async def list_tools(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listing

    async def call_tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        raw = dict(params.arguments or {})
        try:
            tool = served.get(params.name)
            arguments = _capped(tool.parse(raw), max_wait_s)
            refused = await anyio.to_thread.run_sync(approvals.why_not, tool, arguments, context)
            if refused:
                raise ToolFailed(refused, "approval")
            if tool.cost == "hours":
                result: BaseModel = background.start(tool, arguments)
            else:
                work = functools.partial(tool.run, arguments, context)
                result = await _reporting(ctx, tool.name, work, progress_every_s)
        except (ToolArgumentsError, ToolFailed) as exc:
            status = "invalid" if isinstance(exc, ToolArgumentsError) else "failed"
            _tell(on_call, ServedCall(params.name, raw, status, error=str(exc)))
            return types.CallToolResult(content=[_text(str(exc))], is_error=True)
        data = result.model_dump(mode="json")
        _tell(on_call, ServedCall(params.name, raw, "ok", result=data))
        return types.CallToolResult(content=[_text(json.dumps(data))], structured_content=data)

    return Server(
        SERVER_NAME,
        version=version("sciagent"),
        instructions=INSTRUCTIONS,
        get_tool_input_schema=schemas.get,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(server: Server) -> None:
    """Serve one client on this process's stdin/stdout until it closes them."""
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _described(tool: Tool, effects: frozenset[Effect], max_wait_s: float) -> types.Tool:
    """The tool as ``tools/list`` shows it: the catalogue's description, both schemas (an hours tool's
    result is the background call it starts) and hints from what it does: read-only only for a tool
    that only reads (clients run those unasked), destructive where it destroys, open-world where it
    reaches outside or spends an allocation."""
    schema = tool.parameters()
    waits = schema.get("properties", {}).get("timeout_s")
    if waits is not None:  # the cap _capped applies, shown where the caller reads the limits
        schema = copy.deepcopy(schema)
        schema["properties"]["timeout_s"]["maximum"] = min(waits.get("maximum", max_wait_s), max_wait_s)
    description, result = tool.description, tool.result
    if tool.cost == "hours":
        description += BACKGROUND_NOTE
        result = BackgroundCall
    return types.Tool(
        name=tool.name,
        description=description,
        input_schema=schema,
        output_schema=result.model_json_schema(mode="serialization"),
        annotations=types.ToolAnnotations(
            read_only_hint=effects <= {"reads"},
            destructive_hint="destroys" in effects,
            open_world_hint=bool(effects & {"reaches_outside", "spends"}),
        ),
    )


def _capped(arguments: BaseModel, max_wait_s: float) -> BaseModel:
    """``arguments`` with a ``timeout_s`` over ``max_wait_s`` lowered to it: no served call waits long."""
    wait = getattr(arguments, "timeout_s", None)
    if isinstance(wait, (int, float)) and wait > max_wait_s:
        return arguments.model_copy(update={"timeout_s": max_wait_s})
    return arguments


async def _reporting(
    ctx: ServerRequestContext, label: str, work: Callable[[], BaseModel], every_s: float
) -> BaseModel:
    """Run ``work`` on a worker thread (tools are synchronous), reporting progress every ``every_s``."""
    started = time.monotonic()

    async def heartbeat() -> None:
        while True:
            await anyio.sleep(every_s)
            elapsed = time.monotonic() - started
            await ctx.session.report_progress(elapsed, None, f"{label}: running for {elapsed:.0f} s")

    async with anyio.create_task_group() as group:
        group.start_soon(heartbeat)
        value, error = await anyio.to_thread.run_sync(_outcome_of, work)
        group.cancel_scope.cancel()
    if error is not None:
        raise error
    return value


def _outcome_of(work: Callable[[], BaseModel]) -> tuple[Any, BaseException | None]:
    """``work()``'s value or exception as a pair, so that the exception leaves the task group unwrapped."""
    try:
        return work(), None
    except Exception as exc:
        return None, exc


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _tell(on_call: Callable[[ServedCall], None] | None, call: ServedCall) -> None:
    if on_call is not None:
        on_call(call)
