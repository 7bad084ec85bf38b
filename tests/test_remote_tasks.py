"""Journalling remote task ids and re-attaching to them on resume.

The remote site is a stand-in at its boundary (it answers ``remote_task_id``, ``task_group_id`` and
``reattach`` as a Globus Compute executor does); the journal and the bookkeeping are the real code.
"""

from __future__ import annotations

from pathlib import Path

from sciagent.agent.journal import Journal
from sciagent.compute.base import TaskHandle
from sciagent.science.spec import MDSpec
from sciagent.workflows.remote_tasks import reattach_remote_tasks, record_remote_ids
from sciagent.workflows.study_state import ConditionState, new_state


class RemoteSite:
    """Answers like a Globus Compute executor: ids known once the service accepted a task."""

    name = "remote"
    task_group_id = "group-1"

    def __init__(self) -> None:
        self.reattached_with: tuple[str, dict[str, str]] | None = None

    def remote_task_id(self, handle: TaskHandle) -> str:
        return f"remote-{handle.task_id}"

    def reattach(self, task_group_id: str, *, task_ids: dict[str, str]) -> list[TaskHandle]:
        self.reattached_with = (task_group_id, dict(task_ids))
        return [TaskHandle(key, self.name) for key in task_ids] + [TaskHandle("someone-else", self.name)]


def test_ids_are_journalled_then_used_to_reattach(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        run_id = journal.create_run("goal", {})
        state = new_state(run_id, "goal", "villin", "embedded", "m", 60.0)
        condition = ConditionState(
            name="T300-r1", temperature_k=300, replica=1, spec=MDSpec(structure="villin"), attempts=1
        )
        state.conditions = [condition]
        task_id = journal.add_task(run_id, condition.task_key, {}, "remote")
        journal.update_task(task_id, status="running")
        site = RemoteSite()

        assert record_remote_ids(site, journal, state, {TaskHandle(condition.task_key, "remote"): condition})
        assert state.task_group_id == "group-1"
        assert journal.find_task(run_id, condition.task_key).remote_id == f"remote-{condition.task_key}"

        picked = reattach_remote_tasks(site, journal, state, [condition])
        assert site.reattached_with == ("group-1", {condition.task_key: f"remote-{condition.task_key}"})
        assert list(picked.values()) == [condition]  # a task of another run is not taken


def test_no_reattach_without_a_task_group(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        run_id = journal.create_run("goal", {})
        state = new_state(run_id, "goal", "villin", "embedded", "m", 60.0)
        condition = ConditionState(
            name="T300-r1", temperature_k=300, replica=1, spec=MDSpec(structure="villin")
        )
        assert reattach_remote_tasks(RemoteSite(), journal, state, [condition]) == {}
