"""A scripted competent model for the shipped ``basics`` suite, task by task (tests/test_eval.py).

The suite stays model-agnostic; what a model would do for each task lives here. The calls are fixed,
and each answer is written from the tool results the request carries, as a model writes it, so every
number in it is one the tools computed in that session (rounded as a person would).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openai_server import RecordedRequest, Reply, text_reply, tool_calls_reply

Call = tuple[str, dict[str, Any]]
RUN = {"structure": "villin", "length_ps": 1, "timestep_fs": 4}  # 250 steps with heavy hydrogens


class Results:
    """The tool results a chat request carries, by tool name (parsed JSON; errors are left out)."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self._by_tool: dict[str, list[dict[str, Any]]] = {}
        pending: list[str] = []
        for message in messages:
            if message["role"] == "assistant":
                pending += [call["function"]["name"] for call in message.get("tool_calls") or []]
            elif message["role"] == "tool":
                name = pending.pop(0)
                try:
                    self._by_tool.setdefault(name, []).append(json.loads(message["content"]))
                except json.JSONDecodeError:  # an error, or a repeated call's note: not a result
                    continue

    def __getitem__(self, tool: str) -> dict[str, Any]:
        """The last result of ``tool``."""
        return self._by_tool[tool][-1]


@dataclass(frozen=True)
class Script:
    """The tool calls of each turn, then the answer written from the results."""

    turns: list[list[Call]]
    answer: Callable[[Results], str]

    def reply(self, request: RecordedRequest) -> Reply:
        messages = request.body["messages"]
        turn = sum(message["role"] == "assistant" for message in messages)
        if turn < len(self.turns):
            return tool_calls_reply(self.turns[turn])
        return text_reply(self.answer(Results(messages)))


def info(structure: str) -> list[Call]:
    return [("structure_info", {"structure": structure})]


def waits(*task_ids: str) -> list[list[Call]]:
    return [[("wait_for_task", {"task_id": task_id, "timeout_s": 300})] for task_id in task_ids]


def protein_chains(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chains with a sequence: mdtraj puts a structure's waters in chains of their own."""
    return [chain for chain in result["chains"] if chain["sequence"]]


def size(results: Results) -> str:
    facts = results["structure_info"]
    chains = protein_chains(facts)
    residues = sum(chain["residues"] for chain in chains)
    atoms = facts["total_atoms"]
    return f"It has {len(chains)} chain, {residues} protein residues and {atoms} atoms in all."


def sequence(results: Results) -> str:
    (chain,) = protein_chains(results["structure_info"])
    return f"The sequence of chain {chain['chain_id']} is {chain['sequence']}."


def cleaned(results: Results) -> str:
    prepared = results["prepare_structure"]
    record = prepared["record"]
    removed = (
        ", ".join(f"{count} {name}" for name, count in record["heterogens_removed"].items()) or "nothing"
    )
    return (
        f"Saved {prepared['path']}: {record['residues']} residues and {record['atoms']} atoms after removing "
        f"{removed} and adding {record['hydrogens_added']} hydrogens."
    )


def secondary_structure_and_sasa(results: Results) -> str:
    timeline, sasa = results["secondary_structure"], results["sasa"]
    changed = timeline["residues_changed"]
    verdict = "It did not change" if changed == 0 else "It changed"
    return (
        f"{verdict}: {changed} residues differ in DSSP class between the first and last frame (helix "
        f"fraction {timeline['first']['helix']:.2f} then {timeline['last']['helix']:.2f}). The mean "
        f"solvent-accessible surface area was {sasa['mean']:.2f} nm²."
    )


def rmsf_by_ph(results: Results) -> str:
    low, high = (row["values"]["rmsf"] for row in results["compare_runs"]["rows"])
    return f"The largest CA RMSF is {low:.2f} Å at pH 5 and {high:.2f} Å at pH 8."


def rg_by_temperature(results: Results) -> str:
    plot = results["plot"]
    temperatures = (280, 300, 320)
    means = ", ".join(
        f"{line['mean']:.3f} nm at {t} K" for line, t in zip(plot["lines"], temperatures, strict=True)
    )
    return f"The plot is {plot['path']}. Mean radius of gyration: {means}."


def barnase_chains(results: Results) -> str:
    chains = protein_chains(results["structure_info"])
    each = ", ".join(f"chain {chain['chain_id']} {chain['residues']}" for chain in chains)
    return f"It has {len(chains)} protein chains; residues: {each}."


SCRIPTS: dict[str, Script] = {
    "villin-size": Script([info("villin")], size),
    "villin-sequence": Script([info("villin")], sequence),
    "villin-helix": Script(
        [info("villin")],
        lambda r: f"{r['structure_info']['secondary_structure']['helix']:.0%} of its residues are helical.",
    ),
    "villin-clean": Script([[("prepare_structure", {"structure": "villin", "ph": 7})]], cleaned),
    "villin-atoms-file": Script(
        [info("villin"), [("write_file", {"path": "atoms.txt", "text": "582\n"})]],
        lambda r: (
            f"It has {r['structure_info']['total_atoms']} atoms; I wrote it to {r['write_file']['path']}."
        ),
    ),
    "villin-md-secondary-structure": Script(
        [
            [("simulate", {**RUN, "temperature_k": 300})],
            *waits("sim-1"),
            [("secondary_structure", {"task_id": "sim-1"}), ("sasa", {"task_id": "sim-1"})],
        ],
        secondary_structure_and_sasa,
    ),
    "villin-rmsf-ph": Script(
        [
            [("simulate", {**RUN, "ph": 5}), ("simulate", {**RUN, "ph": 8})],
            *waits("sim-1", "sim-2"),
            [("compare_runs", {"task_ids": ["sim-1", "sim-2"], "metrics": ["rmsf"]})],
        ],
        rmsf_by_ph,
    ),
    "villin-rg-temperatures": Script(
        [
            [("simulate", {**RUN, "temperature_k": t}) for t in (280, 300, 320)],
            *waits("sim-1", "sim-2", "sim-3"),
            [("plot", {"task_ids": ["sim-1", "sim-2", "sim-3"], "metric": "radius_of_gyration"})],
        ],
        rg_by_temperature,
    ),
    "ubiquitin-size": Script([info("1UBQ")], size),
    "ubiquitin-waters": Script(
        [info("ubiquitin")], lambda r: f"It holds {r['structure_info']['waters']} water molecules."
    ),
    "ubiquitin-sequence": Script([info("1UBQ")], sequence),
    "ubiquitin-secondary-structure": Script(
        [info("1UBQ")],
        lambda r: "{helix:.1%} of its residues are in helices and {strand:.1%} in strands.".format(
            **r["structure_info"]["secondary_structure"]
        ),
    ),
    "ubiquitin-clean": Script([[("prepare_structure", {"structure": "1UBQ", "ph": 7})]], cleaned),
    "barnase-chains": Script([info("1BNI")], barnase_chains),
    "barnase-missing-residues": Script(
        [info("1BNI")],
        lambda r: (
            "Missing (in SEQRES, without coordinates): " + ", ".join(r["structure_info"]["missing_residues"])
        ),
    ),
    "barnase-chain-a": Script(
        [[("prepare_structure", {"structure": "1BNI", "chains": ["A"], "ph": 6})]], cleaned
    ),
}
