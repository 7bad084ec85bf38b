"""Model-written code, run only in the sandbox: a generated tool's calls, and the lint and tests
``create_tool`` runs before it registers one.

Each run gets a fresh scratch directory under the session's ``sandbox/`` (kept: what the code wrote is
there to look at, but only the newest ``KEEP_RUNS`` holding at most ``KEEP_MB`` together, so a session
cannot fill the disk) holding the code and a small runner; the session's own files are mounted read-only
beside them under their own names, so a path the model knows from the session (``runs/…``) works as
it is. The runner calls the function with the call's arguments (from ``arguments.json``) and writes
its JSON-able return value to ``result.json``, read back as a bounded regular file only (never a
link or a FIFO); nothing of the code runs in sciagent's process.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sciagent.errors import SandboxUnavailable
from sciagent.sandbox import Limits, Sandbox, SandboxRun, rundir
from sciagent.tools.registry import CallPreview, OpenArguments, SchemaTool, ToolContext, ToolFailed
from sciagent.tools.skills import SkillRecord

SANDBOX_DIR = "sandbox"  # in the session directory: one scratch directory per run
CALL_LIMITS = Limits(wall_s=300.0, cpu_s=300)
TEST_LIMITS = Limits(wall_s=180.0, cpu_s=180)
KEEP_RUNS = 32  # scratch directories kept per session, newest first...
KEEP_MB = 4096  # ...holding at most this together, before a new run (which adds its Limits.scratch_mb)
RESULT_BYTES = 8 << 20  # the largest result.json read back
_RESERVED = {"tool.py", "test_tool.py", "_call.py", "arguments.json", "result.json", SANDBOX_DIR}

_RUNNER = '''"""Calls the generated function with arguments.json; writes its return value to result.json."""
import json

import tool


def plain(value):
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"the function returned a {type(value).__name__}, which is not JSON")


with open("arguments.json") as handle:
    arguments = json.load(handle)
value = getattr(tool, TOOL_NAME)(**arguments)
with open("result.json", "w") as handle:
    json.dump({"value": value}, handle, default=plain)
'''


class GeneratedResult(BaseModel):
    """What a generated tool returned, and where it ran."""

    tool: str
    version: int
    value: Any = Field(description="the function's return value")
    sandbox: str = Field(description="how the call ran: its exit and the protections that were active")
    scratch: str = Field(description="the run's scratch directory, relative to the session directory")


def scratch_dir(session_dir: Path, label: str) -> Path:
    """A new, empty scratch directory for one sandboxed run, once the oldest are pruned to the bound."""
    rundir.prune(session_dir / SANDBOX_DIR, keep=KEEP_RUNS - 1, most_bytes=KEEP_MB << 20)
    directory = session_dir / SANDBOX_DIR / f"{label}-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True)
    return directory


def session_files(session_dir: Path) -> dict[str, Path]:
    """The session's files and directories, mounted read-only in each scratch under their own names."""
    if not session_dir.is_dir():
        return {}
    return {entry.name: entry for entry in session_dir.iterdir() if entry.name not in _RESERVED}


def run_python(
    sandbox: Sandbox, scratch: Path, session_dir: Path, arguments: list[str], limits: Limits
) -> SandboxRun:
    """``python ARGUMENTS`` in the sandbox over ``scratch``, the session's files beside it read-only."""
    argv = [sys.executable, *arguments]
    return sandbox.run(argv, workdir=scratch, read_only=session_files(session_dir), limits=limits)


def skill_tool(record: SkillRecord, directory: Path) -> SchemaTool:
    """A generated tool for the catalogue: each call runs its code in the sandbox, never in-process."""

    def function(arguments: OpenArguments, context: ToolContext) -> GeneratedResult:
        if context.sandbox is None:
            raise ToolFailed(f"{record.name} is model-written code and this session has no sandbox", "setup")
        try:
            context.sandbox.check()
        except SandboxUnavailable as exc:
            raise ToolFailed(f"{record.name}: {exc}", "setup") from exc
        scratch = scratch_dir(context.session_dir, record.name)
        (scratch / "tool.py").write_text((directory / "tool.py").read_text())  # the library's copy
        (scratch / "_call.py").write_text(_RUNNER.replace("TOOL_NAME", repr(record.name)))
        given = _session_relative(arguments.model_dump(), context.session_dir)
        (scratch / "arguments.json").write_text(json.dumps(given))
        run = run_python(context.sandbox, scratch, context.session_dir, ["_call.py"], CALL_LIMITS)
        if not run.ok:
            raise ToolFailed(f"{record.name} v{record.version} failed: {failure_text(run)}", "generated")
        try:
            value = _value(scratch)
        except ValueError as exc:
            raise ToolFailed(
                f"{record.name} v{record.version} left no result: {exc} ({failure_text(run)})", "generated"
            ) from exc
        relative = str(scratch.relative_to(context.session_dir))
        shown = describe_run(run)
        return GeneratedResult(
            tool=record.name, version=record.version, value=value[0], sandbox=shown, scratch=relative
        )

    return SchemaTool(
        name=record.name,
        description=f"[generated, v{record.version}] {record.description}",
        arguments=OpenArguments,
        result=GeneratedResult,
        function=function,
        effects=frozenset({"runs_code"}),
        preview=lambda arguments, context: _preview(record, directory, arguments),
        input_schema=record.parameters,
        validate=True,
    )


def _preview(record: SkillRecord, directory: Path, arguments: OpenArguments) -> CallPreview:
    """What approving a call of a generated tool means: this model-written code, with these arguments."""
    given = json.dumps(arguments.model_dump(), sort_keys=True)
    return CallPreview(
        summary=f"run {record.name} v{record.version} (code written by {record.model_id}) with {given}",
        detail=(directory / "tool.py").read_text(errors="replace"),
    )


def failure_text(run: SandboxRun, most: int = 1500) -> str:
    """How a sandboxed run failed, with the end of what it printed (where a traceback's cause is)."""
    output = (run.stderr.strip() or run.stdout.strip())[-most:]
    return f"{run.summary()}" + (f"\n{output}" if output else "")


def describe_run(run: SandboxRun) -> str:
    return f"{run.summary()}; protections: {', '.join(run.layers) or 'none'}"


def _session_relative(value: Any, session_dir: Path) -> Any:
    """Paths inside the session directory as the sandbox sees them (relative: its files are mounted in
    the scratch under their own names), since other tools' results give them absolute."""
    if isinstance(value, str) and value.startswith(f"{session_dir}/"):
        return value[len(f"{session_dir}/") :]
    if isinstance(value, dict):
        return {key: _session_relative(item, session_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [_session_relative(item, session_dir) for item in value]
    return value


def _value(scratch: Path) -> tuple[Any]:
    """The returned value (in a 1-tuple, as None is a value), from the runner's ``result.json``.

    The code may have made ``result.json`` a link to a host file sciagent can read, or a FIFO that
    would block sciagent forever: ``rundir.read_back`` reads neither.

    Raises:
        ValueError: no such regular file (``rundir.ScratchFileError`` says why), or not the runner's JSON.
    """
    data = rundir.read_back(scratch, "result.json", RESULT_BYTES)
    try:
        return (json.loads(data)["value"],)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("result.json is not the runner's JSON") from exc
