"""A model that is still loading: the study starts now, its first model call waits for the health gate.

A continuation job's plan is fixed: its simulations need no model to restart, only their next decision
does. Loading a large model takes minutes of every device on the node; handing the study this stand-in
lets the simulation devices work during that time instead of idling (the allocation table shows it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sciagent.errors import ModelUnavailable
from sciagent.llm.base import ChatModel, ChatResponse, Message, OutputSchema, ResponseFormatStyle, ToolSpec


class ModelWhenReady:
    """Delegates to the model ``connect`` builds once ``ready`` is set; raises the gate's failure, if any.

    The attributes a caller reads before the first call (id, dialect, tool support) are the profile's,
    known before the server answers.
    """

    def __init__(
        self,
        *,
        model_id: str,
        base_url: str | None,
        supports_native_tools: bool,
        response_format_style: ResponseFormatStyle,
        guided: bool,
        connect: Callable[[], ChatModel],
        wait_s: float,
    ) -> None:
        self.model_id = model_id
        self.base_url = base_url
        self.supports_native_tools = supports_native_tools
        self.response_format_style: ResponseFormatStyle = response_format_style
        self.guided = guided
        self.ready = threading.Event()
        self.failure: str | None = None
        self._connect = connect
        self._wait_s = wait_s
        self._model: ChatModel | None = None

    def fail(self, reason: str) -> None:
        """The server will not come: every waiting and later call raises ``ModelUnavailable(reason)``."""
        self.failure = reason
        self.ready.set()

    def chat(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        output_schema: OutputSchema | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResponse:
        model = self._connected()
        model.response_format_style = self.response_format_style
        response = model.chat(
            messages, tools=tools, output_schema=output_schema, temperature=temperature, max_tokens=max_tokens
        )
        self.response_format_style = model.response_format_style  # what the endpoint accepted last
        return response

    def _connected(self) -> ChatModel:
        if not self.ready.wait(self._wait_s):
            raise ModelUnavailable(f"the model server in this job was not ready within {self._wait_s:.0f} s")
        if self.failure is not None:
            raise ModelUnavailable(self.failure)
        if self._model is None:
            self._model = self._connect()
        return self._model
