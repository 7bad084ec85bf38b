"""Tool calls that take hours, run in the background of an MCP server.

An MCP call should end within seconds to minutes (clients time out, connections drop), while a whole
study (``run_stability_study``) runs for hours. So the server starts such a call on a thread of its own
and answers at once with a call id; the served ``background_call`` tool waits a little for it and says
how it stands, with its result once it has one.

Such a call lives as long as the server process. A study keeps its own journal (``studies/`` in the
served session's directory), so one that a stopped server cut short is continued with
``sciagent resume RUN --workspace <that directory>``.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sciagent.tools.registry import Tool, ToolArgumentsError, ToolContext, ToolFailed, define_tool


class BackgroundArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"call_id": "call-1"}]})

    call_id: str = Field(description="the id a long tool's call answered with, e.g. 'call-1'")
    timeout_s: float = Field(default=30.0, gt=0, le=3600, description="longest wait, seconds")


class BackgroundCall(BaseModel):
    call_id: str
    tool: str
    state: Literal["running", "completed", "failed"]
    elapsed_s: float
    result: dict[str, Any] | None = Field(default=None, description="the tool's result, once completed")
    error: str | None = Field(default=None, description="why it failed")


@dataclass(frozen=True)
class _Call:
    tool: str
    started: float
    future: futures.Future


@dataclass
class BackgroundCalls:
    """A server's background calls by id; each runs ``tool.run(arguments, context)`` on a daemon thread
    (a daemon, so that a server told to stop is not held up by a study it started)."""

    context: ToolContext
    max_wait_s: float
    _calls: dict[str, _Call] = field(default_factory=dict)
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def tools(self) -> list[Tool]:
        """The served tool that follows these calls."""
        return [define_tool(self.background_call, effects={"reads"}, cost="minutes")]

    def start(self, tool: Tool, arguments: BaseModel) -> BackgroundCall:
        """Start ``tool`` on validated ``arguments``; its state (running) at once."""
        call = _Call(tool.name, time.monotonic(), futures.Future())
        call_id = f"call-{next(self._numbers)}"
        self._calls[call_id] = call
        threading.Thread(
            target=_run, args=(tool, arguments, self.context, call.future), name=call_id, daemon=True
        ).start()
        return _state(call_id, call)

    def background_call(self, arguments: BackgroundArguments, context: ToolContext) -> BackgroundCall:
        """How a long tool call (one that answered with a call id, such as run_stability_study) stands:
        waits up to timeout_s for it to finish, then returns its state, and its result once completed."""
        call = self._calls.get(arguments.call_id)
        if call is None:
            known = ", ".join(self._calls) or "none yet"
            raise ToolArgumentsError(f"no background call {arguments.call_id!r} (calls: {known})")
        futures.wait([call.future], timeout=min(arguments.timeout_s, self.max_wait_s))
        return _state(arguments.call_id, call)


def _run(tool: Tool, arguments: BaseModel, context: ToolContext, future: futures.Future) -> None:
    try:
        future.set_result(tool.run(arguments, context))
    except Exception as exc:  # the thread's end: whatever it was, the caller reads it from the future
        future.set_exception(exc)


def _state(call_id: str, call: _Call) -> BackgroundCall:
    elapsed = round(time.monotonic() - call.started, 1)
    state = BackgroundCall(call_id=call_id, tool=call.tool, state="running", elapsed_s=elapsed)
    if not call.future.done():
        return state
    error = call.future.exception()
    if error is None:
        result = call.future.result().model_dump(mode="json")
        return state.model_copy(update={"state": "completed", "result": result})
    if not isinstance(error, (ToolArgumentsError, ToolFailed)):
        error = ToolFailed(f"{call.tool}: {type(error).__name__}: {error}")
    return state.model_copy(update={"state": "failed", "error": str(error)})
