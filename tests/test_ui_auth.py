"""The web UI's gate (``sciagent.ui.auth.TokenGate``): each attack refused, and each control showing the
same request served by the same app without the gate, so every test fails if its protection is removed.

The attacker is another user of the login node (who can reach 127.0.0.1 but holds no token) or a page
of another site open in the user's own browser (which sends the user's cookie, a forged ``Origin`` it
cannot choose, and its own name as ``Host`` after DNS rebinding).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from sciagent.agent.journal import Journal
from sciagent.ui.app import create_app
from sciagent.ui.auth import HEADER, SECURITY_HEADERS, TokenGate, cookie_name, new_token

TOKEN = new_token()
BASE = "http://127.0.0.1:8765"  # as the browser sees it (also through ssh -L)
COOKIE = cookie_name("127.0.0.1:8765")  # sciagent_ui_8765
PAGE = "the runs of this workspace"


def _inner() -> tuple[Starlette, list[str]]:
    """A tiny app in the UI's shape, and the list of what its POST route did."""
    told: list[str] = []

    async def page(request: Request) -> Response:
        return HTMLResponse(f"<p>{PAGE}</p>")

    async def runs(request: Request) -> Response:
        return JSONResponse({"runs": []})

    async def tell(request: Request) -> Response:
        told.append((await request.json())["text"])
        return JSONResponse({"ok": True})

    async def report(request: Request) -> Response:
        return HTMLResponse("<p>report</p>", headers={"Content-Security-Policy": "sandbox"})

    routes = [
        Route("/", page),
        Route("/api/runs", runs),
        Route("/api/runs/r1/tell", tell, methods=["POST"]),
        Route("/files/r1/report.html", report),
    ]
    return Starlette(routes=routes), told


def _client(app: ASGIApp) -> TestClient:
    return TestClient(app, base_url=BASE, follow_redirects=False)


@pytest.fixture
def gated() -> tuple[TestClient, list[str]]:
    app, told = _inner()
    return _client(TokenGate(app, TOKEN)), told


@pytest.fixture
def bare() -> tuple[TestClient, list[str]]:
    """The control: the same app, no gate."""
    app, told = _inner()
    return _client(app), told


def test_new_tokens_are_long_random_and_url_safe() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(token) >= 43 for token in tokens)
    assert all(token.replace("-", "").replace("_", "").isalnum() for token in tokens)


def test_the_token_in_the_url_becomes_a_cookie_and_leaves_the_url(
    gated: tuple[TestClient, list[str]],
) -> None:
    client, _ = gated
    login = client.get(f"/?q=villin&token={TOKEN}")
    assert login.status_code == 303 and login.headers["location"] == "/?q=villin"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    assert {"HttpOnly", "SameSite=strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert login.headers["cache-control"] == "no-store"
    page = client.get("/?q=villin")  # the client's cookie jar, as a browser's
    assert page.status_code == 200 and PAGE in page.text
    assert client.get("/api/runs").json() == {"runs": []}
    client.cookies.clear()
    assert client.get("/api/runs", headers={HEADER: TOKEN}).status_code == 200


def test_the_token_does_not_leak_in_referer(
    gated: tuple[TestClient, list[str]], bare: tuple[TestClient, list[str]]
) -> None:
    """A page's URL goes out in ``Referer`` with its links and subresources: the gate's page has no token
    in its URL (the redirect) and forbids ``Referer`` anyway. Control: the bare app keeps the token in the
    page's URL and says nothing about referrers, so a browser would send it along."""
    client, _ = gated
    page = client.get(f"/?token={TOKEN}", follow_redirects=True)
    assert page.status_code == 200 and TOKEN not in str(page.url)
    assert page.headers["referrer-policy"] == "no-referrer"
    control = bare[0].get(f"/?token={TOKEN}", follow_redirects=True)
    assert control.status_code == 200 and TOKEN in str(control.url)
    assert "referrer-policy" not in control.headers


WRONG = new_token()  # the same length as TOKEN
ATTACKS = {
    "no token": {},
    "a wrong token in the cookie": {"headers": {"Cookie": f"{COOKIE}={WRONG}"}},
    "a wrong token in the header": {"headers": {HEADER: WRONG}},
    "a shorter token (a prefix)": {"headers": {"Cookie": f"{COOKIE}={TOKEN[:-1]}"}},
    "a longer token": {"headers": {HEADER: TOKEN + "x"}},
    "an empty token": {"headers": {HEADER: ""}},
}


@pytest.mark.parametrize("how", list(ATTACKS))
@pytest.mark.parametrize("path", ["/", "/api/runs"])
def test_a_request_without_the_token_is_refused(
    how: str, path: str, gated: tuple[TestClient, list[str]], bare: tuple[TestClient, list[str]]
) -> None:
    refused = gated[0].get(path, **ATTACKS[how])
    assert refused.status_code == 403
    if path.startswith("/api/"):
        assert "open the URL that `sciagent ui` printed" in refused.json()["error"]
    else:
        assert refused.headers["content-type"].startswith("text/plain")
        assert "open the URL that `sciagent ui` printed" in refused.text and PAGE not in refused.text
    assert bare[0].get(path, **ATTACKS[how]).status_code == 200  # control


@pytest.mark.parametrize("token", [WRONG, TOKEN[:20], ""], ids=["wrong", "a prefix", "empty"])  # ids: the
# tokens are random, and pytest-xdist workers must collect the same test names
def test_a_wrong_token_in_the_url_sets_no_cookie(token: str, gated: tuple[TestClient, list[str]]) -> None:
    refused = gated[0].get(f"/?token={token}")
    assert refused.status_code == 403 and "set-cookie" not in refused.headers


def test_a_foreign_host_is_refused_though_it_holds_the_token(
    gated: tuple[TestClient, list[str]], bare: tuple[TestClient, list[str]]
) -> None:
    """DNS rebinding: a page of evil.example re-points its name at 127.0.0.1 and calls the UI from the
    user's browser; the request carries ``Host: evil.example`` (the cookie stays with 127.0.0.1, but a
    local attacker who scraped a token gains nothing either)."""
    client, _ = gated
    for host in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example", "localhost.:8765", ""):
        refused = client.get("/api/runs", headers={"Host": host, HEADER: TOKEN})
        assert refused.status_code == 403 and "is not a loopback name" in refused.json()["error"], host
        assert bare[0].get("/api/runs", headers={"Host": host}).status_code == 200  # control
    for host in ("127.0.0.1:8765", "localhost", "LOCALHOST:1", "[::1]:8765", "[::1]"):
        assert client.get("/api/runs", headers={"Host": host, HEADER: TOKEN}).status_code == 200, host


def test_a_cross_site_post_with_the_cookie_is_refused(
    gated: tuple[TestClient, list[str]], bare: tuple[TestClient, list[str]]
) -> None:
    """CSRF: a form or fetch from another site's page carries the user's cookie, never our header."""
    client, told = gated
    cookie = {"Cookie": f"{COOKIE}={TOKEN}"}
    forged = client.post(
        "/api/runs/r1/tell", json={"text": "rm"}, headers={**cookie, "Origin": "http://evil.example"}
    )
    assert forged.status_code == 403 and f"needs the token in the {HEADER} header" in forged.json()["error"]
    cookie_only = client.post("/api/runs/r1/tell", json={"text": "rm"}, headers=cookie)
    assert cookie_only.status_code == 403
    other_origin = client.post(
        "/api/runs/r1/tell", json={"text": "rm"}, headers={HEADER: TOKEN, "Origin": "http://127.0.0.1:9999"}
    )
    assert other_origin.status_code == 403 and "another site" in other_origin.json()["error"]
    assert told == []
    control, done = bare
    assert control.post("/api/runs/r1/tell", json={"text": "rm"}, headers=cookie).status_code == 200
    assert done == ["rm"]
    ours = client.post("/api/runs/r1/tell", json={"text": "hi"}, headers={HEADER: TOKEN, "Origin": BASE})
    no_origin = client.post("/api/runs/r1/tell", json={"text": "hi again"}, headers={HEADER: TOKEN})
    assert ours.status_code == no_origin.status_code == 200 and told == ["hi", "hi again"]


def test_every_response_carries_the_security_headers(gated: tuple[TestClient, list[str]]) -> None:
    client, _ = gated
    answers = [
        client.get(f"/?token={TOKEN}"),  # 303
        client.get("/"),  # 200
        client.get("/nowhere"),  # 404 from the app
        client.get("/", headers={"Cookie": f"{COOKIE}={WRONG}"}),  # 403 from the gate
    ]
    assert [answer.status_code for answer in answers] == [303, 200, 404, 403]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.status_code, name)
    report = client.get("/files/r1/report.html")  # the app's own, stricter policy is kept
    assert report.headers["content-security-policy"] == "sandbox"
    assert report.headers["x-frame-options"] == "SAMEORIGIN"


def test_the_ui_app_is_behind_the_gate(tmp_path: Path) -> None:
    """``create_app`` itself: the gate's refusals and its login, in front of the real routes."""
    with Journal(tmp_path / "journal.sqlite") as journal:
        run_id = journal.create_run("a goal", {})
    client = _client(create_app(tmp_path, token=TOKEN))
    assert client.get("/api/runs").status_code == 403
    assert client.get("/api/runs", headers={"Host": "evil.example", HEADER: TOKEN}).status_code == 403
    assert client.get(f"/?token={TOKEN}").status_code == 303
    runs = client.get("/api/runs")
    assert runs.status_code == 200 and [run["id"] for run in runs.json()["runs"]] == [run_id]
    assert runs.headers["referrer-policy"] == "no-referrer"
    forged = client.post(
        f"/api/runs/{run_id}/tell", json={"text": "stop"}, headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403 and HEADER in forged.json()["error"]
