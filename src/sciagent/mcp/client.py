"""External MCP servers' tools in a session's catalogue (``[mcp.NAME]`` in sciagent.toml, ``--mcp NAME``).

Each server is one ``McpConnection``, held open for the whole session: a child process speaking MCP on
stdin/stdout (``command``) or a streamable-HTTP session (``url``, bearer token from ``token_env``). The
SDK is asynchronous and the agent loop is not, so each connection runs its ``Client`` on an event loop
of its own in a background thread (an anyio blocking portal) and the tools call through it.

Nothing a server does crashes a session: one that cannot start, or does not answer within
``timeout_s``, or dies mid-session, is reported through ``on_problem`` (the session journals it and
tells the model) and its calls become failed-tool observations. A child process is ended with the
session (the SDK closes its stdin, then terminates its process group).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, Field

from sciagent.config import McpServerConfig
from sciagent.errors import ConfigError, SciagentError
from sciagent.redaction import register_secret
from sciagent.tools.registry import Effect, OpenArguments, SchemaTool, Tool, ToolContext, ToolFailed

# What a model endpoint accepts as a function name (OpenAI's rule); the NAME. prefix is added to it.
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLOSE_WAIT_S = 10.0  # the SDK gives a child 2 s after its stdin closes, then 2 s after SIGTERM


class McpUnavailable(SciagentError):
    """An external MCP server could not be started or reached, or did not answer in time."""


class ExternalResult(BaseModel):
    server: str
    tool: str = Field(description="the tool's name on its server")
    text: str = Field(description="the text the server answered with")
    structured: dict[str, Any] | None = Field(default=None, description="its structured result, if any")


@dataclass
class McpConnection:
    """One external server, open from ``open()`` to ``close()``.

    ``on_problem`` hears of allow-listed tools the server lacks, and of the first call it failed to answer
    (later ones fail the same way: the model reads each, the journal gets one event).
    """

    name: str
    config: McpServerConfig
    on_problem: Callable[[str], None] = lambda message: None
    _portal_cm: AbstractContextManager[BlockingPortal] | None = None
    _portal: BlockingPortal | None = None
    _held: futures.Future | None = None
    _client: Client | None = None
    _stop: anyio.Event | None = None
    _failed: bool = False

    def open(self) -> list[types.Tool]:
        """Start or reach the server and list its tools.

        Raises:
            ConfigError: its ``token_env`` is not set.
            McpUnavailable: it did not start, could not be reached or did not answer in time.
        """
        headers = self._headers()
        self._portal_cm = start_blocking_portal(name=f"mcp-{self.name}")
        self._portal = self._portal_cm.__enter__()
        try:
            self._held, listed = self._portal.start_task(self._hold, headers)
        except Exception as exc:  # the SDK's and the transport's errors, whatever their type: one line
            self.close()
            message = f"MCP server {self.name} {self._where()} could not be started or reached: {_why(exc)}"
            raise McpUnavailable(message) from exc
        return listed

    def tools(self, listed: Sequence[types.Tool]) -> list[Tool]:
        """``listed`` as catalogue tools named ``NAME.tool``, only those the allow-list names."""
        allowed = self.config.tools
        offered = {tool.name for tool in listed}
        missing = sorted(set(allowed or ()) - offered)
        if missing:
            self.on_problem(f"MCP server {self.name} has no tool {', '.join(missing)} (allow-listed)")
        chosen = [tool for tool in listed if allowed is None or tool.name in allowed]
        unusable = [tool.name for tool in chosen if not _REMOTE_NAME.match(tool.name)]
        if unusable:
            self.on_problem(f"MCP server {self.name}: tool names a model cannot call, left out: {unusable}")
        return [self._adapter(tool) for tool in chosen if tool.name not in unusable]

    def call(self, tool: str, arguments: dict[str, Any]) -> ExternalResult:
        """Call ``tool`` on the server.

        Raises:
            ToolFailed: the server answered with a tool error, or did not answer (gone, timed out).
        """
        if self._portal is None or self._client is None or self._held is None or self._held.done():
            raise ToolFailed(f"MCP server {self.name} is no longer running", "mcp")
        try:
            answer = self._portal.call(self._client.call_tool, tool, arguments)
        except Exception as exc:  # transport closed, timeout, protocol error: the server is unusable now
            message = f"MCP server {self.name} did not answer {tool}: {_why(exc)}"
            if not self._failed:
                self._failed = True
                self.on_problem(message)
            raise ToolFailed(message, "mcp") from exc
        text = "\n".join(block.text for block in answer.content if isinstance(block, types.TextContent))
        if answer.is_error:
            raise ToolFailed(f"{self.name}.{tool}: {text or 'the server reported an error'}", "mcp")
        return ExternalResult(server=self.name, tool=tool, text=text, structured=answer.structured_content)

    def close(self) -> None:
        """Leave the server (ending a child process); safe to call twice, or after a failure."""
        portal, self._portal = self._portal, None
        if portal is None:
            return
        if self._stop is not None and self._held is not None and not self._held.done():
            portal.call(self._stop.set)
            futures.wait([self._held], timeout=CLOSE_WAIT_S)
        if self._portal_cm is not None:
            self._portal_cm.__exit__(None, None, None)

    async def _hold(self, headers: dict[str, str], *, task_status: TaskStatus[list[types.Tool]]) -> None:
        """The connection's life, in one task (the SDK's task groups must open and close in the same one)."""
        async with AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(
                Client(await self._transport(stack, headers), read_timeout_seconds=self.config.timeout_s)
            )
            listed = await _all_tools(self._client)
            self._stop = anyio.Event()
            task_status.started(listed)
            await self._stop.wait()

    def _headers(self) -> dict[str, str]:
        """The HTTP headers: the bearer token from ``token_env``, if it has one."""
        if not self.config.token_env:
            return {}
        token = os.environ.get(self.config.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"MCP server {self.name}: its token_env {self.config.token_env} is not set in the environment"
            )
        register_secret(token)  # never in the journal, a report or a log line
        return {"Authorization": f"Bearer {token}"}

    async def _transport(self, stack: AsyncExitStack, headers: dict[str, str]) -> Any:
        if self.config.command is not None:
            program, *arguments = self.config.command
            return StdioServerParameters(command=program, args=arguments)
        timeout = httpx2.Timeout(self.config.timeout_s)
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=timeout))
        return streamable_http_client(str(self.config.url), http_client=http)

    def _adapter(self, listed: types.Tool) -> SchemaTool:
        """A tool of the server as a catalogue tool with the server's own schema (the server validates
        its calls itself)."""

        def function(arguments: OpenArguments, context: ToolContext) -> ExternalResult:
            return self.call(listed.name, arguments.model_dump())

        description = (listed.description or listed.title or listed.name).strip().split("\n\n")[0]
        return SchemaTool(
            name=f"{self.name}.{listed.name}",
            description=f"[MCP server {self.name}] {' '.join(description.split())}",
            arguments=OpenArguments,
            result=ExternalResult,
            function=function,
            cost="minutes",
            effects=self._effects(listed),
            input_schema=dict(listed.input_schema),
        )

    def _effects(self, listed: types.Tool) -> frozenset[Effect]:
        """What a call of ``listed`` does, as far as we may believe: it reaches outside (to the server),
        and it destroys if the server says so. A read-only hint is believed only from a server the
        user's own configuration trusts (``trusted = true``): any server can claim it."""
        hints = listed.annotations
        if self.config.trusted and hints is not None and hints.read_only_hint is True:
            return frozenset({"reads"})
        if hints is not None and hints.destructive_hint is True:
            return frozenset({"reaches_outside", "destroys"})
        return frozenset({"reaches_outside"})

    def _where(self) -> str:
        return f"({' '.join(self.config.command)})" if self.config.command else f"at {self.config.url}"


@contextmanager
def external_tools(
    names: Sequence[str], servers: Mapping[str, McpServerConfig], on_problem: Callable[[str, str], None]
) -> Iterator[list[Tool]]:
    """The tools of each server ``names`` names, namespaced ``NAME.tool``, while the block runs.

    A server that cannot start (or whose token is not set) is left out and reported through
    ``on_problem(name, message)``, as is one that fails later; every connection is closed (children
    ended) on the way out.

    Raises:
        ConfigError: a name has no ``[mcp.NAME]`` table (before anything starts).
    """
    check_names(names, servers)
    with ExitStack() as stack:
        tools: list[Tool] = []
        for name in dict.fromkeys(names):
            connection = McpConnection(name, servers[name], lambda text, name=name: on_problem(name, text))
            try:
                listed = connection.open()
            except (McpUnavailable, ConfigError) as exc:  # its token is missing: the session goes on too
                on_problem(name, str(exc))
                continue
            stack.callback(connection.close)
            tools += connection.tools(listed)
        yield tools


def check_names(names: Sequence[str], servers: Mapping[str, McpServerConfig]) -> None:
    """``ConfigError`` for the first name without an ``[mcp.NAME]`` table."""
    for name in names:
        if name not in servers:
            known = ", ".join(sorted(servers)) or "none: add an [mcp.NAME] table to sciagent.toml"
            raise ConfigError(f"no MCP server named {name!r} (configured: {known})")


async def _all_tools(client: Client) -> list[types.Tool]:
    """Every page of the server's tool listing."""
    page = await client.list_tools()
    tools = list(page.tools)
    while page.next_cursor:
        page = await client.list_tools(cursor=page.next_cursor)
        tools += page.tools
    return tools


def _why(error: BaseException) -> str:
    """One line for what went wrong, from the innermost error of an exception group."""
    while getattr(error, "exceptions", None):  # an ExceptionGroup (a builtin from Python 3.11 on)
        error = error.exceptions[0]  # type: ignore[attr-defined]
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
