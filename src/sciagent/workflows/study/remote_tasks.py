"""Tasks on a remote site (Globus Compute) outlive the process that sent them: journal their ids and
pick them up again on resume instead of sending the same simulation twice."""

from __future__ import annotations

from sciagent.agent.journal import Journal
from sciagent.compute.base import Executor, TaskHandle
from sciagent.workflows.study.state import ConditionState, StudyState


def reattach_remote_tasks(
    executor: Executor, journal: Journal, state: StudyState, running: list[ConditionState]
) -> dict[TaskHandle, ConditionState]:
    """Handles for the ``running`` conditions whose remote tasks are still known to the site."""
    reattach = getattr(executor, "reattach", None)
    if not (running and reattach and state.task_group_id):
        return {}
    remote_ids = {}
    for condition in running:
        task = journal.find_task(state.run_id, condition.task_key)
        if task and task.remote_id:
            remote_ids[condition.task_key] = task.remote_id
    by_key = {c.task_key: c for c in running}
    return {
        handle: by_key[handle.task_id]
        for handle in reattach(state.task_group_id, task_ids=remote_ids)
        if handle.task_id in by_key
    }


def record_remote_ids(
    executor: Executor, journal: Journal, state: StudyState, handles: dict[TaskHandle, ConditionState]
) -> bool:
    """Journal the site's task ids as they become known; True when the task group id is new."""
    remote_task_id = getattr(executor, "remote_task_id", None)
    if remote_task_id is None:
        return False
    group = getattr(executor, "task_group_id", None)
    new_group = bool(group) and group != state.task_group_id
    if new_group:
        state.task_group_id = group
    for handle, condition in handles.items():
        task = journal.find_task(state.run_id, condition.task_key)
        remote = remote_task_id(handle)
        if task and remote and task.remote_id != remote:
            journal.update_task(task.id, status=task.status, remote_id=remote)
    return new_group
