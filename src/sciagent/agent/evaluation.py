"""Evaluation suites: tasks put to the agent, and deterministic checks on what it did.

Why deterministic checks and not a grading model: a grade from another model moves with that model.
These read only the session's record (the answer; every tool call with its arguments, status and
result) and the files it wrote, so a score means the same on every run and for every model.

A suite is a YAML file; the shipped ones live in ``sciagent/evals/`` and are named without ``.yaml``
(``sciagent eval basics``), any other is given by its path::

    name: basics                    # optional: the file's name without .yaml
    description: what the suite covers
    tasks:
      - id: villin-size             # unique in the suite: lower-case letters, digits, dashes
        prompt: How many chains, residues and atoms does this structure have?
        structure: villin           # optional: added to the prompt as "(Structure: villin)",
                                    #   as `sciagent ask --structure` does
        max_steps: 12               # optional: model turns at most (default 12)
        timeout_s: 600              # optional: the session's wall time in seconds (default 600)
        checks:                     # at least one; the task scores the checks that pass
          - {kind: tool_called, tool: structure_info, arguments: {structure: villin}}
          - {kind: answer_number, value: 582}

The kinds of check:

``answer_number`` (``value``, or ``tool`` and ``field``; ``tolerance``, default 0)
    The answer states the number: ``value``, or the ``field`` of the result of the last successful
    call of ``tool`` (a dotted path, list items by index: ``rows.1.values.rmsf``). A written number
    matches when the value rounds to it (``0.79`` for 0.7912; the rule of ``report.numbers``) or
    lies within ``tolerance`` of it.
``answer_contains`` (``text``)
    The answer contains ``text``, ignoring case.
``tool_called`` (``tool``, ``arguments``, default none)
    A successful call of ``tool`` whose arguments include each of ``arguments``: numbers equal,
    strings equal ignoring case, lists item by item. An argument the model left to its default does
    not count as given.
``file_written`` (``path``; ``contains``, optional)
    A non-empty file in the session directory matches the glob ``path`` (relative to it); with
    ``contains``, one such file holds that text.
``answer_attributed``
    The session answered, and every number in its answer is in some tool result of the session (or
    in the question): none is unattributed.

Every tool a check names must be in the catalogue, so a misspelt name fails when the suite loads
instead of scoring zero everywhere.
"""

from __future__ import annotations

import importlib.resources
import math
from abc import abstractmethod
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from sciagent.agent.journal_rows import one_line
from sciagent.agent.steps import SessionOutcome, with_structure
from sciagent.errors import UserError
from sciagent.report.numbers import find_numbers, matches

SUITE_SUFFIXES = (".yaml", ".yml")
SHIPPED = importlib.resources.files("sciagent") / "evals"  # package data: the suites sciagent ships


def _known_tool(name: str, info: ValidationInfo) -> str:
    """A tool name the catalogue has, when ``load_suite`` validates with the catalogue's names."""
    tools = (info.context or {}).get("tools")
    if tools is not None and name not in tools:
        raise ValueError(f"no tool named {name!r} in the catalogue (`sciagent tools` lists them)")
    return name


ToolName = Annotated[str, AfterValidator(_known_tool)]


class CheckResult(BaseModel):
    """One check's verdict: what it asked (``check``), and what was found (``detail``)."""

    check: str
    passed: bool
    detail: str


class _Check(BaseModel):
    """One entry of a task's ``checks``: validated from the YAML, then put to a finished session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @abstractmethod
    def describe(self) -> str:
        """What the check asks, in a few words (the score table's failure lines)."""

    @abstractmethod
    def judge(self, outcome: SessionOutcome, session_dir: Path) -> tuple[bool, str]:
        """Whether the session passes, and the evidence either way."""

    def evaluate(self, outcome: SessionOutcome, session_dir: Path) -> CheckResult:
        passed, detail = self.judge(outcome, session_dir)
        return CheckResult(check=self.describe(), passed=passed, detail=detail)


class AnswerNumber(_Check):
    kind: Literal["answer_number"]
    value: float | None = None
    tool: ToolName | None = None
    field: str | None = Field(default=None, min_length=1)
    tolerance: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> AnswerNumber:
        if (self.value is None) == (self.tool is None) or (self.tool is None) != (self.field is None):
            raise ValueError("give either value, or tool and field")
        return self

    def describe(self) -> str:
        expected = f"{self.value:g}" if self.value is not None else f"{self.tool}.{self.field}"
        return f"answer states {expected}" + (f" ±{self.tolerance:g}" if self.tolerance else "")

    def judge(self, outcome: SessionOutcome, session_dir: Path) -> tuple[bool, str]:
        try:
            expected = self.value if self.value is not None else _result_field(outcome, self.tool, self.field)
        except _NoValue as exc:
            return False, str(exc)
        written = find_numbers(outcome.answer)
        for number in written:
            if matches(number, [expected]) or abs(number.value - expected) <= self.tolerance:
                return True, f"{number.text} for {expected:g}"
        listed = ", ".join(number.text for number in written) or "none"
        return False, f"no number in the answer is {expected:g} (numbers in it: {listed})"


class AnswerContains(_Check):
    kind: Literal["answer_contains"]
    text: str = Field(min_length=1)

    def describe(self) -> str:
        return f"answer contains {self.text!r}"

    def judge(self, outcome: SessionOutcome, session_dir: Path) -> tuple[bool, str]:
        if self.text.casefold() in outcome.answer.casefold():
            return True, "found"
        return False, f"not in the answer: {one_line(outcome.answer, 120)}"


class ToolCalled(_Check):
    kind: Literal["tool_called"]
    tool: ToolName
    arguments: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in self.arguments.items())
        return f"{self.tool}({shown}) called"

    def judge(self, outcome: SessionOutcome, session_dir: Path) -> tuple[bool, str]:
        calls = [call for call in outcome.tool_calls if call.tool == self.tool]
        for call in calls:
            if call.status == "ok" and all(
                key in call.arguments and _same(call.arguments[key], wanted)
                for key, wanted in self.arguments.items()
            ):
                return True, f"at step {call.step}"
        if not calls:
            return False, f"{self.tool} was never called"
        seen = "; ".join(f"{call.status} {call.arguments}" for call in calls[:3])
        return False, f"no successful call with these arguments ({len(calls)} calls: {seen})"


class FileWritten(_Check):
    kind: Literal["file_written"]
    path: str = Field(min_length=1, description="a glob relative to the session directory")
    contains: str | None = None

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise ValueError("must be relative to the session directory, without '..'")
        return path

    def describe(self) -> str:
        return f"file {self.path} written" + (f" containing {self.contains!r}" if self.contains else "")

    def judge(self, outcome: SessionOutcome, session_dir: Path) -> tuple[bool, str]:
        files = [p for p in sorted(session_dir.glob(self.path)) if p.is_file() and p.stat().st_size > 0]
        if not files:
            return False, f"no non-empty file matches {self.path}"
        for path in files:
            if self.contains is None or self.contains in path.read_text(errors="replace"):
                return True, str(path.relative_to(session_dir))
        return False, f"{len(files)} files match {self.path}, none contains {self.contains!r}"


class AnswerAttributed(_Check):
    kind: Literal["answer_attributed"]

    def describe(self) -> str:
        return "every number in the answer is from a tool result"

    def judge(self, outcome: SessionOutcome, session_dir: Path) -> tuple[bool, str]:
        if outcome.status != "answered":
            return False, f"no answer ({outcome.status}: {outcome.reason})"
        if outcome.unattributed_numbers:
            return False, f"unattributed: {', '.join(outcome.unattributed_numbers)}"
        return True, f"{len(find_numbers(outcome.answer))} numbers, all attributed"


Check = Annotated[
    AnswerNumber | AnswerContains | ToolCalled | FileWritten | AnswerAttributed, Field(discriminator="kind")
]


class EvalTask(BaseModel):
    """One request to the agent and the checks its session must pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    prompt: str = Field(min_length=1)
    structure: str | None = Field(default=None, min_length=1)
    max_steps: int = Field(default=12, ge=1, le=200)
    timeout_s: float = Field(default=600.0, gt=0)
    checks: list[Check] = Field(min_length=1)

    @property
    def question(self) -> str:
        """The prompt as the agent gets it, with the structure named as ``sciagent ask`` names it."""
        return with_structure(self.prompt, self.structure)


class Suite(BaseModel):
    """A named list of tasks, as its YAML file holds it (the module docstring has the format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    tasks: list[EvalTask] = Field(min_length=1)

    @field_validator("tasks")
    @classmethod
    def _unique_ids(cls, tasks: list[EvalTask]) -> list[EvalTask]:
        ids = [task.id for task in tasks]
        repeated = sorted({task_id for task_id in ids if ids.count(task_id) > 1})
        if repeated:
            raise ValueError(f"task ids must be unique: {', '.join(repeated)} repeated")
        return tasks


class TaskScore(BaseModel):
    """How one task's session went: its checks, and what it cost."""

    task_id: str
    status: str = Field(description="how the session ended: answered, budget_exhausted or failed")
    checks: list[CheckResult]
    steps: int
    tokens: int
    wall_time_s: float
    session_dir: str

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use
    @property
    def passed(self) -> int:
        return sum(check.passed for check in self.checks)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return len(self.checks)


def score_task(task: EvalTask, outcome: SessionOutcome, session_dir: Path) -> TaskScore:
    """Run every check of ``task`` on a finished session."""
    return TaskScore(
        task_id=task.id,
        status=outcome.status,
        checks=[check.evaluate(outcome, session_dir) for check in task.checks],
        steps=outcome.steps,
        tokens=outcome.tokens,
        wall_time_s=outcome.wall_time_s,
        session_dir=str(session_dir),
    )


def shipped_suites() -> list[str]:
    """The names of the suites that come with sciagent."""
    return sorted(item.name[: -len(".yaml")] for item in SHIPPED.iterdir() if item.name.endswith(".yaml"))


def load_suite(source: str, *, tools: Collection[str]) -> Suite:
    """A shipped suite by name, or a suite file by path; every tool its checks name must be in ``tools``
    (the catalogue the sessions get).

    Raises:
        UserError: no such suite, or the file is not a valid suite (the message names the file and
            the first bad field).
    """
    path = _suite_path(source)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read suite file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a suite is a mapping with a list of tasks (see `sciagent eval --help`)")
    try:
        return Suite.model_validate({"name": path.stem, **data}, context={"tools": frozenset(tools)})
    except ValidationError as exc:
        raise UserError(f"{path}: {_first_problem(exc, data)}") from exc


def _suite_path(source: str) -> Path:
    path = Path(source).expanduser()
    if path.suffix in SUITE_SUFFIXES or path.exists() or len(path.parts) > 1:
        return path
    shipped = SHIPPED / f"{source}.yaml"
    if not shipped.is_file():
        names = ", ".join(shipped_suites()) or "none"
        raise UserError(f"no suite named {source!r} (shipped: {names}); or give the path of a YAML file")
    return Path(str(shipped))


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else " ".join(problem.split())


def _first_problem(error: ValidationError, data: dict[str, Any]) -> str:
    """``tasks.2.checks.0.answer_number.value (task villin-size): <message>``: the field and its task."""
    problem = error.errors()[0]
    location = problem["loc"]
    where = ".".join(str(part) for part in location) or "suite"
    tasks = data.get("tasks")
    if location[:1] == ("tasks",) and len(location) > 1 and isinstance(tasks, list):
        index = location[1]
        task = tasks[index] if isinstance(index, int) and index < len(tasks) else None
        if isinstance(task, dict) and isinstance(task.get("id"), str):
            where += f" (task {task['id']})"
    return f"{where}: {problem['msg']}"


class _NoValue(Exception):
    """A check's expected value is not in the session: the reason is its message."""


def _result_field(outcome: SessionOutcome, tool: str | None, field: str | None) -> float:
    """The number at ``field`` of the last successful ``tool`` result; ``_NoValue`` saying why not."""
    results = [call.result for call in outcome.tool_calls if call.tool == tool and call.result is not None]
    if not results or field is None:
        raise _NoValue(f"{tool} never returned a result")
    value: Any = results[-1]
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise _NoValue(f"the {tool} result has no field {field}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _NoValue(f"{tool}.{field} is {value!r}, not a number")
    return float(value)


def _same(given: Any, wanted: Any) -> bool:
    """Whether an argument the model gave is the one a check wants (see the module docstring)."""
    if isinstance(wanted, bool) or isinstance(given, bool):
        return given == wanted
    if isinstance(wanted, int | float):
        return isinstance(given, int | float) and math.isclose(given, wanted, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(wanted, str):
        return isinstance(given, str) and given.casefold() == wanted.casefold()
    if isinstance(wanted, list):
        return isinstance(given, list) and len(given) == len(wanted) and all(map(_same, given, wanted))
    return given == wanted
