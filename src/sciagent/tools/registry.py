"""One registry of tools, read by the agent loop, ``sciagent tools`` and the MCP server alike.

A tool is a plain function ``f(arguments, context) -> result`` whose two type hints are pydantic
models: the argument model is the JSON schema a model is shown and the validator its call goes
through; the result model is what the journal stores and numbers are attributed to. The docstring's
first paragraph is the description a model reads, so it is written for models. ``define_tool`` reads
all of that from the function, so a tool is written once (smolagents' and pydantic-ai's habit).

A call never raises anything but ``ToolArgumentsError`` (the model can fix it: the message names the
tool, the argument and what is wrong) or ``ToolFailed`` (it ran and failed: the message and a failure
class; any other exception a tool lets out, an ``OSError`` say, is a ``ToolFailed`` of class
``internal`` naming the exception's type); both become observations for the model, never the end of a
session.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, ValidationError

from sciagent.config import EFFECTS, Effect, Settings
from sciagent.errors import SciagentError, UserError
from sciagent.llm.base import Message, ToolSpec

if TYPE_CHECKING:  # these build on this module, or are only handed through
    from sciagent.sandbox import Sandbox
    from sciagent.tools.skills import SkillLibrary
    from sciagent.tools.tasks import TaskBoard

CostClass = Literal["instant", "minutes", "hours"]
COST_RANK: dict[str, int] = {"instant": 0, "minutes": 1, "hours": 2}

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")  # `NAME.tool` for an MCP server's tools

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class ToolArgumentsError(UserError):
    """A tool call the model can correct: unknown tool, or arguments that do not validate."""


class ToolFailed(SciagentError):
    """A tool ran and failed; ``failure_class`` says how (``setup``, ``instability``, ``io``, ...)."""

    def __init__(self, message: str, failure_class: str = "failed") -> None:
        super().__init__(message)
        self.failure_class = failure_class


@dataclass(frozen=True)
class ToolContext:
    """What a tool may use besides its arguments.

    Attributes:
        session_dir: the session's own directory; the file tools read and write only there.
        tasks: the session's task board (``sciagent.tools.tasks``); None where no task may run.
        ask_user: puts a question to the person and returns the reply; None where no one can answer
            (a non-interactive run).
        settings: the session's settings, for tools that run a whole workflow (its site and model-profile
            tables); ``default_llm`` names the profile of the session's own model. None: no such tool runs.
        sandbox: where model-written code runs (generated tools, their tests); None: it cannot run.
        skills: the workspace's skill library, where a tool that passed its tests is kept.
        catalogue: the session's own registry, live: ``create_tool`` adds what it made to it.
        model_id: the session's model, named in what it creates.
        session_id: the session's id, likewise.
        call_id: the id of the call being run (the agent sets it per call), so a tool that starts
            something durable (a sub-agent) finds it again when a resumed session runs the call again.
        transcript: the messages the model had when it made this call (set per call), whose digest a
            generated tool keeps as its provenance.
    """

    session_dir: Path
    tasks: TaskBoard | None = None
    ask_user: Callable[[str], str] | None = None
    settings: Settings | None = None
    sandbox: Sandbox | None = None
    skills: SkillLibrary | None = None
    catalogue: ToolRegistry | None = None
    model_id: str | None = None
    session_id: str | None = None
    call_id: str | None = None
    transcript: tuple[Message, ...] = ()


@dataclass(frozen=True)
class CallPreview:
    """What an approval of one call is about, computed from the call before it runs.

    Attributes:
        summary: one line naming the action and what it acts on.
        detail: what the person must read before saying yes (a job script, generated code); empty if
            the summary says it all.
        facts: what approval rules match on (``site``, ``queue``, ``nodes``, ``walltime_s``, ``account``).
    """

    summary: str
    detail: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tool(Generic[A, R]):
    """One catalogue entry; build it with ``define_tool``.

    ``effects`` say what the tool does (see ``Effect``); a tool that ``runs_on_site`` also spends an
    allocation when its site is a batch site. ``preview`` tells an approver what one call would do.
    """

    name: str
    description: str
    arguments: type[A]
    result: type[R]
    function: Callable[[A, ToolContext], R]
    cost: CostClass = "instant"
    effects: frozenset[Effect] = frozenset({"reads"})
    runs_on_site: bool = False
    preview: Callable[[A, ToolContext], CallPreview] | None = None

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as a model and an MCP client are shown it."""
        return self.arguments.model_json_schema()

    def example(self) -> dict[str, Any] | None:
        """The first example call of the argument model's schema (``json_schema_extra``), if it has one."""
        examples = self.parameters().get("examples") or [None]
        return examples[0]

    def spec(self) -> ToolSpec:
        """The tool as a native tool-call definition for a ``ChatModel``."""
        return ToolSpec(self.name, self.description, self.parameters())

    def parse(self, raw: Mapping[str, Any] | str | None) -> A:
        """Validate a call's arguments (a dict, or JSON text as models send it).

        Raises:
            ToolArgumentsError: the text is not a JSON object, or an argument does not validate;
                the message names the tool, the argument and the problem.
        """
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolArgumentsError(f"tool {self.name}: the arguments are not JSON ({exc.msg})") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ToolArgumentsError(f"tool {self.name}: the arguments must be a JSON object")
        try:
            return self.arguments.model_validate(dict(raw))
        except ValidationError as exc:
            raise ToolArgumentsError(f"tool {self.name}: {_problems(exc)}") from exc

    def call(self, raw: Mapping[str, Any] | str | None, context: ToolContext) -> R:
        """Validate and run; what the function raised is mapped to ``ToolArgumentsError``/``ToolFailed``."""
        return self.run(self.parse(raw), context)

    def run(self, arguments: A, context: ToolContext) -> R:
        """Run on arguments ``parse`` already validated; errors mapped as ``call`` says."""
        try:
            result = self.function(arguments, context)
        except (ToolArgumentsError, ToolFailed):
            raise
        except UserError as exc:  # bad input the model gave (a structure that does not exist, a path)
            raise ToolArgumentsError(f"tool {self.name}: {exc}") from exc
        except SciagentError as exc:
            raise ToolFailed(f"tool {self.name}: {exc}", getattr(exc, "failure_class", "failed")) from exc
        except Exception as exc:  # an OSError, a ValueError: still the tool's failure, never the session's
            raise ToolFailed(f"tool {self.name}: {type(exc).__name__}: {exc}", "internal") from exc
        if not isinstance(result, self.result):
            raise ToolFailed(
                f"tool {self.name} returned {type(result).__name__}, not {self.result.__name__}", "internal"
            )
        return result


class OpenArguments(BaseModel):
    """The arguments of a ``SchemaTool``: whatever its JSON schema allows (checked by ``parse``)."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class SchemaTool(Tool[OpenArguments, R]):
    """A tool described by a JSON schema it was given rather than a pydantic model: an external MCP
    server's tool, a generated one.

    ``validate`` checks each call against the schema here (a generated tool's code should not have to);
    without it the tool's owner validates (an MCP server checks its own calls).
    """

    input_schema: dict[str, Any] = field(default_factory=dict)
    validate: bool = False

    def parameters(self) -> dict[str, Any]:
        return self.input_schema

    def parse(self, raw: Mapping[str, Any] | str | None) -> OpenArguments:
        parsed = super().parse(raw)
        if self.validate:
            problems = sorted(
                Draft202012Validator(self.input_schema).iter_errors(parsed.model_dump()), key=str
            )
            if problems:
                shown = "; ".join(_schema_problem(problem) for problem in problems[:3])
                raise ToolArgumentsError(f"tool {self.name}: {shown}")
        return parsed


def _schema_problem(problem: Any) -> str:
    where = ".".join(str(part) for part in problem.absolute_path)
    return f"argument {where!r}: {problem.message}" if where else problem.message


def define_tool(
    function: Callable[[A, ToolContext], R],
    *,
    effects: Iterable[Effect],
    name: str | None = None,
    cost: CostClass = "instant",
    runs_on_site: bool = False,
    preview: Callable[[A, ToolContext], CallPreview] | None = None,
) -> Tool[A, R]:
    """A ``Tool`` from ``function``: name, argument and result models and description read from it.

    ``effects`` is required: every tool says what it does, and approval is decided from that.

    Raises:
        TypeError: the function's first parameter or its return is not annotated with a pydantic model,
            or it has no docstring.
        ValueError: the name is not lower_snake_case, or no (or an unknown) effect is given.
    """
    hints = typing.get_type_hints(function)
    parameters = list(inspect.signature(function).parameters)
    arguments, result = hints.get(parameters[0]) if parameters else None, hints.get("return")
    for what, model in (("first parameter", arguments), ("return", result)):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{function.__qualname__}: its {what} must be annotated with a pydantic model")
    doc = inspect.getdoc(function)
    if not doc:
        raise TypeError(f"{function.__qualname__}: a tool needs a docstring, the description models read")
    tool_name = name or function.__name__
    if not _NAME.match(tool_name):
        raise ValueError(f"tool name {tool_name!r} must be lower_snake_case")
    description = doc.split("\n\n", 1)[0].replace("\n", " ")
    return Tool(
        tool_name, description, arguments, result, function, cost, checked_effects(tool_name, effects),
        runs_on_site, preview,
    )  # fmt: skip


def checked_effects(tool: str, effects: Iterable[str]) -> frozenset[Effect]:
    """``effects`` as a set, each one known and at least one given (ValueError otherwise)."""
    declared = frozenset(effects)
    unknown = sorted(declared - set(EFFECTS))
    if unknown or not declared:
        known = ", ".join(EFFECTS)
        raise ValueError(f"tool {tool}: effects must be some of {known} (got {sorted(declared)})")
    return declared  # type: ignore[return-value]  # checked against EFFECTS just above


@dataclass
class ToolRegistry:
    """Tools by name, in the order they were added."""

    _tools: dict[str, Tool] = field(default_factory=dict)

    @classmethod
    def of(cls, tools: Iterable[Tool]) -> ToolRegistry:
        registry = cls()
        for tool in tools:
            registry.add(tool)
        return registry

    def add(self, tool: Tool) -> None:
        """Register ``tool``; a second tool of the same name is refused (ValueError)."""
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name} is already registered")
        self._tools[tool.name] = tool

    def replace(self, tool: Tool) -> None:
        """Register ``tool`` in place of the one of the same name (a new version of a generated tool)."""
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        """The tool called ``name``; ``ToolArgumentsError`` listing the known ones otherwise."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolArgumentsError(f"no tool named {name!r}: the tools are {', '.join(self._tools)}")
        return tool

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        """Only the tools named (each must exist): what a sub-agent or an allow-list gets."""
        return ToolRegistry.of(self.get(name) for name in names)

    def describe(self) -> list[dict[str, Any]]:
        """Every tool as plain data: what ``sciagent tools --json`` prints."""
        return [
            {
                "name": tool.name,
                "description": tool.description,
                "cost": tool.cost,
                "effects": sorted(tool.effects),
                "runs_on_site": tool.runs_on_site,
                "arguments": tool.parameters(),
                "result": tool.result.model_json_schema(),
            }
            for tool in self
        ]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools


def _problems(error: ValidationError, most: int = 3) -> str:
    """The validation problems, each naming its argument (the first ``most``): what a model fixes."""
    described = []
    for problem in error.errors()[:most]:
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        if problem["type"] == "extra_forbidden":
            described.append(f"argument {where!r} is not one of its arguments")
        else:
            described.append(f"argument {where!r}: {problem['msg']}")
    return "; ".join(described)
