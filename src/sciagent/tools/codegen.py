"""``create_tool``: when no tool fits, the model writes one with its tests; it joins the catalogue only
once the tests pass in the sandbox.

A round: the arguments are checked (a free lower_snake name, a JSON schema of an object, code defining
a function of that name), the code and tests are written to a scratch directory as ``tool.py`` and
``test_tool.py``, ruff looks for errors that would make it fail anyway (syntax, undefined names), and
pytest runs the tests in the sandbox. Green: the tool is kept in the workspace's skill library (code,
tests, schema, model, prompt digest, test log, version) and registered in the session at once. Red:
the failures go back to the model as the call's error, and it may try again, ``MAX_ROUNDS`` times per
name and session (the drafts of each round stay under the session's ``tool_drafts/``).

Nothing is copied out of the scratch: the tests may have replaced ``tool.py`` with a link to a host
file or a FIFO. The drafts and the skill are written from the strings the model gave, and the log
from what the sandbox printed (so the drafts are bounded too: ``MAX_ROUNDS`` rounds of bounded text).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, Field

from sciagent.errors import SandboxUnavailable
from sciagent.sandbox import SandboxRun
from sciagent.tools.generated import TEST_LIMITS, failure_text, run_python, scratch_dir, skill_tool
from sciagent.tools.registry import CallPreview, ToolArgumentsError, ToolContext, ToolFailed, define_tool
from sciagent.tools.skills import SKILL_NAME, SkillRecord, now_utc

MAX_ROUNDS = 4
DRAFTS_DIR = "tool_drafts"
_LINT_RULES = "E9,F63,F7,F82"  # syntax errors, undefined names: what fails at run time anyway
_PASSED = re.compile(r"(\d+) passed")

EXAMPLE_CODE = """import mdtraj as md


def radius_of_gyration(trajectory: str, topology: str) -> dict:
    frames = md.load(trajectory, top=topology)
    values = md.compute_rg(frames) * 10.0
    return {"mean_rg_angstrom": float(values.mean()), "frames": int(frames.n_frames)}
"""
EXAMPLE_TESTS = """import mdtraj as md
import numpy as np

from tool import radius_of_gyration


def test_two_atoms_one_nm_apart(tmp_path):
    topology = md.Topology()
    residue = topology.add_residue("GLY", topology.add_chain())
    for name in ("CA", "CB"):
        topology.add_atom(name, md.element.carbon, residue)
    frames = md.Trajectory(np.array([[[0, 0, 0], [1, 0, 0]]], dtype=float), topology)
    frames.save_pdb(str(tmp_path / "t.pdb"))
    result = radius_of_gyration(str(tmp_path / "t.pdb"), str(tmp_path / "t.pdb"))
    assert abs(result["mean_rg_angstrom"] - 5.0) < 1e-3
"""


class CreateToolArguments(BaseModel):
    name: str = Field(description="the new tool's name, lower_snake_case; tool.py defines a function of it")
    description: str = Field(min_length=10, max_length=1000, description="what it computes, for models")
    parameters: dict[str, Any] = Field(
        description='a JSON schema of its arguments: {"type": "object", "properties": {...}, '
        '"required": [...]}'
    )
    code: str = Field(
        min_length=1,
        max_length=40_000,
        description="tool.py: imports and the function, which takes the arguments by name and returns "
        "JSON-able data (a dict); paths are relative to the session directory; numpy, mdtraj, openmm "
        "are importable",
    )
    tests: str = Field(
        min_length=1,
        max_length=40_000,
        description="test_tool.py: pytest tests that import from tool (from tool import NAME) and check "
        "values computed independently",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "name": "radius_of_gyration",
                    "description": "Mean radius of gyration (angstrom) over a trajectory.",
                    "parameters": {
                        "type": "object",
                        "properties": {"trajectory": {"type": "string"}, "topology": {"type": "string"}},
                        "required": ["trajectory", "topology"],
                    },
                    "code": EXAMPLE_CODE,
                    "tests": EXAMPLE_TESTS,
                }
            ]
        }
    }


class CreatedTool(BaseModel):
    name: str
    version: int
    tests_passed: int
    registered: bool = Field(description="callable in this session from now on")
    skill: str = Field(description="where the skill library keeps it")
    sandbox: str = Field(description="the protections the tests ran under")


def create_tool(arguments: CreateToolArguments, context: ToolContext) -> CreatedTool:
    """Write a new tool when no tool fits: give its name, description, a JSON schema of its parameters,
    its Python code (a function named like the tool) and pytest tests. The tests run in a sandbox; if
    they pass, the tool is added to the catalogue and can be called next; if not, the failures come back
    so that you can fix the code or the tests and call create_tool again."""
    name = arguments.name
    _check(arguments, context)
    if context.sandbox is None or context.skills is None or context.catalogue is None:
        raise ToolFailed("create_tool: this session cannot run model-written code (no sandbox)", "setup")
    try:
        context.sandbox.check()
    except SandboxUnavailable as exc:
        raise ToolFailed(f"create_tool: {exc}", "setup") from exc
    drafts = context.session_dir / DRAFTS_DIR / name
    attempt = len(list(drafts.glob("round-*"))) + 1 if drafts.exists() else 1
    if attempt > MAX_ROUNDS:
        raise ToolFailed(
            f"create_tool: {name} failed its tests in {MAX_ROUNDS} rounds; it will not be tried again in "
            "this session: answer with what the other tools give",
            "tests",
        )
    scratch = scratch_dir(context.session_dir, f"create-{name}")
    (scratch / "tool.py").write_text(arguments.code)
    (scratch / "test_tool.py").write_text(arguments.tests)
    passed, log, run = _lint_and_test(context, scratch)
    _keep_draft(drafts / f"round-{attempt}", arguments, log)
    if passed is None:
        left = MAX_ROUNDS - attempt
        raise ToolFailed(f"create_tool: {name} round {attempt} is red ({left} round(s) left): {log}", "tests")
    version = context.skills.next_version(name)
    record = SkillRecord(
        name=name,
        version=version,
        description=arguments.description,
        parameters=arguments.parameters,
        model_id=context.model_id or "unknown",
        prompt_digest=_digest(context.transcript),
        session_id=context.session_id,
        created_at=now_utc(),
        tests_passed=passed,
    )
    directory = context.skills.save_tool(record, arguments.code, arguments.tests, log)
    context.catalogue.replace(skill_tool(record, directory))
    return CreatedTool(
        name=name,
        version=version,
        tests_passed=passed,
        registered=True,
        skill=str(directory),
        sandbox=", ".join(run.layers) or "none",
    )


def _check(arguments: CreateToolArguments, context: ToolContext) -> None:
    """What the model can fix before anything runs: the name, the schema, the function's presence."""
    name = arguments.name
    if not SKILL_NAME.match(name):
        raise ToolArgumentsError(f"create_tool: name {name!r} must be lower_snake_case, 3-48 characters")
    existing = context.catalogue.get(name) if context.catalogue and name in context.catalogue else None
    if existing is not None and not existing.description.startswith("[generated"):
        raise ToolArgumentsError(f"create_tool: {name} is a built-in tool; choose another name")
    try:
        Draft202012Validator.check_schema(arguments.parameters)
    except SchemaError as exc:
        raise ToolArgumentsError(f"create_tool: parameters is not a JSON schema: {exc.message}") from exc
    if arguments.parameters.get("type") != "object":
        raise ToolArgumentsError('create_tool: parameters must be a schema with "type": "object"')
    try:
        tree = ast.parse(arguments.code)
    except SyntaxError as exc:
        raise ToolArgumentsError(f"create_tool: code line {exc.lineno}: {exc.msg}") from exc
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if name not in functions:
        raise ToolArgumentsError(f"create_tool: code must define a top-level function named {name}")


def _lint_and_test(context: ToolContext, scratch: Path) -> tuple[int | None, str, SandboxRun]:
    """Ruff, then pytest, in the sandbox: (tests passed or None when red, the log, the last run)."""
    assert context.sandbox is not None
    lint = ["-m", "ruff", "check", "--no-cache", "--isolated", "--output-format", "concise"]
    linted = run_python(
        context.sandbox, scratch, context.session_dir, [*lint, "--select", _LINT_RULES, "."], TEST_LIMITS
    )
    if not linted.ok:
        return None, f"ruff found errors:\n{failure_text(linted)}", linted
    pytest = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "test_tool.py"]
    tested = run_python(context.sandbox, scratch, context.session_dir, pytest, TEST_LIMITS)
    log = (tested.stdout + tested.stderr).strip()
    counted = _PASSED.findall(log)
    if not tested.ok or not counted:
        reason = "the tests collected nothing" if tested.exit_code == 5 else "the tests failed"
        return None, f"{reason}:\n{failure_text(tested, most=3000)}", tested
    return int(counted[-1]), log, tested


def _keep_draft(directory: Path, arguments: CreateToolArguments, log: str) -> None:
    """The round's code and tests as the model gave them (never the scratch's files), and its log."""
    directory.mkdir(parents=True)
    (directory / "tool.py").write_text(arguments.code)
    (directory / "test_tool.py").write_text(arguments.tests)
    (directory / "result.log").write_text(log)


def _digest(transcript: tuple[Any, ...]) -> str:
    return hashlib.sha256(json.dumps(list(transcript), sort_keys=True, default=str).encode()).hexdigest()


def preview_create_tool(arguments: CreateToolArguments, context: ToolContext) -> CallPreview:
    """What approving create_tool means: this code and these tests run (in the sandbox) under your name."""
    return CallPreview(
        summary=f"write the tool {arguments.name} and run its tests in the sandbox: {arguments.description}",
        detail=f"# tool.py\n{arguments.code}\n# test_tool.py\n{arguments.tests}",
    )


CODEGEN_TOOLS = [
    define_tool(create_tool, effects={"runs_code", "writes"}, cost="minutes", preview=preview_create_tool)
]
