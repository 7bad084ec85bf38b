"""``sciagent ui`` in a real browser: Debian's chromium driven by Playwright, against the real server.

Everything below the browser is real: ``sciagent ui`` and ``sciagent ask`` processes, the scripted
OpenAI-protocol server as the model (tests/openai_server.py), the journal, OpenMM. The page must show
an approval and act on it, grow a running simulation's plot, say why a run failed, and keep journal
text as text. Attacks (markup in journal text, inline script, no token) each have a control that shows
the same attack works where the protection is not in its way. Screenshots: see tests/ui_browser.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright (a dev dependency) is not installed")
if shutil.which("chromium") is None:
    pytest.skip("Debian's chromium is not installed (make installs it; never `playwright install`)",
                allow_module_level=True)  # fmt: skip

from playwright.sync_api import Browser, Page, expect, sync_playwright

from openai_server import OpenAIServer, status_reply, text_reply, tool_call_reply
from sciagent.agent.journal import Journal
from ui_browser import CHROMIUM, UiServer, record_versions, running_ui, screenshot, start_ask

# xdist_group: one browser and one server for the module, on one pytest-xdist worker
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("browser")]
ASK_FIRST = '[[approval.rules]]\ntool = "structure_info"\ndecision = "ask"\n'
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
AS_MARKUP = "p => document.body.append(Object.assign(document.createElement('div'), {innerHTML: p}))"
WAIT_MS = 30_000  # a session process starts in a few seconds on a busy 2-core machine


@pytest.fixture(scope="module")
def model() -> OpenAIServer:
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model: OpenAIServer) -> Path:
    """Where the sessions run: the scripted model, structure_info asks first; the journal exists."""
    root = tmp_path_factory.mktemp("ui")
    (root / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{model.base_url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
        + ASK_FIRST
    )
    Journal.in_workspace(root / "sciagent-runs").close()
    return root


@pytest.fixture(scope="module")
def ui(project: Path) -> UiServer:
    with running_ui(project / "sciagent-runs") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        print(f"versions: {record_versions(launched.version)}")
        yield launched
        launched.close()


def _page(browser: Browser, ui: UiServer, *, bypass_csp: bool = False) -> Page:
    """A fresh 1280x800 page, logged in through the printed URL (the cookie), on the runs list."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=bypass_csp)
    page = context.new_page()
    page.goto(ui.url)
    expect(page.locator("#counters")).to_be_visible()
    return page


@pytest.fixture
def page(browser: Browser, ui: UiServer) -> Page:
    opened = _page(browser, ui)
    yield opened
    opened.context.close()


def _row(page: Page, goal: str):
    return page.locator("#runs tr[data-run]").filter(has_text=goal)


def _finish(session) -> dict:
    out, err = session.communicate(timeout=120)
    assert out.strip(), err
    return json.loads(out.splitlines()[-1])


def test_the_page_needs_its_token(browser: Browser, ui: UiServer) -> None:
    """Without the token: the refusal (page and API). With the printed URL: the page, and the token is
    gone from the address bar (it is in an HttpOnly cookie now)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        refused = page.goto(ui.base + "/")
        assert refused.status == 403
        expect(page.locator("body")).to_contain_text("needs its token")
        assert page.request.get(ui.base + "/api/runs").status == 403
        screenshot(page, "token-refused")
        page.goto(ui.url)
        expect(page.locator("#counters")).to_be_visible()
        assert "token" not in page.url
        assert page.request.get(ui.base + "/api/runs").status == 200  # the cookie now
        cookie = next(c for c in context.cookies() if c["name"].startswith("sciagent_ui_"))
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        context.close()


def test_an_approval_given_in_the_page_lets_the_session_go_on_without_a_reload(
    page: Page, model: OpenAIServer, project: Path
) -> None:
    goal = "How many atoms does villin have?"
    answer = "Villin has 582 atoms."
    model.script(tool_call_reply("structure_info", {"structure": "villin"}), text_reply(answer))
    session = start_ask(project, goal, "--wait-for-approval", "2m")
    try:
        row = _row(page, goal)  # the runs list hears of the new session on its stream
        expect(row.locator(".badge.s-pending")).to_contain_text("1 waiting", timeout=WAIT_MS)
        screenshot(page, "runs-list-approval-waiting")
        row.locator("a").click()
        approval = page.locator("#approvals .approval")
        expect(approval).to_contain_text("structure_info")
        expect(approval).to_contain_text("why asked")
        screenshot(page, "run-approval-pending")
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
        page.evaluate("window.__same_document = true")
        approval.locator("button.approve").click()
        expect(page.locator("#timeline .answer").filter(has_text=answer)).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#approvals")).to_be_hidden()
        expect(page.locator("#run-header .badge")).to_have_text("completed", timeout=WAIT_MS)
        expect(page.locator("#outcome")).to_contain_text(answer, timeout=WAIT_MS)  # first on the page
        expect(page.locator("#tell")).to_have_count(0)  # a finished session cannot be told anything
        assert page.evaluate("window.__same_document") is True and navigations == []  # no reload
        screenshot(page, "run-approved-answered")
    finally:
        summary = _finish(session)
    (call,) = summary["tool_calls"]
    assert call["status"] == "ok" and call["result"]["total_atoms"] == 582


@pytest.mark.slow
def test_a_running_simulations_plot_gains_points(page: Page, model: OpenAIServer, project: Path) -> None:
    goal = "Simulate villin for 8 ps."
    model.script(
        tool_call_reply("simulate", {"structure": "villin", "length_ps": 8, "timestep_fs": 4}),
        tool_call_reply("wait_for_task", {"task_id": "sim-1", "timeout_s": 300}),
        text_reply("The simulation of villin finished."),
    )
    session = start_ask(project, goal, "--approve-all")
    try:
        _row(page, goal).locator("a").click(timeout=WAIT_MS)
        points = "n => (document.querySelector('#telemetry polyline.series')?.points.numberOfItems ?? 0) > n"
        page.wait_for_function(points, arg=1, timeout=90_000)
        before = page.locator("#telemetry polyline.series").first.evaluate("e => e.points.numberOfItems")
        page.wait_for_function(points, arg=before + 5, timeout=90_000)  # no reload: the stream redrew it
        expect(page.locator("#telemetry .health-badge").first).to_be_visible()
        screenshot(page, "run-simulation-telemetry")
    finally:
        summary = _finish(session)
    assert summary["status"] == "answered", summary


def test_a_failed_run_shows_why(page: Page, model: OpenAIServer, project: Path) -> None:
    """The endpoint refuses the key: the row turns failed live on the runs list, the counter counts it,
    the status filter finds it, and the run page opens on the failure with the endpoint's words."""
    goal = "Which force field suits villin?"
    model.script(status_reply(401, message="invalid API key: the endpoint refused it"))
    failed_before = int(page.locator("#counters [data-status=failed] b").inner_text())
    session = start_ask(project, goal)
    summary = _finish(session)
    assert session.returncode == 1 and summary["status"] != "answered"
    row = _row(page, goal)
    expect(row.locator(".badge")).to_have_text("failed", timeout=WAIT_MS)
    expect(row).to_contain_text("HTTP 401")
    expect(page.locator("#counters [data-status=failed] b")).to_have_text(str(failed_before + 1))
    page.select_option("select[name=status]", "failed")
    expect(page.locator("#runs tr[data-run]")).to_have_count(failed_before + 1)
    screenshot(page, "runs-list-failed-filter")
    row.locator("a").click()
    failure = page.locator("#failure")
    expect(failure).to_be_visible()
    expect(failure).to_contain_text("rejected the token (HTTP 401: invalid API key: the endpoint refused it)")
    report = page.frame_locator("#files iframe.report")  # the session's report.html, sandboxed
    expect(report.locator("body")).to_contain_text("Which force field suits villin?")
    screenshot(page, "run-failed")


def test_journal_text_is_shown_as_text_never_as_markup(
    browser: Browser, ui: UiServer, model: OpenAIServer, project: Path
) -> None:
    """Markup in a tool argument, a told message and the answer shows literally and runs nothing, with
    the CSP out of the way (bypass_csp) so only the page's textContent stands in the way. Control: the
    same string given to innerHTML in the same page runs (the payload is live)."""
    goal = "Describe this structure."
    model.script(tool_call_reply("structure_info", {"structure": PAYLOAD}), text_reply(f"Answer: {PAYLOAD}"))
    page = _page(browser, ui, bypass_csp=True)
    session = start_ask(project, goal, "--wait-for-approval", "2m")
    try:
        _row(page, goal).locator("a").click(timeout=WAIT_MS)
        approval = page.locator("#approvals .approval")
        expect(approval).to_contain_text("<script>window.__pwned=2</script>", timeout=WAIT_MS)
        page.fill("#tell-text", PAYLOAD)
        page.click("#tell button[type=submit]")
        expect(page.locator("#timeline .told").filter(has_text=PAYLOAD)).to_have_count(1)
        approval.locator("button.approve").click()
        expect(page.locator("#timeline .answer").filter(has_text=f"Answer: {PAYLOAD}")).to_be_visible(
            timeout=WAIT_MS
        )
        arguments = page.locator("#timeline pre.args").filter(has_text="<script>window.__pwned=2</script>")
        expect(arguments.first).to_be_visible()
        expect(page.locator("#run-header .badge")).to_have_text("completed", timeout=WAIT_MS)
        expect(page.locator("#approvals")).to_be_hidden()
        assert page.locator("#main img, #main script").count() == 0
        assert page.evaluate("window.__pwned") is None
        screenshot(page, "run-markup-shown-as-text")
        # control: the same string as markup, in the same page
        page.evaluate(
            "p => document.body.append(Object.assign(document.createElement('div'), {innerHTML: p}))", PAYLOAD
        )
        page.wait_for_function("window.__pwned === 1", timeout=5_000)
    finally:
        page.context.close()
        _finish(session)


_INJECT = """p => new Promise(done => {
    const box = document.createElement('div');
    box.innerHTML = p;                                   // the inline onerror handler, if allowed
    box.querySelector('img').addEventListener('error', () => done({
        pwned: window.__pwned ?? null, inline: window.__inline ?? null }));
    const script = document.createElement('script');
    script.textContent = 'window.__inline = 1';          // an inline script, if allowed
    document.body.append(script, box);
})"""


def test_the_content_security_policy_blocks_inline_script(browser: Browser, ui: UiServer) -> None:
    """The page's CSP stops an inline handler and an inline script that got in anyway; the control is
    the same injection in the same page with the CSP bypassed."""
    outcomes = {}
    for bypass in (False, True):
        page = _page(browser, ui, bypass_csp=bypass)
        try:
            if not bypass:
                header = page.request.get(ui.base + "/").headers["content-security-policy"]
                assert "default-src 'self'" in header and "unsafe-inline" not in header
            outcomes[bypass] = page.evaluate(_INJECT, PAYLOAD)
        finally:
            page.context.close()
    assert outcomes[False] == {"pwned": None, "inline": None}
    assert outcomes[True] == {"pwned": 1, "inline": 1}  # control: the same injection runs without the CSP
