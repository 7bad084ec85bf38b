"""Journalling remote task ids and re-attaching to them on resume, with the real ``GlobusExecutor``.

The Globus Compute service is the process-pool stand-in of ``globus_standin`` (the cloud cannot be
reached from here); the executor, the journal and the bookkeeping are the real code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from compute_tasks import sleep_then_return
from globus_standin import ENDPOINT, StandInService
from sciagent.agent.journal import Journal
from sciagent.compute.globus_executor import GlobusExecutor
from sciagent.compute.local import LocalExecutor
from sciagent.science.spec import MDSpec
from sciagent.workflows.study.remote_tasks import reattach_remote_tasks, record_remote_ids
from sciagent.workflows.study.state import ConditionState, StudyState, new_state

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def service() -> Iterator[StandInService]:
    service = StandInService(2)
    yield service
    service.stop()


def _running_condition(journal: Journal, name: str, run_id: str) -> ConditionState:
    condition = ConditionState(
        name=name, temperature_k=300, replica=1, spec=MDSpec(structure="villin"), attempts=1
    )
    task_id = journal.add_task(run_id, condition.task_key, {}, "remote")
    journal.update_task(task_id, status="running")
    return condition


def _state(journal: Journal) -> StudyState:
    run_id = journal.create_run("goal", {})
    return new_state(run_id, "goal", "villin", "embedded", "m", 60.0)


def test_ids_are_journalled_then_a_new_process_reattaches_and_collects(
    tmp_path: Path, service: StandInService
) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        state = _state(journal)
        condition = _running_condition(journal, "T300-r1", state.run_id)
        state.conditions = [condition]
        first = GlobusExecutor(ENDPOINT, name="remote", executor_factory=service.factory)
        handle = first.submit(sleep_then_return, 1.0, "finished later", task_id=condition.task_key)
        other = first.submit(sleep_then_return, 0.0, "not ours", task_id="someone-else")  # same group

        assert record_remote_ids(first, journal, state, {handle: condition})
        assert state.task_group_id == first.task_group_id
        remote_id = journal.find_task(state.run_id, condition.task_key).remote_id
        assert remote_id == first.remote_task_id(handle)
        assert not record_remote_ids(first, journal, state, {handle: condition})  # the group is known
        first.result(other, timeout=60)
        first.shutdown(cancel=True)  # this process "ends"; its task runs on at the endpoint

        second = GlobusExecutor(ENDPOINT, name="remote", executor_factory=service.factory)
        picked = reattach_remote_tasks(second, journal, state, [condition])
        assert list(picked.values()) == [condition]  # the other task of the group is not taken
        (handle_again,) = picked
        assert handle_again.task_id == condition.task_key
        assert second.result(handle_again, timeout=60)["value"] == "finished later"
        second.shutdown()


def test_no_reattach_without_a_task_group_or_on_a_site_that_cannot(
    tmp_path: Path, service: StandInService
) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        state = _state(journal)
        condition = _running_condition(journal, "T300-r1", state.run_id)
        executor = GlobusExecutor(ENDPOINT, name="remote", executor_factory=service.factory)
        assert reattach_remote_tasks(executor, journal, state, [condition]) == {}
        with LocalExecutor(workers=1) as local:  # no remote ids to journal, nothing to re-attach
            assert not record_remote_ids(local, journal, state, {})
            state.task_group_id = "group-1"
            assert reattach_remote_tasks(local, journal, state, [condition]) == {}
        executor.shutdown()
