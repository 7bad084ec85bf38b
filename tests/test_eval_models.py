"""bench/eval_models.py run as a user runs it: a real process, two profiles on the scripted OpenAI server.

The bench's table must be the eval runs' own record: every number in a profile's column equals what
the journal keeps for that profile's run. A model that answers well and one that does not must come
out apart. The PDB entry a task asks for comes from the bench's local mirror with RCSB unreachable
(every HTTP request to anything but 127.0.0.1 goes to a dead proxy); the control shows that the same
download, without the mirror, fails there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval_scripts import SCRIPTS, Script, info
from openai_server import RecordedRequest
from sciagent.agent.journal import Journal
from sciagent.errors import StructureError
from sciagent.science.structures import fetch_pdb
from sciagent.workflows.sessions.evaluate import load

BENCH = Path(__file__).parents[1] / "bench" / "eval_models.py"
TASKS = ["villin-size", "ubiquitin-size"]
VAGUE = Script([info("villin")], lambda results: "It is a small protein.")  # calls a tool, states nothing
DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port: a connection through it is refused
DEAD_PROXY = {"HTTP_PROXY": DEAD, "HTTPS_PROXY": DEAD, "NO_PROXY": "127.0.0.1"}
SUMMARY = ["model", "decode tok/s", "file MB", "checks", "whole tasks", "steps", "tokens"]


def _bench(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _question(request: RecordedRequest) -> str:
    return next(m["content"] for m in request.body["messages"] if m["role"] == "user")


def _rows(table: str) -> dict[str, list[str]]:
    """A printed table's rows by their first cell (cells are at least two spaces apart)."""
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in table.splitlines())}


@pytest.mark.timeout(120)
def test_the_table_is_each_eval_runs_journalled_score_side_by_side(
    tmp_path: Path, openai_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sciagent.toml").write_text(
        f'[llm.good]\nbase_url = "{openai_server.base_url}"\nmodel = "good"\nmax_retries = 0\n'
        f'[llm.vague]\nbase_url = "{openai_server.base_url}"\nmodel = "vague"\nmax_retries = 0\n'
    )
    good = {task.question: SCRIPTS[task.id] for task in load("basics").tasks}
    scripts = {"good": good.__getitem__, "vague": lambda question: VAGUE}
    openai_server.respond(lambda request: scripts[request.body["model"]](_question(request)).reply(request))
    env = {**os.environ, **DEAD_PROXY, "SCIAGENT_CACHE_DIR": str(tmp_path / "cache")}
    completed = _bench(tmp_path, "--llm", "good", "--llm", "vague", "--tasks", ",".join(TASKS), env=env)
    assert completed.returncode == 0, completed.stderr

    first, tasks = completed.stdout.strip().split("\n\n")
    header, summary = first.split("\n", 1)
    assert header.startswith("suite basics: 2 tasks, task timeout 600 s; load average ")
    rows, per_task = _rows(summary), _rows(tasks)
    assert list(rows)[1:] == [*SUMMARY, "s/task mean", "s/task max", "run"] and rows[""] == ["good", "vague"]
    assert rows["model"] == rows["decode tok/s"] == rows["file MB"] == ["-", "-"]  # served, not embedded
    assert list(per_task) == ["per task", *TASKS] and per_task["per task"] == ["good", "vague"]
    assert rows["checks"] == ["10/10", "3/10"] and rows["whole tasks"] == ["2/2", "0/2"]  # told apart

    with Journal.in_workspace(tmp_path / "sciagent-runs") as journal:
        for column, profile in enumerate(["good", "vague"]):
            run = journal.get_run(rows["run"][column])
            assert run.config["llm"] == profile and run.status == "completed"
            steps = [step.data for step in journal.steps(run.id)]
            assert [data["task_id"] for data in steps] == TASKS
            passed, total = sum(d["passed"] for d in steps), sum(d["total"] for d in steps)
            score = [e.message for e in journal.events(run.id) if e.message.startswith("score ")]
            assert score == [f"score {rows['checks'][column]} checks"] == [f"score {passed}/{total} checks"]
            whole = sum(d["passed"] == d["total"] for d in steps)
            assert rows["whole tasks"][column] == f"{whole}/{len(steps)}"
            assert rows["steps"][column] == str(sum(d["steps"] for d in steps))
            assert rows["tokens"][column] == f"{sum(d['tokens'] for d in steps):,}"
            seconds = [d["wall_time_s"] for d in steps]
            assert rows["s/task max"][column] == f"{max(seconds):.1f}"
            assert rows["s/task mean"][column] == f"{sum(seconds) / len(seconds):.1f}"
            for data in steps:
                cell = f"{data['passed']}/{data['total']} {data['wall_time_s']:.1f}s"
                assert per_task[data["task_id"]][column] == cell

    # 1UBQ came through the bench's mirror; the same download without it cannot reach RCSB here.
    assert (tmp_path / "cache" / "pdb" / "1UBQ.pdb").is_file()
    for name, value in DEAD_PROXY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SCIAGENT_PDB_URL", raising=False)
    with pytest.raises(StructureError, match="could not download 1BNI"):
        fetch_pdb("1BNI", cache_dir=tmp_path / "control", timeout=5)


def test_a_task_the_suite_lacks_is_one_line_naming_it(tmp_path: Path) -> None:
    completed = _bench(tmp_path, "--tasks", "villin-size,nonesuch")
    assert completed.returncode == 2 and completed.stdout == ""
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("error: suite basics has no task nonesuch: its tasks are villin-size, ")
