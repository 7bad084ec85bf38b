"""The throughput probe: how fast the plan's system runs on the site while every worker is busy.

One probe per worker runs at once, so contention is measured as the real runs will meet it; the
slowest sets the speed. Each round gets fresh task ids and fresh work directories (a second round, for
a cheaper plan or after a resume, never meets the first round's checkpoints). A finished probe is kept
in the study state and reused on resume; a round that finished on disk but was killed before the state
recorded it is read back rather than run again.
"""

from __future__ import annotations

from pathlib import Path

from sciagent.errors import RunFailure, UserError
from sciagent.science.md import MDResult, run_md
from sciagent.science.outputs import RunFiles
from sciagent.workflows.study.context import Study
from sciagent.workflows.study.guardrails import Throughput
from sciagent.workflows.study.plans import StudyPlan
from sciagent.workflows.study.specs import PROBE_STEPS, SpecBuilder
from sciagent.workflows.study.state import ProbeRecord
from sciagent.workflows.study.stopping import raise_if_stop_requested

PROBE_COST_S = 20.0  # a probe round: worker start, preparation, minimisation, PROBE_STEPS steps


def check_budget_covers_a_probe(study: Study) -> None:
    """Refuse, before anything runs, a budget that cannot even measure the speed."""
    left, needed = study.remaining(), PROBE_COST_S + study.state.report_reserve_s
    if left < needed:
        spent = "" if study.state.spent_s < 1 else f" ({left:.0f} s left)"
        raise UserError(
            f"the budget of {study.state.budget_s:.0f} s{spent} is too small for even the throughput "
            f"probe (about {needed:.0f} s with the report): raise --budget"
        )


class ThroughputProbe:
    """Measures a plan's throughput once per solvent; ``measure`` is what the guardrails call."""

    def __init__(self, study: Study, specs: SpecBuilder, runs: int) -> None:
        self._study = study
        self._specs = specs
        self._runs = runs  # conditions in the plan: no more probes than there will be runs at once

    def measure(self, plan: StudyPlan) -> Throughput:
        state = self._study.state
        known = state.probe_for(plan.solvent)
        if known is not None:
            self._study.notify("probe", f"reusing the {plan.solvent}-solvent probe of round {known.round}")
            return known.throughput()
        record = self._read_back(plan) or self._run_round(plan)
        state.probes.append(record)
        self._study.save()
        self._study.ctx.journal.add_event(
            state.run_id,
            "info",
            f"probe round {record.round} ({plan.solvent} solvent): {record.steps_per_s:.0f} steps/s per "
            f"worker on {record.workers} worker(s), {record.overhead_s:.0f} s before the first step",
            record.model_dump(mode="json"),
        )
        return record.throughput()

    def _workers(self) -> int:
        return max(1, min(self._study.ctx.executor.capacity, self._runs))

    def _run_round(self, plan: StudyPlan) -> ProbeRecord:
        check_budget_covers_a_probe(self._study)
        state, ctx = self._study.state, self._study.ctx
        raise_if_stop_requested(ctx.run_dir)
        state.probe_rounds += 1
        self._study.save()  # the round number is taken before anything runs: a resume uses the next one
        round_ = state.probe_rounds
        spec = self._specs.probe(plan)
        handles = [
            ctx.executor.submit(
                run_md, spec, _workdir(ctx.work_root, round_, i), task_id=f"probe{round_}-w{i}"
            )
            for i in range(1, self._workers() + 1)
        ]
        what = f"round {round_}: {len(handles)} x {PROBE_STEPS} steps, {plan.solvent} solvent"
        self._study.notify("probe", what)
        results = [ctx.executor.result(handle) for handle in handles]
        raise_if_stop_requested(ctx.run_dir)  # a stopped probe measured nothing: the resume runs a new round
        return _record(plan.solvent, round_, results, spec.timestep_fs)

    def _read_back(self, plan: StudyPlan) -> ProbeRecord | None:
        """The last round's results, if every probe of it finished and its files are on this disk."""
        round_ = self._study.state.probe_rounds
        if round_ == 0:
            return None
        root = self._study.ctx.work_root
        paths = [RunFiles(_workdir(root, round_, i)).result for i in range(1, self._workers() + 1)]
        if not all(path.exists() for path in paths):
            return None
        results = [MDResult.model_validate_json(path.read_text()) for path in paths]
        if any(r.spec.solvent != plan.solvent or not r.ok or not r.ns_per_day for r in results):
            return None
        return _record(plan.solvent, round_, results, results[0].spec.timestep_fs)


def _workdir(root: Path, round_: int, worker: int) -> Path:
    return root / "probes" / f"round{round_}" / f"w{worker}"


def _record(solvent: str, round_: int, results: list[MDResult], timestep_fs: float) -> ProbeRecord:
    failed = next((r for r in results if not r.ok or not r.ns_per_day), None)
    if failed is not None:
        message = f"the throughput probe failed ({failed.failure_class}): {failed.message}"
        if failed.failure_class == "setup":  # the structure or the spec: nothing can run as asked
            raise UserError(message)
        raise RunFailure(failed.failure_class or "platform", message)
    steps_per_s = min(r.ns_per_day or 0.0 for r in results) / (timestep_fs * 1e-6 * 86400)
    # What each run spends before stepping (solvating and minimising 9,000 atoms takes tens of seconds).
    overhead = max(0.0, max(r.wall_time_s - PROBE_STEPS / steps_per_s for r in results))
    return ProbeRecord(
        solvent=solvent, round=round_, steps_per_s=steps_per_s, overhead_s=overhead, workers=len(results)
    )
