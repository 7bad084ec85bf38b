"""The speed a study's fit takes: already known, from the workspace's speed book, or probed.

A probe costs the budget's first seconds, which are worth most when they simulate, so it runs only
when it can change the plan: the speed book (``speeds.py``) has no measurement of the system on this
machine, and the plan has cheaper physics to choose (explicit solvent, or a timestep below 4 fs).
The cheapest plan (the default: implicit solvent, 4 fs with HMR) is fitted provisionally instead and
its runs start at once, measuring their own speed. Every speed taken is kept in the study state
(reused on resume) and journalled with where it came from.

One probe per worker runs at once, so contention is measured as the real runs will meet it; the
slowest sets the speed. Each round gets fresh task ids and fresh work directories (a second round, for
a cheaper plan or after a resume, never meets the first round's checkpoints). A round that finished on
disk but was killed before the state recorded it is read back rather than run again.
"""

from __future__ import annotations

from pathlib import Path

from sciagent.errors import RunFailure, SciagentError, UserError
from sciagent.science.md import MDResult, run_md
from sciagent.science.outputs import RunFiles
from sciagent.workflows.study.context import Study
from sciagent.workflows.study.guardrails import Throughput
from sciagent.workflows.study.plans import StudyPlan
from sciagent.workflows.study.specs import PROBE_STEPS, SpecBuilder
from sciagent.workflows.study.speeds import (
    Measurement,
    SpeedBook,
    measurement,
    step_cost_system,
    this_machine,
)
from sciagent.workflows.study.state import ProbeRecord
from sciagent.workflows.study.stopping import raise_if_stop_requested

PROBE_COST_S = 20.0  # a probe round: worker start, preparation, minimisation, PROBE_STEPS steps
MIN_SIMULATION_S = 20.0  # the least a first run needs: worker start, preparation, minimisation, a few ps


def check_budget_covers_a_run(study: Study) -> None:
    """Refuse, before anything runs, a budget that cannot even set up a simulation and report."""
    _refuse_below(study, MIN_SIMULATION_S, "even one simulation")


def check_budget_covers_a_probe(study: Study) -> None:
    """Refuse a probe round the budget cannot pay for (with the report after it)."""
    _refuse_below(study, PROBE_COST_S, "even the throughput probe")


def _refuse_below(study: Study, seconds: float, what: str) -> None:
    left, needed = study.remaining(), seconds + study.state.report_reserve_s
    if left < needed:
        spent = "" if study.state.spent_s < 1 else f" ({left:.0f} s left)"
        raise UserError(
            f"the budget of {study.state.budget_s:.0f} s{spent} is too small for {what} "
            f"(about {needed:.0f} s with the report): raise --budget"
        )


class ThroughputProbe:
    """The speed of a plan's system for the fit; ``measure`` is what the guardrails call.

    ``probe_if_unknown`` is whether the plan has a physics choice to make: without one, an unknown speed
    is answered with None (a provisional fit) instead of a probe round.
    """

    def __init__(
        self, study: Study, specs: SpecBuilder, runs: int, book: SpeedBook, probe_if_unknown: bool
    ) -> None:
        self._study = study
        self._specs = specs
        self._runs = runs  # conditions in the plan: no more probes than there will be runs at once
        self._book = book
        self._probe_if_unknown = probe_if_unknown
        self.machine = this_machine(self._workers())

    def measure(self, plan: StudyPlan) -> Throughput | None:
        known = self._study.state.probe_for(plan.solvent)
        if known is not None:
            where = "the speed book's" if known.source == "book" else f"probe round {known.round}'s"
            self._study.notify("speed", f"reusing {where} {plan.solvent}-solvent speed")
            return known.throughput()
        runs_like = self._specs.probe(plan).model_copy(update={"constraints": plan.constraints})
        system = step_cost_system(runs_like)  # the runs' physics: the probe always constrains bonds to H
        booked = self._book.lookup(system, self.machine)
        if booked is not None:
            return self._keep(self._from_book(plan, booked))
        if not self._probe_if_unknown:
            self._study.ctx.journal.add_event(
                self._study.state.run_id,
                "info",
                f"no probe: the {plan.solvent}-solvent system has no measured speed on this machine yet "
                "(speed book empty for it) and the plan has no cheaper physics to choose; the runs "
                "start now and measure their own speed",
            )
            return None
        record = self._read_back(plan) or self._run_round(plan)
        run_id, task = self._study.state.run_id, f"probe round {record.round}"
        fresh = measurement(record.steps_per_s, record.overhead_s, "probe", run_id, task)
        if fresh is not None:
            self._book.record(step_cost_system(self._specs.probe(plan)), self.machine, fresh)
        return self._keep(record)

    def _from_book(self, plan: StudyPlan, booked: Measurement) -> ProbeRecord:
        return ProbeRecord(
            solvent=plan.solvent,
            round=0,
            steps_per_s=booked.steps_per_s,
            overhead_s=booked.setup_s or 0.0,
            workers=self._workers(),
            source="book",
            measured_by=booked.describe(),
        )

    def _keep(self, record: ProbeRecord) -> Throughput:
        """Keep the speed the fit takes in the state (a resume reuses it) and journal where it came from."""
        state = self._study.state
        state.probes.append(record)
        self._study.save()
        speed = f"{record.steps_per_s:.0f} steps/s per worker on {record.workers} worker(s)"
        if record.source == "book":
            text = (
                f"{record.solvent}-solvent speed from the speed book {self._book.path}: {speed}, "
                f"measured by {record.measured_by}"
            )
        else:
            text = (
                f"probe round {record.round} ({record.solvent} solvent): {speed}, "
                f"{record.overhead_s:.0f} s before the first step"
            )
        self._study.ctx.journal.add_event(state.run_id, "info", text, record.model_dump(mode="json"))
        self._study.notify("speed", text)
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
        step = ctx.journal.start_step(state.run_id, "probe", f"throughput probe {what}")
        try:
            results = [ctx.executor.result(handle) for handle in handles]
            raise_if_stop_requested(ctx.run_dir)  # a stopped probe measured nothing: a resume runs anew
            record = _record(plan.solvent, round_, results, spec.timestep_fs)
        except SciagentError as exc:
            ctx.journal.finish_step(step, "failed", str(exc))
            raise
        ctx.journal.finish_step(step, "completed", f"{record.steps_per_s:.0f} steps/s per worker")
        return record

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
