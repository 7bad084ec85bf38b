"""A real OpenAI-protocol HTTP server for tests: the boundary stand-in for vLLM and facility endpoints.

Production talks to vLLM on a GPU node, llama.cpp's server, or a facility's inference service, all
through the ``openai`` SDK over HTTP. Tests must exercise that same path (the SDK, real sockets, real
status codes, real headers, real timeouts) without mocking our own code, so this module runs a small
``ThreadingHTTPServer`` on ``127.0.0.1`` (a free port) that speaks the chat-completions protocol and
answers from a script.

Usage::

    with OpenAIServer() as server:          # or the ``openai_server`` pytest fixture
        server.script(status_reply(429, retry_after=1), text_reply("hello"))
        model = OpenAICompatModel(server.base_url, "test-model")
        ...
        assert len(server.requests) == 2
        assert server.requests[0].headers["authorization"] == "Bearer ..."

Scripted replies are consumed in order, one per request to their path (``/v1/chat/completions``
unless ``script(..., path=...)`` says otherwise). A reply is built with one of the helpers:
``text_reply``, ``tool_call_reply``, ``json_reply``, ``status_reply``, ``slow_reply`` (a delay before
replying) or ``drop_connection`` (the request is read, then the socket is closed with no answer).
``respond(fn)`` answers the chat requests that the script leaves unanswered with ``fn(request)``.

With nothing scripted, ``GET /v1/models`` lists ``server.models``; a chat completion gets HTTP 418
with a message saying the script ran out (a 4xx, so clients do not retry it and the test fails
with a clear message); any other path gets 404.

Every request is recorded (method, path, lower-cased headers, decoded JSON body) in
``server.requests`` so tests can assert what the client sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, a body (JSON-encoded unless a ``str``), headers, a delay."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent. ``headers`` has lower-case names; ``body`` is the decoded JSON or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


def completion_body(
    message: dict[str, Any],
    *,
    model: str = "test-model",
    finish_reason: str = "stop",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice carrying ``message``."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_reply(text: str, **kwargs: Any) -> Reply:
    """The assistant answers ``text``. Keyword arguments go to ``completion_body`` (model, usage...)."""
    return Reply(body=completion_body({"role": "assistant", "content": text}, **kwargs))


def tool_call_reply(
    name: str, arguments: dict[str, Any] | str, *, call_id: str = "call_1", **kwargs: Any
) -> Reply:
    """The assistant calls tool ``name``; a ``str`` is sent verbatim, so it may be invalid JSON."""
    return tool_calls_reply([(name, arguments)], first_id=call_id, **kwargs)


def tool_calls_reply(
    calls: list[tuple[str, dict[str, Any] | str]], *, first_id: str = "call_1", **kwargs: Any
) -> Reply:
    """The assistant calls several tools in one turn (ids ``call_1``, ``call_2``, ...)."""
    listed = []
    for number, (name, arguments) in enumerate(calls):
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call_id = first_id if number == 0 else f"call_{number + 1}"
        listed.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}})
    message = {"role": "assistant", "content": None, "tool_calls": listed}
    kwargs.setdefault("finish_reason", "tool_calls")
    return Reply(body=completion_body(message, **kwargs))


def json_reply(body: Any, status: int = 200) -> Reply:
    """Answer exactly ``body`` (a JSON value, or a ``str`` sent as-is) with ``status``."""
    return Reply(status=status, body=body)


def status_reply(status: int, *, retry_after: float | str | None = None, message: str | None = None) -> Reply:
    """An HTTP error in the OpenAI error format, optionally with a ``Retry-After`` header."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    error = {"message": message or f"test server error {status}", "type": "error", "code": status}
    return Reply(status=status, body={"error": error}, headers=headers)


# What llama-cpp-python's server (0.3.x) answers to ``response_format: json_schema``: HTTP 500 carrying
# its request validation error (captured from `python -m llama_cpp.server` with the bundled model).
LLAMA_CPP_REJECTS_JSON_SCHEMA = status_reply(
    500,
    message="1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}\n\n  File "
    '"llama_cpp/server/app.py", line 376, in create_chat_completion\n    POST /v1/chat/completions',
)


# What vLLM answers to ``tools=`` when it was started without ``--enable-auto-tool-choice``: HTTP 400
# (vLLM's serving_chat.py; the text as users report it in vLLM's issues and its tool-calling docs).
VLLM_REJECTS_AUTO_TOOL_CHOICE = status_reply(
    400, message='"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)


def slow_reply(seconds: float, reply: Reply | None = None) -> Reply:
    """``reply`` (by default a text reply) after waiting ``seconds``: to make clients time out."""
    base = reply if reply is not None else text_reply("slow answer")
    return Reply(status=base.status, body=base.body, headers=base.headers, delay_s=seconds, drop=base.drop)


def drop_connection() -> Reply:
    """Read the request, then close the socket without answering (a crashed or restarting server)."""
    return Reply(drop=True)


class OpenAIServer:
    """A scripted OpenAI-compatible server on ``127.0.0.1``; use as a context manager.

    Attributes:
        base_url: what a client uses as its base URL (ends in ``/v1``, like vLLM's).
        requests: every request received, in order.
        models: the model ids ``GET /v1/models`` lists when nothing is scripted for that path.
    """

    def __init__(self, models: list[str] | None = None, port: int = 0) -> None:
        self.models = list(models) if models is not None else ["test-model"]
        self.requests: list[RecordedRequest] = []
        self._queues: dict[str, deque[Reply]] = {}
        self._responder: Callable[[RecordedRequest], Reply] | None = None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))  # 0: a free port
        self._httpd.daemon_threads = True  # a slow reply must not hold up shutdown
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="openai-test-server",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *replies: Reply, path: str = CHAT_PATH) -> None:
        """Queue ``replies`` for requests to ``path``, after any already queued."""
        with self._lock:
            self._queues.setdefault(path, deque()).extend(replies)

    def respond(self, responder: Callable[[RecordedRequest], Reply]) -> None:
        """Answer chat requests that find no scripted reply with ``responder(request)``.

        For clients whose requests come in an order a test cannot fix (a workflow killed and resumed
        at random moments): the reply is chosen by what the request asks.
        """
        with self._lock:
            self._responder = responder

    def pending(self, path: str = CHAT_PATH) -> int:
        """How many scripted replies for ``path`` have not been used yet."""
        with self._lock:
            return len(self._queues.get(path, ()))

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded chat-completion requests (the ones most tests look at)."""
        return [r for r in self.requests if r.path == CHAT_PATH]

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            queue = self._queues.get(request.path)
            if queue:
                return queue.popleft()
            responder = self._responder
        if responder is not None and request.path == CHAT_PATH:
            return responder(request)
        if request.method == "GET" and request.path == MODELS_PATH:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in self.models]
            return json_reply({"object": "list", "data": data})
        if request.path == CHAT_PATH:
            return status_reply(418, message="openai test server: no scripted reply left for this request")
        return status_reply(404, message=f"openai test server: no route for {request.method} {request.path}")


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server._next_reply(RecordedRequest(self.command, self.path, headers, body))
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            data = payload.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timed out) before the slow reply was ready
                self.close_connection = True

    return Handler
