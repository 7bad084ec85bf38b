"""``sciagent sites ...``: list the sites, check one with a real round trip, write an endpoint config.

Exit codes follow ``sciagent.cli.common``: 2 when nothing could start (unknown site, missing option,
bad value), 1 when the site was tried and did not answer (no scheduler here, job refused, no worker).
"""

from __future__ import annotations

import platform
import time
from concurrent import futures
from datetime import datetime
from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from sciagent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    exit_code_for,
    exits_on_error,
    fail,
    load_settings,
)
from sciagent.compute.errors import TaskError, TaskRaised, WorkerLost
from sciagent.compute.sites import BUILTIN_SITES, SiteConfig, all_sites, make_executor, resolve_site
from sciagent.console import err_console, out_console
from sciagent.errors import SciagentError, UserError

sites_app = typer.Typer(
    help="Where simulations run: list the sites, check one, write a Globus Compute endpoint config.",
    no_args_is_help=True,
)


# What Parsl raises for tasks once its batch jobs (blocks) keep failing to start, e.g. qsub refused them.
_BLOCK_FAILURES = "parsl.jobs.errors.TooManyJobFailuresError"


class Machine(str, Enum):
    aurora = "aurora"
    polaris = "polaris"


@sites_app.command("list")
def list_sites() -> None:
    """The built-in sites and those from [sites.NAME] in sciagent.toml: name, kind, provider, where."""
    settings = load_settings()
    table = Table("name", "kind", "provider", "where", "from")
    for name, site in sorted(all_sites(settings.sites).items()):
        provider = site.provider if site.kind == "parsl" else "-"
        source = "built-in" if name not in settings.sites else "config"
        if name in settings.sites and name in BUILTIN_SITES:
            source = "built-in + config"
        table.add_row(name, site.kind, provider, site.where, source)
    out_console.print(table)


@sites_app.command()
def check(
    name: Annotated[str, typer.Argument(help="site name (see `sciagent sites list`)")],
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for a worker to answer (a batch job may queue)")
    ] = 300.0,
) -> None:
    """Run a tiny task on the site: round-trip latency and the worker's Python and OpenMM versions."""
    from sciagent.compute.probe import worker_info

    settings = load_settings()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (settings.workspace / "site-checks" / f"{name}-{stamp}").resolve()
    started = time.monotonic()
    with exits_on_error():
        try:
            site = resolve_site(name, settings.sites)
            executor = make_executor(name, settings.sites, run_dir=run_dir)
        except SciagentError:  # ours, mapped by exits_on_error: ConfigError exits 2, SiteUnavailable 1
            raise
        except ValueError as exc:  # Parsl or an executor refused a value
            fail(f"site {name}: {exc}", EXIT_BAD_INPUT)
        except Exception as exc:  # the engine could not start (ports, interchange): not the user's config
            fail(f"site {name}: could not start its executor: {type(exc).__name__}: {exc}", EXIT_FAILED)
    failure, code = None, EXIT_FAILED
    try:
        cold = executor.result(executor.submit(worker_info), timeout=timeout)
        first_s = time.monotonic() - started
        sent = time.monotonic()
        info = executor.result(executor.submit(worker_info), timeout=timeout)
        round_trip_s = time.monotonic() - sent
    except futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        failure = f"site {name}: no worker answered within {timeout:g} s (a batch job may still be queued)"
    except TaskError as exc:
        failure = f"site {name}: {_describe(exc)}"
    except UserError as exc:  # the engine refused our credentials or does not know the endpoint
        failure, code = f"site {name}: {_first_line(str(exc))}", exit_code_for(exc)
    except Exception as exc:  # the engine failed in a way it does not map: still one line, still ours
        failure = f"site {name}: the probe could not run: {type(exc).__name__}: {_first_line(str(exc))}"
    finally:
        with err_console.status(f"stopping {name}'s workers"):
            executor.shutdown(cancel=True)
    if failure:
        fail(failure, code)
    _print_report(name, site.where, first_s, round_trip_s, info, cold, _encryption(name, site))


def _encryption(name: str, site: SiteConfig) -> str:
    """How a Parsl site's pilot-job channel is protected (after its executor started: this cannot raise)."""
    if site.kind != "parsl":
        return "-"
    from sciagent.compute._site_builders import unencrypted_because

    reason = unencrypted_because(name, site)
    return "CurveZMQ: tasks and results encrypted, workers authenticated" if reason is None else reason


def _describe(exc: TaskError) -> str:
    """Why the probe failed, in one line; a batch job the scheduler refused is named as such."""
    refusal = _block_failure_text(exc)
    if refusal is not None:
        # "Error 1:" then "Failed to start block 0: ... Submit command '...' failed; ... stderr=..."
        details = [line.strip() for line in refusal.splitlines() if line.strip()]
        started = next((line for line in details if line.startswith("Failed to start block")), None)
        return f"its batch job could not be started: {started or details[-1]}"
    return f"the probe task failed: {_first_line(exc.message)}"


def _block_failure_text(exc: TaskError) -> str | None:
    """Parsl's account of blocks that failed to start, whichever way it reached the task.

    Without Parsl retries (the workflow owns them) the task sees the executor's ``BadStateException``
    (a lost worker to us); with them, the retry meets ``TooManyJobFailuresError`` at submission.
    """
    if isinstance(exc, TaskRaised) and exc.type_name == _BLOCK_FAILURES:
        return exc.error_message
    if isinstance(exc, WorkerLost) and exc.detail.startswith("BadStateException"):
        return exc.detail
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _print_report(
    name: str, where: str, first_s: float, round_trip_s: float, info: dict, cold: dict, encryption: str
) -> None:
    local_python = ".".join(platform.python_version_tuple()[:2])
    remote_python = ".".join(info["python"].split(".")[:2])
    openmm = info["openmm"] or f"not importable ({info.get('openmm_error', 'unknown reason')})"
    for label, value in (
        ("site", name),
        ("where", where),
        ("first answer", f"{first_s:.2f} s (includes starting the workers)"),
        ("round trip", f"{round_trip_s * 1000:.0f} ms"),
        ("host", info["hostname"]),
        ("python", info["python"]),
        ("openmm", openmm),
        ("platforms", ", ".join(info["platforms"]) or "-"),
        ("pinning", ", ".join(f"{k}={v}" for k, v in (cold["env"] | info["env"]).items()) or "-"),
        ("encryption", encryption),
    ):
        out_console.print(f"{label + ':':<14}{value}", highlight=False, markup=False)
    if remote_python != local_python:
        err_console.print(
            f"warning: the worker runs Python {remote_python}, this machine {local_python}: functions "
            "sent there may not unpickle (use the same major.minor)",
            highlight=False,
            markup=False,
        )


@sites_app.command("endpoint-config")
def endpoint_config(
    machine: Annotated[Machine, typer.Argument(help="aurora or polaris")],
    account: Annotated[str, typer.Option(help="the project allocation jobs are charged to")],
    queue: Annotated[str | None, typer.Option(help="PBS queue (default: the machine's debug queue)")] = None,
    walltime: Annotated[str | None, typer.Option(help="per batch job, HH:MM:SS")] = None,
    nodes: Annotated[int | None, typer.Option(help="nodes per batch job")] = None,
    worker_init: Annotated[
        str | None, typer.Option(help="shell lines run before the workers start (activate your environment)")
    ] = None,
) -> None:
    """Print a Globus Compute endpoint config.yaml for Aurora or Polaris (PBS Pro, GPU pinning)."""
    try:
        from sciagent.compute.endpoint_config import render_endpoint_config
    except ImportError as exc:
        fail(f"endpoint configs are not available in this installation: {exc}", EXIT_FAILED)
    try:
        text = render_endpoint_config(
            machine.value,
            account=account,
            queue=queue,
            walltime=walltime,
            nodes=nodes,
            worker_init=worker_init,
        )
    except (UserError, ValueError) as exc:
        fail(f"endpoint config for {machine.value}: {exc}", EXIT_BAD_INPUT)
    out_console.print(
        text, highlight=False, markup=False, soft_wrap=True, end="" if text.endswith("\n") else "\n"
    )
