"""The one seam to the scheduler's own commands (``sinfo``, ``squeue``, ``qstat``, ``qhold``...).

Every call psij does not make goes through ``run_command``, so a failure reads the same whatever
the command: a ``SchedulerError`` naming the command and what it printed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Literal

from sciagent.compute.sites import SiteConfig
from sciagent.errors import ConfigError, SciagentError

Scheduler = Literal["slurm", "pbspro"]


class SchedulerError(SciagentError):
    """A scheduler command failed, was missing or did not answer; the message says which and why."""

    failure_class = "scheduler"


def run_command(args: Sequence[str], timeout_s: float = 60) -> str:
    """Run one scheduler command and return its standard output.

    Raises:
        SchedulerError: the command is not on PATH, timed out, or exited non-zero (with its stderr).
    """
    shown = " ".join(args)
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise SchedulerError(f"`{args[0]}` is not on PATH: run sciagent on the cluster's login node") from exc
    except subprocess.TimeoutExpired as exc:
        raise SchedulerError(f"`{shown}` did not answer within {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-500:]
        raise SchedulerError(f"`{shown}` exited with {done.returncode}: {said}")
    return done.stdout


def json_output(args: Sequence[str]) -> dict:
    """``run_command(args)``, its output read as the JSON object PBS Pro's ``-F json`` prints."""
    out = run_command(args)
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise SchedulerError(f"`{' '.join(args)}` did not print JSON ({exc.msg}): {out[:200]!r}") from exc


def scheduler_of(name: str, site: SiteConfig) -> Scheduler:
    """The batch scheduler behind site ``name``.

    Raises:
        ConfigError: the site is not a Slurm or PBS Pro site.
    """
    if site.kind == "parsl" and site.provider in ("slurm", "pbspro"):
        return "slurm" if site.provider == "slurm" else "pbspro"
    raise ConfigError(f"site {name} is not a Slurm or PBS Pro site, so it has no batch queue to act on")
