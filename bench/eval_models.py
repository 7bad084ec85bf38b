"""An eval suite put to several model profiles, scored side by side in one run.

Each profile gets one ordinary eval run (``evaluate_suite``, what ``sciagent eval SUITE --llm NAME`` runs,
journalled the same way) on the same tasks, one profile after the other in this process. The PDB entries
the ``basics`` suite asks for (1UBQ, 1BNI) come from ``tests/data/pdb``, served read-only on 127.0.0.1
for the run (``SCIAGENT_PDB_URL``; public files, so that socket needs no token): nothing is fetched from
RCSB. For each embedded profile, the decode speed (a 64-token free-text answer, profiles alternated,
median of 3) and the GGUF file's size are measured before the suite. Timings are printed, never
judged: the machine's load moves them (the load average is printed at the start and after each profile).

    python bench/eval_models.py [--llm NAME ...] [--suite basics] [--tasks ID,...] [--workspace DIR]
                                [--task-timeout S]

Output (a measured run): a header line, then one column per profile, cells at least two spaces apart::

    suite basics: 16 tasks, task timeout 60 s; load average 3.64
                  embedded                                embedded-gemma
    model         SmolLM2-135M-Instruct (embedded, Q4_1)  Gemma-3-270M (embedded, Q4_K_M, pretrained)
    decode tok/s  18.7                                    16.1
    file MB       98.4                                    253.1
    checks        49/65                                   43/65
    whole tasks   6/16                                    6/16
    steps         52                                      52
    tokens        10,438                                  11,455
    s/task mean   9.3                                     11.8
    s/task max    45.6                                    46.8
    run           20261206-164640-20c6                    20261206-164910-79ca

    per task                       embedded   embedded-gemma
    villin-size                    4/5 10.5s  4/5 4.6s
    ...

``decode tok/s`` and ``file MB`` are ``-`` for a profile served over HTTP; ``checks`` are the checks passed
of all the tasks' checks, ``whole tasks`` the tasks that passed every check; ``steps`` and ``tokens`` add
up the sessions' model turns and tokens; ``s/task`` is each session's own wall time; ``run`` is the eval
run's id in the workspace journal, where each task's check results are kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import typer

from sciagent.agent.evaluation import Suite, TaskScore
from sciagent.cli.common import settings_for
from sciagent.errors import SciagentError, UserError
from sciagent.llm.embedded import EmbeddedModel
from sciagent.llm.profiles import make_model, resolve_profile
from sciagent.workflows.sessions.evaluate import EvalOptions, SuiteResult, evaluate_suite, load

PDB_FILES = Path(__file__).resolve().parents[1] / "tests" / "data" / "pdb"
SPEED_PROMPT = [{"role": "user", "content": "Explain in a paragraph why proteins fold."}]
SPEED_TOKENS, SPEED_REPEATS = 64, 3


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No request lines on stderr: it carries the progress."""


@contextmanager
def pdb_mirror(directory: Path) -> Iterator[str]:
    """``directory`` served on 127.0.0.1 in RCSB's download layout (``/1UBQ.cif``): its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def subset(suite: Suite, task_ids: str | None, task_timeout: float | None) -> Suite:
    """``suite`` with only the tasks named (comma-separated), each within ``task_timeout`` seconds.

    Raises:
        UserError: a task id the suite does not have.
    """
    tasks = suite.tasks
    if task_ids:
        wanted = [task_id.strip() for task_id in task_ids.split(",") if task_id.strip()]
        known = {task.id: task for task in tasks}
        unknown = [task_id for task_id in wanted if task_id not in known]
        if unknown:
            listed = ", ".join(known)
            raise UserError(f"suite {suite.name} has no task {', '.join(unknown)}: its tasks are {listed}")
        tasks = [known[task_id] for task_id in wanted]
    if task_timeout is not None:
        tasks = [task.model_copy(update={"timeout_s": min(task.timeout_s, task_timeout)}) for task in tasks]
    return suite.model_copy(update={"tasks": tasks})


def decode_speeds(models: dict[str, EmbeddedModel]) -> dict[str, float]:
    """Median tokens/s of a free-text answer per model, the models alternated (ABBA) so load drifts evenly."""
    for model in models.values():
        model.chat(SPEED_PROMPT, max_tokens=8)  # warm-up: page in the mapped weights
    rates: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(SPEED_REPEATS):
        order = list(models.items()) if repeat % 2 == 0 else list(models.items())[::-1]
        for name, model in order:
            response = model.chat(SPEED_PROMPT, max_tokens=SPEED_TOKENS)
            rates[name].append(response.usage.completion_tokens / response.latency_s)
    return {name: statistics.median(values) for name, values in rates.items()}


def _whole(scores: list[TaskScore]) -> int:
    return sum(score.passed == score.total for score in scores)


def summary_rows(
    results: dict[str, SuiteResult], models: dict[str, EmbeddedModel], speeds: dict[str, float]
) -> list[list[str]]:
    """The side-by-side table: a header row of profile names, then one row per measure."""
    names = list(results)

    def row(label: str, cell: Callable[[str], str]) -> list[str]:
        return [label, *(cell(name) for name in names)]

    seconds = {name: [score.wall_time_s for score in results[name].scores] for name in names}
    return [
        ["", *names],
        row("model", lambda n: models[n].model_id if n in models else "-"),
        row("decode tok/s", lambda n: f"{speeds[n]:.1f}" if n in speeds else "-"),
        row("file MB", lambda n: f"{models[n].model_path.stat().st_size / 1e6:.1f}" if n in models else "-"),
        row("checks", lambda n: f"{results[n].passed}/{results[n].total}"),
        row("whole tasks", lambda n: f"{_whole(results[n].scores)}/{len(results[n].scores)}"),
        row("steps", lambda n: str(results[n].steps)),
        row("tokens", lambda n: f"{results[n].tokens:,}"),
        row("s/task mean", lambda n: f"{statistics.mean(seconds[n]):.1f}"),
        row("s/task max", lambda n: f"{max(seconds[n]):.1f}"),
        row("run", lambda n: results[n].run_id),
    ]


def task_rows(results: dict[str, SuiteResult]) -> list[list[str]]:
    """Per task: each profile's checks passed/total and the session's seconds."""
    names = list(results)
    by_task = {name: {score.task_id: score for score in results[name].scores} for name in names}
    first = results[names[0]].scores
    return [["per task", *names]] + [
        [score.task_id, *(_task_cell(by_task[name][score.task_id]) for name in names)] for score in first
    ]


def _task_cell(score: TaskScore) -> str:
    return f"{score.passed}/{score.total} {score.wall_time_s:.1f}s"


def aligned(rows: list[list[str]]) -> str:
    """``rows`` as text columns, at least two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> str:
    """Measure every profile and return the two tables as text."""
    settings = settings_for(Path(args.workspace) if args.workspace else None)
    profiles = args.llm or [settings.default_llm]
    kinds = {name: resolve_profile(name, settings.llm)[1].kind for name in profiles}  # unknown: fails now
    suite = subset(load(args.suite), args.tasks, args.task_timeout)
    models: dict[str, EmbeddedModel] = {}
    for name in profiles:
        model = make_model(name, settings.llm) if kinds[name] == "embedded" else None
        if isinstance(model, EmbeddedModel):
            models[name] = model
    speeds = decode_speeds(models) if models else {}
    timeout = "/".join(sorted({f"{task.timeout_s:g}" for task in suite.tasks}))
    header = f"suite {suite.name}: {len(suite.tasks)} tasks, task timeout {timeout} s; load average "
    header += f"{os.getloadavg()[0]:.2f}"
    results: dict[str, SuiteResult] = {}
    with pdb_mirror(PDB_FILES) as url:
        os.environ["SCIAGENT_PDB_URL"] = url
        for name in profiles:

            def progress(score: TaskScore, name: str = name) -> None:
                print(f"{name} {score.task_id}: {_task_cell(score)}", file=sys.stderr, flush=True)

            results[name] = evaluate_suite(suite, EvalOptions(llm=name), settings, on_task=progress)
            print(f"{name} done; load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    return f"{header}\n{aligned(summary_rows(results, models, speeds))}\n\n{aligned(task_rows(results))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", action="append", help="a model profile (repeatable); default: the default")
    parser.add_argument("--suite", default="basics", help="a shipped suite's name or a suite file")
    parser.add_argument("--tasks", help="only these task ids, comma-separated")
    parser.add_argument("--workspace", help="sessions and journal go here; default: the configured workspace")
    parser.add_argument("--task-timeout", type=float, help="cap each task's wall time (seconds)")
    args = parser.parse_args()
    if args.task_timeout is not None and args.task_timeout <= 0:
        parser.error("--task-timeout must be positive")
    try:
        print(run(args), flush=True)
    except SciagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:  # settings_for has printed the one-line error
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
