"""Approval by effect, attacked through real ``sciagent ask`` / ``approve`` / ``mcp serve`` processes.

The model is the scripted OpenAI-protocol server (tests/openai_server.py); the loop, the approval
policy, the journal's approval desk and the tools are the real code. Each attack has a control that
shows what the same call does when the protection does not stand in its way (``--approve-all``, a
rule that allows it, a trusted server, or the tool function called directly), so each test would fail
if the protection were removed.
"""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import OpenAIServer, text_reply, tool_call_reply
from sciagent.tools.files import WriteFileArguments, write_file
from sciagent.tools.registry import ToolContext
from sciagent.workflows.catalogue import full_catalogue

pytestmark = pytest.mark.timeout(300)
TESTS = Path(__file__).parent
ASK_FIRST = '[[approval.rules]]\ntool = "structure_info"\ndecision = "ask"\n'


def _workspace(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n{extra}'
    )
    return tmp_path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sciagent", *args]


def _ask(
    cwd: Path, *args: str, stdin: int | None = subprocess.DEVNULL
) -> tuple[subprocess.CompletedProcess, dict]:
    completed = subprocess.run(
        _command("ask", "How many atoms does villin have?", "--llm", "scripted", "--json", *args),
        cwd=cwd, capture_output=True, text=True, timeout=240, stdin=stdin,
    )  # fmt: skip
    return completed, json.loads(completed.stdout.splitlines()[-1]) if completed.stdout.strip() else {}


def _events(cwd: Path, kind: str, journal: str = "sciagent-runs/journal.sqlite") -> list[dict]:
    with sqlite3.connect(cwd / journal) as db:
        rows = db.execute("SELECT data FROM events ORDER BY id").fetchall()
    return [data for (text,) in rows if (data := json.loads(text)).get("kind") == kind]


def _structure_info_then_answer(server) -> None:
    server.script(
        tool_call_reply("structure_info", {"structure": "villin"}),
        text_reply("Done."),
    )


def test_a_call_a_rule_makes_ask_is_refused_without_a_terminal_and_the_request_is_journalled(
    tmp_path: Path, openai_server
) -> None:
    _structure_info_then_answer(openai_server)
    cwd = _workspace(tmp_path, openai_server.base_url, ASK_FIRST)
    completed, summary = _ask(cwd)
    assert completed.returncode == 0, completed.stderr
    (record,) = summary["tool_calls"]
    assert record["status"] == "refused" and "no one could approve it here" in record["error"]
    (request,) = _events(cwd, "approval_request")
    assert request["tool"] == "structure_info" and request["decision"] == "ask"
    assert "[[approval.rules]] #1" in request["reason"]
    (answer,) = _events(cwd, "approval_answer")
    assert answer == {**answer, "request": request["request"], "approved": False, "by": "no one"}
    # control: the same call with no rule reads, and reading runs unasked
    openai_server.script(tool_call_reply("structure_info", {"structure": "villin"}), text_reply("Done."))
    _workspace(tmp_path, openai_server.base_url)
    completed, summary = _ask(cwd)
    assert summary["tool_calls"][0]["status"] == "ok", completed.stderr


def test_sciagent_approve_from_another_process_answers_a_waiting_session(
    tmp_path: Path, openai_server
) -> None:
    """No terminal, --wait-for-approval: the request waits in the journal until a second process
    (`sciagent approve SESSION`) shows it and answers; the declined one is the control."""
    openai_server.script(
        tool_call_reply("structure_info", {"structure": "villin"}),
        tool_call_reply("structure_info", {"structure": "1UBQ"}),
        text_reply("Done."),
    )
    cwd = _workspace(tmp_path, openai_server.base_url, ASK_FIRST)
    session = subprocess.Popen(
        _command("ask", "Atoms?", "--llm", "scripted", "--json", "--wait-for-approval", "2m"),
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        answers = []
        for verb in (["--yes"], ["--deny"]):
            request = _wait_for_request(cwd, len(answers))
            run_id = _session_id(cwd)
            shown = subprocess.run(
                _command("approve", run_id, request["request"], *verb),
                cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert "structure_info" in shown.stderr and "why asked" in shown.stderr  # what it concerns
            answers.append(shown)
        out, _ = session.communicate(timeout=120)
    finally:
        session.kill()
    approved, declined = json.loads(out.splitlines()[-1])["tool_calls"]
    assert approved["status"] == "ok" and approved["result"]["total_atoms"] == 582
    assert declined["status"] == "refused" and "declined by" in declined["error"]
    assert [a["by"].split(" ")[0].count("@") for a in _events(cwd, "approval_answer")] == [1, 1]


def _wait_for_request(cwd: Path, answered: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        journal = cwd / "sciagent-runs" / "journal.sqlite"
        if journal.exists():
            requests = _events(cwd, "approval_request")
            if len(requests) > answered:
                return requests[answered]
        time.sleep(0.2)
    raise AssertionError("the session never asked for approval")


def _session_id(cwd: Path) -> str:
    with sqlite3.connect(cwd / "sciagent-runs" / "journal.sqlite") as db:
        (run_id,) = db.execute("SELECT id FROM runs").fetchone()
    return run_id


@pytest.mark.parametrize(("typed", "status"), [(b"\n", "refused"), (b"y\n", "ok")], ids=["enter", "yes"])
def test_enter_at_the_terminal_never_means_yes(
    tmp_path: Path, openai_server, typed: bytes, status: str
) -> None:
    """The prompt shows the call and takes only y/yes; Enter declines (the 'yes' run is the control)."""
    _structure_info_then_answer(openai_server)
    cwd = _workspace(tmp_path, openai_server.base_url, ASK_FIRST)
    controller, terminal = pty.openpty()
    os.write(controller, typed)  # typed before it is asked: the terminal buffers it
    try:
        completed, summary = _ask(cwd, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert "approve? [y/N]" in completed.stderr and "structure_info" in completed.stderr
    assert summary["tool_calls"][0]["status"] == status
    assert _events(cwd, "approval_answer")[0]["by"] == "terminal"


def test_a_deny_rule_holds_even_with_approve_all(tmp_path: Path, openai_server) -> None:
    _structure_info_then_answer(openai_server)
    rule = ASK_FIRST.replace('"ask"', '"deny"')
    completed, summary = _ask(_workspace(tmp_path, openai_server.base_url, rule), "--approve-all")
    record = summary["tool_calls"][0]
    assert record["status"] == "refused" and "says deny" in record["error"], completed.stderr


def test_an_external_servers_read_only_hint_is_not_believed_unless_it_is_trusted(
    tmp_path: Path, openai_server
) -> None:
    """tests/mcp_external_server.py marks `add` read-only. Untrusted, the call reaches outside and asks
    (refused here: no terminal); with `trusted = true` in the user's table the hint is believed."""
    command = json.dumps([sys.executable, str(TESTS / "mcp_external_server.py")])
    outcomes = []
    for trusted in ("false", "true"):
        openai_server.script(tool_call_reply("ext__add", {"a": 2, "b": 3}), text_reply("5."))
        table = f'[mcp.ext]\ncommand = {command}\ntools = ["add"]\ntrusted = {trusted}\n'
        _, summary = _ask(_workspace(tmp_path, openai_server.base_url, table), "--mcp", "ext")
        outcomes.append(summary["tool_calls"][0])
    untrusted, trusted_call = outcomes
    assert untrusted["status"] == "refused" and "reaches outside" in untrusted["error"]
    assert trusted_call["status"] == "ok" and trusted_call["result"]["structured"] == {"total": 5}


def test_a_tool_that_raises_oserror_is_an_observation_and_the_session_goes_on(
    tmp_path: Path, openai_server
) -> None:
    """write_file to a.txt/b.txt after a.txt exists raises FileExistsError (the control calls the tool
    function itself); through the loop it is a failed call the model reads, and the session answers."""
    openai_server.script(
        tool_call_reply("write_file", {"path": "a.txt", "text": "x"}),
        tool_call_reply("write_file", {"path": "a.txt/b.txt", "text": "y"}),
        text_reply("The second file could not be written."),
    )
    completed, summary = _ask(_workspace(tmp_path, openai_server.base_url))
    assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr
    first, second = summary["tool_calls"]
    assert first["status"] == "ok" and second["status"] == "failed"
    assert "failed (internal)" in second["error"] and "FileExistsError" in second["error"]
    assert "FileExistsError" in openai_server.chat_requests()[2].body["messages"][-1]["content"]
    with sqlite3.connect(tmp_path / "sciagent-runs" / "journal.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchone() == ("completed",)
    # control: the tool function itself lets the exception out
    session = tmp_path / "control"
    session.mkdir()
    (session / "a.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_file(WriteFileArguments(path="a.txt/b.txt", text="y"), ToolContext(session))


def test_mcp_serve_lists_no_spending_destroying_or_code_running_tool_by_default(tmp_path: Path) -> None:
    """tools/list of a real `sciagent mcp serve` (stdio). The control is the rule the server used
    before (read-only = instant and not on a site), which marks write_file and submit_job read-only."""
    catalogue = {tool.name: tool for tool in full_catalogue()}
    old_rule = {name for name, tool in catalogue.items() if tool.cost == "instant" and not tool.runs_on_site}
    assert {"write_file", "submit_job", "cancel_job", "cancel_task", "generate_job_script"} <= old_rule

    default = _listed(tmp_path / "one")
    never = {"submit_job", "release_job", "cancel_job", "hold_job", "cancel_task"}
    assert not never & set(default), sorted(never & set(default))
    read_only = {name for name, hints in default.items() if hints["readOnlyHint"]}
    assert read_only and all(catalogue[name].effects == {"reads"} for name in read_only if name in catalogue)
    assert not default["write_file"]["readOnlyHint"] and not default["write_file"]["destructiveHint"]
    assert default["fetch_structure"]["openWorldHint"]

    allowed = _listed(tmp_path / "two", "--allow-tool", "submit_job", "--allow-tool", "cancel_job")
    assert allowed["submit_job"]["readOnlyHint"] is False and allowed["submit_job"]["openWorldHint"]
    assert allowed["cancel_job"]["destructiveHint"] is True and "hold_job" not in allowed


def test_the_mcp_server_decides_each_call_by_the_same_policy(tmp_path: Path) -> None:
    """A user's rule makes structure_info ask: over MCP, with no one to ask, the call is refused and the
    request journalled; the control is the same server told --allow-tool structure_info."""
    (tmp_path / "sciagent.toml").write_text(ASK_FIRST)
    refused = _served(tmp_path / "one", call=True)["structure_info"]
    assert refused["is_error"] and "no one could approve it here" in refused["text"]
    (request,) = _events(tmp_path / "one", "approval_request", journal="journal.sqlite")
    assert request["tool"] == "structure_info"
    allowed = _served(tmp_path / "two", "--allow-tool", "structure_info", call=True)["structure_info"]
    assert not allowed["is_error"] and '"total_atoms": 582' in allowed["text"]


def _listed(workspace: Path, *flags: str) -> dict[str, dict]:
    return _served(workspace, *flags)


def _served(workspace: Path, *flags: str, call: bool = False) -> dict[str, dict]:
    """From a real stdio `sciagent mcp serve` (an SDK client in a child process): each served tool's
    annotations, or (``call``) what calling structure_info on villin gave."""
    script = (
        "import anyio, json, sys\n"
        "from mcp import Client, StdioServerParameters\n"
        "async def main():\n"
        "    params = StdioServerParameters(command=sys.executable, args=sys.argv[2:], cwd=sys.argv[1])\n"
        "    async with Client(params) as client:\n"
        "        listing = await client.list_tools()\n"
        "        seen = {t.name: t.annotations.model_dump(by_alias=True) for t in listing.tools}\n"
        f"        if {call}:\n"
        "            got = await client.call_tool('structure_info', {'structure': 'villin'})\n"
        "            seen = {'structure_info': {'is_error': got.is_error, 'text': got.content[0].text}}\n"
        "        print(json.dumps(seen))\n"
        "anyio.run(main)\n"
    )
    serve = ["-m", "sciagent", "--trust-local-config", "mcp", "serve", "--workspace", str(workspace)]
    args = [str(workspace.parent), *serve, *flags]  # (a stdio child gets an allow-listed environment)
    listed = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=120, cwd=workspace.parent,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout.splitlines()[-1])


@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_an_unapproved_submission_on_real_slurm_is_refused_and_a_debug_rule_lets_it_run(
    slurm_cluster, tmp_path: Path
) -> None:
    """The model writes a job script and calls submit_job, with no --approve-all and no terminal: the
    call is refused, nothing reaches Slurm, and the journal holds the request with the script to read.
    Control: a rule allowing jobs on the debug partition up to 1 node and 30 minutes lets it run."""
    from slurm_cluster import PARTITION

    site = f'[sites.slurm]\npartition = "{PARTITION}"\nwalltime = "00:05:00"\naccount = "proj"\n'
    rule = (
        f'[[approval.rules]]\ntool = "submit_job"\nqueue = "{PARTITION}"\nmax_nodes = 1\n'
        'max_walltime = "00:30:00"\ndecision = "allow"\n'
    )
    env = slurm_cluster | {
        "PATH": f"{Path(sys.executable).parent}:{slurm_cluster['PATH']}",
        "SCIAGENT_STATE_DIR": os.environ["SCIAGENT_STATE_DIR"],
    }
    outcomes = []
    for extra in (site, site + rule):
        with OpenAIServer() as server:
            server.script(
                tool_call_reply("write_file", {"path": "jobs/hello.sh", "text": "#!/bin/bash\necho hello\n"}),
                tool_call_reply("submit_job", {"script": "jobs/hello.sh", "site": "slurm"}),
                text_reply("Done."),
            )
            cwd = _workspace(tmp_path, server.base_url, extra)
            completed = subprocess.run(
                _command("ask", "Say hello on slurm.", "--llm", "scripted", "--json"),
                cwd=cwd, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        outcomes.append(json.loads(completed.stdout.splitlines()[-1])["tool_calls"][1])
    refused, allowed = outcomes
    assert refused["status"] == "refused" and "spends an allocation asks first" in refused["error"]
    request = _events(tmp_path, "approval_request")[0]
    assert request["tool"] == "submit_job" and "echo hello" in request["detail"]
    assert request["facts"] == {**request["facts"], "queue": PARTITION, "nodes": 1, "walltime_s": 300}
    assert allowed["status"] == "ok", allowed
    job_id = allowed["result"]["job_id"]
    try:
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        assert queued.stdout.split() in ([job_id], [])  # only the allowed job ever reached Slurm
        sacct = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True)
        assert f"JobId={job_id}" in sacct.stdout
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=30)


def test_model_written_code_asks_first_and_the_request_shows_the_code(tmp_path: Path, openai_server) -> None:
    """create_tool without --approve-all and no terminal: refused before anything runs, and the request
    in the journal carries the code and the tests a person would read (the control is test_codegen's
    sessions, which pass --approve-all and run it)."""
    from test_codegen import ADD_CODE, ADD_TESTS, _create_add

    openai_server.script(_create_add(), text_reply("Done."))
    _, summary = _ask(_workspace(tmp_path, openai_server.base_url))
    (record,) = summary["tool_calls"]
    assert record["status"] == "refused" and "runs model-written code asks first" in record["error"]
    (request,) = _events(tmp_path, "approval_request")
    assert ADD_CODE in request["detail"] and ADD_TESTS in request["detail"]
    assert not (Path(summary["results_json"]).parent / "tool_drafts").exists()  # nothing ran
