"""``sciagent eval`` end to end: a real process, the scripted OpenAI-protocol model, real tools.

The shipped ``basics`` suite runs against a scripted competent model (tests/eval_scripts.py), villin
offline and the PDB entries from a local mirror of RCSB's download layout, and must pass every check.
A model that gets a number wrong must lose exactly the checks that number fails; each kind of check
is then put to that real session both ways; a bad suite file is a one-line error naming the field.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from eval_scripts import SCRIPTS
from openai_server import RecordedRequest, text_reply, tool_call_reply
from sciagent.agent.evaluation import Check
from sciagent.agent.journal import Journal
from sciagent.agent.journal_rows import EventRow, RunRow, StepRow
from sciagent.agent.steps import SessionOutcome
from sciagent.errors import UserError
from sciagent.workflows.sessions.evaluate import load

pytestmark = pytest.mark.timeout(600)
PDB_FILES = Path(__file__).parent / "data" / "pdb"  # 1UBQ and 1BNI as RCSB serves them
WRONG_SUITE = """\
tasks:
  - id: villin-atoms
    prompt: How many atoms does this structure have?
    structure: villin
    checks:
      - {kind: tool_called, tool: structure_info, arguments: {structure: villin}}
      - {kind: answer_number, value: 582}
      - {kind: answer_attributed}
"""


class _MirrorHandler(SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def pdb_mirror() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving tests/data/pdb: its URL, and the paths asked for."""
    hits: list[str] = []
    handler = type("Handler", (_MirrorHandler,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(PDB_FILES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def _workspace(tmp_path: Path, url: str) -> Path:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.scripted]\nbase_url = "{url}"\nmodel = "scripted-model"\nmax_retries = 0\n'
    )
    return tmp_path


def _eval(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", "eval", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=540, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _question(request: RecordedRequest) -> str:
    return next(m["content"] for m in request.body["messages"] if m["role"] == "user")


def _eval_run(workspace: Path) -> tuple[RunRow, list[StepRow], list[EventRow]]:
    """The workspace journal's one eval run, its steps and its events."""
    with Journal.in_workspace(workspace) as journal:
        (run,) = [run for run in journal.list_runs() if run.config.get("kind") == "eval"]
        return run, journal.steps(run.id), journal.events(run.id)


def test_the_basics_suite_scores_every_check_with_a_competent_model(
    tmp_path: Path, openai_server, pdb_mirror: tuple[str, list[str]]
) -> None:
    suite = load("basics")
    assert len(suite.tasks) >= 15 and set(SCRIPTS) == {task.id for task in suite.tasks}
    scripts = {task.question: SCRIPTS[task.id] for task in suite.tasks}
    openai_server.respond(lambda request: scripts[_question(request)].reply(request))
    url, hits = pdb_mirror
    env = {**os.environ, "SCIAGENT_PDB_URL": url, "SCIAGENT_CACHE_DIR": str(tmp_path / "cache")}
    cwd = _workspace(tmp_path, openai_server.base_url)
    completed = _eval(cwd, "basics", "--llm", "scripted", "--json", env=env)
    assert completed.stdout.strip(), completed.stderr
    summary = json.loads(completed.stdout.splitlines()[-1])
    failed = [(task["task_id"], c) for task in summary["tasks"] for c in task["checks"] if not c["passed"]]
    assert failed == [], failed
    assert completed.returncode == 0, completed.stderr
    assert [task["task_id"] for task in summary["tasks"]] == [task.id for task in suite.tasks]
    assert summary["passed"] == summary["total"] == sum(len(task.checks) for task in suite.tasks)
    assert {task["status"] for task in summary["tasks"]} == {"answered"}
    assert all((Path(task["session_dir"]) / "results.json").is_file() for task in summary["tasks"])
    assert summary["steps"] == sum(task["steps"] for task in summary["tasks"]) > len(suite.tasks)
    assert summary["tokens"] > 0 and summary["wall_time_s"] > 0
    # Each entry came from the mirror once (mmCIF asked first), then from the cache ("ubiquitin" too).
    assert sorted(hits) == ["/1BNI.cif", "/1BNI.pdb", "/1UBQ.cif", "/1UBQ.pdb"]
    progress = [line for line in completed.stderr.splitlines() if line.startswith("villin-size: ")]
    assert progress == ["villin-size: 5/5"]
    run, steps, events = _eval_run(cwd / "sciagent-runs")
    assert run.status == "completed" and run.goal == "eval basics"
    assert run.config["suite"] == "basics" and run.config["llm"] == "scripted"
    assert [(step.kind, step.status) for step in steps] == [("eval_task", "completed")] * len(suite.tasks)
    assert steps[0].summary == "villin-size: 5/5 checks" and steps[0].data["passed"] == 5
    scored = [event.message for event in events if event.data.get("kind") not in ("owner", "released")]
    assert scored == [f"score {summary['total']}/{summary['total']} checks"]


def test_a_wrong_number_fails_its_checks_in_the_table_and_the_journal(tmp_path: Path, openai_server) -> None:
    suite_file = tmp_path / "wrong.yaml"
    suite_file.write_text(WRONG_SUITE)
    openai_server.script(
        tool_call_reply("structure_info", {"structure": "villin"}), text_reply("Villin has 580 atoms.")
    )
    completed = _eval(_workspace(tmp_path, openai_server.base_url), str(suite_file), "--llm", "scripted")
    assert completed.returncode == 1, completed.stderr
    assert "error: 2 of 3 checks failed" in completed.stderr
    rows = [re.split("[│┃]", line)[1:-1] for line in completed.stdout.splitlines() if line[:1] in "│┃"]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert cells[0] == ["task", "score", "steps", "tokens", "seconds"]
    task_row, total_row = cells[1:]
    assert task_row[:4] == ["villin-atoms", "1/3", "2", "36"]  # two model calls of 18 tokens each
    assert total_row[:4] == ["total", "1/3", "2", "36"] and total_row[4] == task_row[4]
    assert completed.stdout.splitlines()[-2:] == [
        "villin-atoms: answer states 582: no number in the answer is 582 (numbers in it: 580)",
        "villin-atoms: every number in the answer is from a tool result: unattributed: 580",
    ]
    run, (step,), _ = _eval_run(tmp_path / "sciagent-runs")
    assert (run.goal, run.status, step.status) == ("eval wrong", "completed", "failed")
    assert step.summary == "villin-atoms: 1/3 checks"
    assert [check["passed"] for check in step.data["checks"]] == [True, False, False]

    # The run is listed as an evaluation, and resume (for studies and sessions) says it is not resumed.
    sciagent = [sys.executable, "-m", "sciagent"]
    listed = subprocess.run([*sciagent, "runs"], cwd=tmp_path, capture_output=True, text=True)
    assert run.id in listed.stdout and "eval" in listed.stdout
    resumed = subprocess.run([*sciagent, "resume", run.id], cwd=tmp_path, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)  # fmt: skip
    assert resumed.returncode == 2 and "is an evaluation: evaluations are not resumed" in resumed.stderr


# A check as a suite writes it -> whether the wrong session passes it, and words of the evidence.
ST = "{kind: answer_number, tool: structure_info"
CHECKS_ON_THE_WRONG_SESSION = {
    "{kind: tool_called, tool: structure_info, arguments: {structure: VILLIN}}": (True, "at step 1"),
    "{kind: tool_called, tool: structure_info, arguments: {structure: 1UBQ}}": (False, "(1 calls: ok {'s"),
    "{kind: tool_called, tool: rmsd}": (False, "rmsd was never called"),
    ST + ", field: total_atoms}": (False, "no number in the answer is 582 (numbers in it: 580)"),
    ST + ", field: total_atoms, tolerance: 2}": (True, "580 for 582"),
    ST + ", field: chains.0.residues, tolerance: 2}": (False, "is 35"),
    ST + ", field: chains.3.atoms}": (False, "the structure_info result has no field chains.3.atoms"),
    ST + ", field: source}": (False, "structure_info.source is 'villin headpiece"),
    "{kind: answer_number, tool: rmsf, field: maximum}": (False, "rmsf never returned a result"),
    "{kind: answer_number, value: 580}": (True, "580 for 580"),
    "{kind: answer_contains, text: 580 ATOMS}": (True, "found"),
    "{kind: answer_contains, text: '582'}": (False, "not in the answer: Villin has 580 atoms."),
    "{kind: file_written, path: '*.json', contains: answered}": (True, "results.json"),
    "{kind: file_written, path: report.md, contains: nonesuch}": (False, "1 files match report.md, none"),
    "{kind: file_written, path: plots/*.png}": (False, "no non-empty file matches plots/*.png"),
}


def test_each_kind_of_check_judges_a_real_session_both_ways(tmp_path: Path, openai_server) -> None:
    suite_file = tmp_path / "wrong.yaml"
    suite_file.write_text(WRONG_SUITE)
    openai_server.script(
        tool_call_reply("structure_info", {"structure": "villin"}), text_reply("Villin has 580 atoms.")
    )
    _eval(_workspace(tmp_path, openai_server.base_url), str(suite_file), "--llm", "scripted")
    (results,) = (tmp_path / "sciagent-runs" / "sessions").glob("*/results.json")
    outcome = SessionOutcome.model_validate_json(results.read_text())
    adapter = TypeAdapter(Check)
    for written, (passed, evidence) in CHECKS_ON_THE_WRONG_SESSION.items():
        result = adapter.validate_python(yaml.safe_load(written)).evaluate(outcome, results.parent)
        assert (result.passed, evidence in result.detail) == (passed, True), (written, result)


CHECK_0 = "tasks.0.checks.0"
BAD_SUITES = {  # the first task's checks (or the whole file) -> the error's words
    "[{kind: answer_number}]": f"{CHECK_0}.answer_number (task a): Value error, give either value, or",
    "[{kind: tool_called, tool: fold}]": f"{CHECK_0}.tool_called.tool (task a): Value error, no tool named",
    "[{kind: guess}]": f"{CHECK_0} (task a): Input tag 'guess' found using 'kind' does not match",
    "[{kind: file_written, path: ../x}]": "path (task a): Value error, must be relative to the session",
    "[]": "tasks.0.checks (task a): List should have at least 1 item",
    "[{kind: answer_attributed}]}, {id: a, prompt: q, checks: [{kind: answer_attributed}]": (
        "tasks: Value error, task ids must be unique: a repeated"
    ),
    "[{kind: answer_attributed}], budget: 3": "tasks.0.budget (task a): Extra inputs are not permitted",
    "[{kind: answer_attributed}": "not valid YAML: line 1, column",
    "- a list": "a suite is a mapping with a list of tasks",
}


@pytest.mark.parametrize(("checks", "message"), BAD_SUITES.items(), ids=range(len(BAD_SUITES)))
def test_a_bad_suite_file_is_one_error_naming_the_file_and_the_field(
    tmp_path: Path, checks: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(checks if checks.startswith("-") else f"tasks: [{{id: a, prompt: p, checks: {checks}}}]")
    with pytest.raises(UserError) as raised:
        load(str(path))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def test_suites_are_found_by_name_or_path_and_the_cli_says_what_is_wrong(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "src" / "sciagent" / "evals" / "basics.yaml"
    assert load("basics") == load(str(shipped)) and load("basics").name == "basics"
    with pytest.raises(UserError, match=r"no suite named 'nonesuch' \(shipped: basics\)"):
        load("nonesuch")
    with pytest.raises(UserError, match=r"cannot read suite file .*missing\.yaml"):
        load(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("tasks: [{id: a, prompt: p, checks: [{kind: answer_number}]}]")
    error = f"bad.yaml: {CHECK_0}.answer_number (task a): Value error, give either value, or tool and field"
    completed = _eval(tmp_path, "bad.yaml")
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.strip().splitlines() == [f"error: {error}"]
    completed = _eval(tmp_path, "bad.yaml", "--json")
    assert completed.returncode == 2 and completed.stderr.strip().splitlines() == [f"error: {error}"]
    assert json.loads(completed.stdout) == {"status": "failed", "error": error, "exit_code": 2}


def test_an_unusable_profile_fails_the_eval_run_before_any_task(tmp_path: Path) -> None:
    (tmp_path / "wrong.yaml").write_text(WRONG_SUITE)
    completed = _eval(tmp_path, "wrong.yaml", "--llm", "nonesuch")
    assert completed.returncode == 2 and "nonesuch" in completed.stderr, completed.stderr
    run, (step,), _ = _eval_run(tmp_path / "sciagent-runs")
    assert run.status == "failed" and "nonesuch" in (run.error or "")
    assert step.status == "failed" and step.summary.startswith("not scored: ")
