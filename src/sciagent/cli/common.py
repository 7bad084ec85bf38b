"""Helpers shared by the ``sciagent`` command modules (kept here so sub-apps need not import ``cli``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Annotated, NoReturn

import typer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli, as pydantic-settings does
    import tomli as tomllib
from pydantic import ValidationError
from rich.markup import escape

from sciagent.config import Settings, config_file_error
from sciagent.console import err_console
from sciagent.durations import parse_duration
from sciagent.errors import ConfigError, InternalError, SciagentError, UserError

# Shared by `simulate` and `run`: both prepare structures.
RemoveUnknownResiduesOption = Annotated[
    bool,
    typer.Option(
        "--remove-unknown-residues",
        help="remove residues the force field does not know from inside chains (splits the chain)",
    ),
]
# Shared by ask, chat, resume and mcp serve: what may run model-written code.
UnsandboxedOption = Annotated[
    bool,
    typer.Option(
        "--allow-unsandboxed-code",
        help="run model-written tools even where bubblewrap is missing (rlimits only: no isolation)",
    ),
]
EXIT_FAILED = 1  # the work ran (or a service was reached) and failed
EXIT_BAD_INPUT = 2  # nothing could start: the input, configuration or credentials are wrong


def exit_code_for(error: SciagentError) -> int:
    """The one map from our errors to exit codes: a ``UserError`` (``ModelAuthError`` included) is
    ``EXIT_BAD_INPUT``, any other ``SciagentError`` is ``EXIT_FAILED``."""
    return EXIT_BAD_INPUT if isinstance(error, UserError) else EXIT_FAILED


class exits_on_error:  # lower case: a context manager named for how it reads, `with exits_on_error():`
    """Turn a ``SciagentError`` raised in the block into ``fail(describe(error), exit_code_for(error))``.

    ``describe`` words the one-line message (``str`` by default; ``cli.llm`` redacts keys with it).
    Other exceptions pass through, so a command's own ``except`` clauses around the block still apply.
    ``__exit__`` never swallows an exception, so type checkers know the block's names are bound after it.
    """

    def __init__(self, describe: Callable[[SciagentError], str] = str) -> None:
        self.describe = describe

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if isinstance(error, SciagentError):
            fail(self.describe(error), exit_code_for(error))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print a one-line error and exit non-zero (the message is escaped: ``[llm.x]`` is not markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def duration_flag(flag: str, text: str) -> float:
    """Seconds in a duration flag's value (``5m``, ``1h30m``), or a one-line error naming the flag."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"invalid {flag}: {exc}")


def fail_internal(error: InternalError) -> NoReturn:
    """Print a bug's one line (``internal error: <type>: <message> (traceback in <path>)``), exit 1."""
    err_console.print(f"[bold red]{escape(str(error))}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_FAILED)


def load_settings() -> Settings:
    """``Settings()``, or a one-line error naming the bad setting (never its value: it may be a secret)."""
    try:
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        fail(f"{config_file_error(exc)}: fix the file, or move it away")
    except ConfigError as exc:  # an untrusted project file sets what only the user may (config_trust)
        fail(str(exc))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        fail(f"invalid configuration at {where}: {error['msg']}")


def settings_for(workspace: Path | None) -> Settings:
    """The settings, with ``--workspace`` in place of the configured workspace when it is given."""
    settings = load_settings()
    return settings.model_copy(update={"workspace": workspace}) if workspace else settings
