"""Globus Compute's errors mapped into ours, at the boundary, by type.

What arrives and what it becomes:

- ``TaskExecutionFailed``: the task failed on the endpoint, which sends the exception as text:
  ``traceback.format_exception`` output for the task's own exception, ``repr()`` for the endpoint's
  own errors (``MaxResultSizeExceeded(size, limit)``), wrapped in +++/--- rules when the engine
  itself failed. The type named in that text decides: Parsl's ``WorkerLost``/``ManagerLost`` ->
  ``WorkerLost`` (transient); ``MaxResultSizeExceeded`` -> ``TaskRaised`` saying what to return
  instead; anything else -> ``TaskRaised`` with the remote traceback.
- ``globus_sdk.GlobusAPIError``: 401/403 (credentials) and 404 (no such endpoint or task group) ->
  ``ConfigError``, for the user to fix; 429 and 5xx -> ``WorkerLost`` (transient); other -> ``TaskError``.
- ``globus_sdk.NetworkError``: the service could not be reached -> ``WorkerLost`` (transient).
- A result that does not deserialize here (a ``SerdeError`` in the cause chain) -> ``TaskError``
  naming the usual cause, a Python version that differs from the endpoint's.
"""

from __future__ import annotations

import re
from concurrent import futures

from sciagent.compute.errors import TaskCancelled, TaskError, TaskRaised, WorkerLost, qualified_type_name
from sciagent.errors import ConfigError, UserError

_LOST_TYPES = frozenset({"WorkerLost", "ManagerLost"})  # Parsl's names for a worker or node that died
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?")  # "module.Type: message" or "Type"
_REPR = re.compile(r"([A-Za-z_][\w.]*)\((.*)\)")
_RULE = re.compile(r"[+-]{20,}")


def map_error(task_id: str, endpoint_id: str, exc: BaseException) -> BaseException:
    """The sciagent error for what the SDK or the service raised (ours pass through unchanged)."""
    import globus_sdk
    from globus_compute_sdk.errors import SerdeError, TaskExecutionFailed

    if isinstance(exc, TaskError | UserError):
        return exc
    if isinstance(exc, futures.CancelledError):
        return TaskCancelled(task_id, "cancelled by the Globus Compute SDK")
    if isinstance(exc, TaskExecutionFailed):
        return remote_failure(task_id, exc.remote_data)
    if isinstance(exc, globus_sdk.GlobusAPIError):
        status, what = exc.http_status, f"{exc.http_status} {exc.code}"
        if status in (401, 403):
            return ConfigError(f"Globus Compute refused the credentials ({what}): log in again")
        if status == 404:
            return ConfigError(
                f"Globus Compute does not know endpoint {endpoint_id} or the task group ({what})"
            )
        if status == 429 or status >= 500:
            return WorkerLost(task_id, None, f"the Globus Compute service failed ({what}): {exc.message}")
        return TaskError(task_id, f"Globus Compute refused the task ({what}): {exc.message}")
    if isinstance(exc, globus_sdk.NetworkError):
        return WorkerLost(task_id, None, f"Globus Compute could not be reached: {exc}")
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, SerdeError):
        cause = cause.__cause__
    if cause is not None:
        message = (
            f"the result did not deserialize here ({cause!r}); is the endpoint's Python the same as ours?"
        )
        return TaskError(task_id, message)
    return TaskError(task_id, f"Globus Compute failed: {qualified_type_name(exc)}: {exc}")


def remote_failure(task_id: str, text: str) -> TaskError:
    """The error for an exception the endpoint reported as text."""
    type_name, message = parse_remote_error(text)
    short = type_name.rsplit(".", 1)[-1]
    if short in _LOST_TYPES:
        return WorkerLost(task_id, None, f"the endpoint lost the worker running it: {type_name}: {message}")
    if short == "MaxResultSizeExceeded":
        sizes = re.findall(r"\d+", message)
        size = f" ({int(sizes[0]):,} bytes, limit {int(sizes[1]):,})" if len(sizes) == 2 else ""
        message = (
            f"the result is larger than Globus Compute carries{size}: return a small summary with paths, "
            "and leave trajectories and other large files on the remote filesystem"
        )
    return TaskRaised(task_id, type_name, message, text)


def parse_remote_error(text: str) -> tuple[str, str]:
    """(type name, message) of the last exception in an endpoint's error text.

    After the last traceback header, the first unindented ``Type: message`` line names the
    exception (frames are indented); the lines after it belong to the message.
    """
    lines = [line for line in text.strip().splitlines() if not _RULE.fullmatch(line.strip())]
    heads = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK_HEAD)]
    body = lines[heads[-1] + 1 :] if heads else lines
    for i, line in enumerate(body):
        if line[:1].strip() and (match := _EXCEPTION_LINE.fullmatch(line)):
            return match.group(1), "\n".join([match.group(2) or "", *body[i + 1 :]]).strip()
    for line in body:
        if match := _REPR.fullmatch(line.strip()):
            return match.group(1), match.group(2)
    return "RemoteError", text.strip()
