"""The web UI's routes: the page, its JSON API, the live streams, a run's files, the actions.

Routes (all behind ``auth.TokenGate``; errors are ``{"error": "one line"}`` with 400, 403, 404, 409):

- ``GET /`` the page (``static/index.html`` with the token in its ``sciagent-token`` meta tag, for the
  header its POSTs send); ``GET /static/<file>`` its script and style.
- ``GET /api/runs?kind=&status=&q=`` the runs list; ``GET /api/runs/<id>`` a run's page;
  ``GET /api/runs/<id>/telemetry`` its simulations' telemetry. Each JSON snapshot carries ``cursor``.
- ``GET /api/runs/<id>/stream`` and ``GET /api/stream`` server-sent events (``feed``) from
  ``Last-Event-ID``, else ``?after=N``, else now.
- ``GET /files/<id>/<path>`` a file of the run's directory, never one outside it, always with
  ``Content-Security-Policy: sandbox``: a report (or any HTML a model wrote) is shown without scripts
  and in an origin of its own, so it cannot read the token or act through the API.
- ``POST /api/runs/<id>/approvals/<request>``, ``/tell``, ``/tasks/<key>/cancel``, ``/stop``: one journal
  event each (``actions``), as the terminal's commands write.

The journal is opened per request (sync routes run in Starlette's thread pool; a connection stays in its
thread) and per stream, so a slow reader never holds another's connection.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sciagent.agent.journal import JOURNAL_FILENAME, Journal
from sciagent.agent.journal_rows import RunRow
from sciagent.errors import UserError
from sciagent.ui import actions, feed
from sciagent.ui.auth import TokenGate
from sciagent.ui.queries import run_detail, run_telemetry, runs_list
from sciagent.ui.rundir import confined_file, run_dir

STATIC = Path(__file__).with_name("static")
PING_S = 10.0  # a comment line this often keeps proxies and tunnels from closing an idle stream
NO_CACHE = {"Cache-Control": "no-cache"}
SANDBOX = {"Content-Security-Policy": "sandbox"}
_TOKEN_META = re.compile(r'(<meta name="sciagent-token" content=")[^"]*(")')
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class Refused(Exception):
    """A request the API answers with ``status`` and a one-line ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    workspace: Path, *, token: str, poll_s: float = feed.POLL_S, ping_s: float = PING_S
) -> Starlette:
    """The UI of ``workspace``'s journal, behind the token gate.

    Args:
        workspace: the directory holding ``journal.sqlite`` and the runs' directories.
        token: what every request must carry (``auth``).
        poll_s: how often a stream looks for new journal rows.
        ping_s: how often an idle stream sends a heartbeat comment (tests shorten it to see one).
    """
    ui = _Routes(Path(workspace).resolve(), token, poll_s, ping_s)
    routes = [
        Route("/", ui.index),
        Route("/static/{name}", ui.static),
        Route("/api/runs", ui.runs),
        Route("/api/stream", ui.runs_stream),
        Route("/api/runs/{run_id}", ui.run),
        Route("/api/runs/{run_id}/stream", ui.run_stream),
        Route("/api/runs/{run_id}/telemetry", ui.telemetry),
        Route("/api/runs/{run_id}/approvals/{request_id}", ui.approve, methods=["POST"]),
        Route("/api/runs/{run_id}/tell", ui.tell, methods=["POST"]),
        Route("/api/runs/{run_id}/tasks/{key:path}/cancel", ui.cancel, methods=["POST"]),
        Route("/api/runs/{run_id}/stop", ui.stop, methods=["POST"]),
        Route("/files/{run_id}/{path:path}", ui.file),
    ]
    handlers = {Refused: _refused, UserError: _user_error, HTTPException: _http_error}
    return Starlette(
        routes=routes,
        middleware=[Middleware(TokenGate, token=token)],
        exception_handlers=handlers,  # type: ignore[arg-type]
    )


class _Routes:
    def __init__(self, workspace: Path, token: str, poll_s: float, ping_s: float) -> None:
        self.workspace = workspace
        self.token = token
        self.poll_s = poll_s
        self.ping_s = ping_s
        self.journal_path = workspace / JOURNAL_FILENAME

    # -- the page ----------------------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        page = _static_text("index.html")
        filled = _TOKEN_META.sub(
            lambda m: m.group(1) + html.escape(self.token, quote=True) + m.group(2), page
        )
        return HTMLResponse(filled, headers={"Cache-Control": "no-store"})

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _static_names():  # only the files shipped in static/, by exact name
            raise Refused(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=_MEDIA_TYPES.get(Path(name).suffix), headers=NO_CACHE)

    # -- the API -----------------------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        params = request.query_params
        with self._journal() as journal:
            found = runs_list(
                journal, kind=params.get("kind"), status=params.get("status"), q=params.get("q")
            )
        return JSONResponse(found)

    def run(self, request: Request) -> Response:
        with self._journal() as journal:
            run = _run(journal, request.path_params["run_id"])
            return JSONResponse(run_detail(journal, self.workspace, run.id))

    def telemetry(self, request: Request) -> Response:
        with self._journal() as journal:
            run = _run(journal, request.path_params["run_id"])
        return JSONResponse({"telemetry": run_telemetry(run_dir(self.workspace, run))})

    def file(self, request: Request) -> Response:
        with self._journal() as journal:
            run = _run(journal, request.path_params["run_id"])
        root = run_dir(self.workspace, run)
        found = confined_file(root, request.path_params["path"]) if root else None
        if found is None:
            raise Refused(404, f"run {run.id} has no file {request.path_params['path']!r}")
        return FileResponse(found, headers=SANDBOX)

    # -- the streams -------------------------------------------------------------------------------

    async def run_stream(self, request: Request) -> Response:
        run, cursor = await anyio.to_thread.run_sync(
            self._stream_start, request, request.path_params["run_id"]
        )
        assert run is not None
        frames = feed.run_stream(self.journal_path, self.workspace, run, cursor, self.poll_s)
        return EventSourceResponse(frames, ping=self.ping_s)

    async def runs_stream(self, request: Request) -> Response:
        _, cursor = await anyio.to_thread.run_sync(self._stream_start, request, None)
        return EventSourceResponse(feed.runs_stream(self.journal_path, cursor, self.poll_s), ping=self.ping_s)

    def _stream_start(self, request: Request, run_id: str | None) -> tuple[RunRow | None, int]:
        """The run a stream follows (404 if unknown) and the change it starts after."""
        with self._journal() as journal:
            run = _run(journal, run_id) if run_id is not None else None
            after = request.query_params.get("after")
            return run, feed.start_cursor(request.headers.get("last-event-id"), after, journal.latest_change)

    # -- the actions -------------------------------------------------------------------------------

    async def approve(self, request: Request) -> Response:
        body = await _body(request)
        approve = body.get("approve")
        if not isinstance(approve, bool):
            raise Refused(400, 'the body needs "approve": true or false')
        request_id, reason = request.path_params["request_id"], _text(body, "reason", required=False)
        return await self._act(
            request, actions.approve, request_id=request_id, approve=approve, reason=reason
        )

    async def tell(self, request: Request) -> Response:
        text = _text(await _body(request), "text", required=True)
        return await self._act(request, actions.tell, text=text)

    async def cancel(self, request: Request) -> Response:
        await _body(request)
        key = request.path_params["key"]
        return await self._act(request, actions.cancel_task, workspace=self.workspace, key=key)

    async def stop(self, request: Request) -> Response:
        reason = _text(await _body(request), "reason", required=False)
        return await self._act(request, actions.stop_run, workspace=self.workspace, reason=reason)

    async def _act(self, request: Request, action: Callable[..., int], **arguments: Any) -> Response:
        """Run ``action(journal, run_id=..., **arguments, by=...)`` in a thread; the event it wrote is the
        answer."""

        def acting() -> int:
            with self._journal() as journal:
                run = _run(journal, request.path_params["run_id"])
                try:
                    return action(journal, run_id=run.id, **arguments, by=actions.web_actor())
                except UserError as exc:  # the action refused: it does not fit the run as it is now
                    raise Refused(409, str(exc)) from exc

        return JSONResponse({"ok": True, "event": await anyio.to_thread.run_sync(acting)})

    def _journal(self) -> Journal:
        return Journal(self.journal_path)


def _run(journal: Journal, run_id: str) -> RunRow:
    """The run with exactly this id; 404 otherwise (a page's URL names a run, never a prefix of one)."""
    try:
        run = journal.get_run(run_id)
    except UserError as exc:
        raise Refused(404, str(exc)) from exc
    if run.id != run_id:
        raise Refused(404, f"no run {run_id} in {journal.path}: the runs list links to each run")
    return run


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise Refused(400, f"the body is not JSON ({exc}): send a JSON object") from exc
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(400, f'the body needs "{name}": a {"non-empty " if required else ""}string')
    return value


def _static_names() -> set[str]:
    return {path.name for path in STATIC.iterdir() if path.is_file()} if STATIC.is_dir() else set()


def _static_text(name: str) -> str:
    if name not in _static_names():
        raise Refused(404, f"the UI's {name} is missing from {STATIC}: reinstall sciagent")
    return (STATIC / name).read_text()


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _user_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code
    )
