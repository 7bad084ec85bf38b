"""The messages sent to the model, one function per question, so they are easy to read and to change."""

from __future__ import annotations

import json
from typing import Any

from sciagent.llm.base import Message

SYSTEM = (
    "You are a computational biophysicist planning molecular-dynamics simulations with OpenMM. "
    "Answer only with JSON matching the requested schema."
)


def plan_messages(goal: str, structure: str, budget_s: float) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": (
                f"Goal: {goal}\nStructure: {structure}\nCompute budget: {budget_s:.0f} seconds of wall time "
                "in total.\n"
                "Propose a study: temperatures (K), replicas per temperature, timestep (fs), bond "
                "constraints, whether to repartition hydrogen mass, production length (ps) and solvent, "
                "with a short rationale. A thermal-stability study compares a physiological temperature "
                "(300-310 K) with elevated ones (350-400 K); implicit solvent is much cheaper on CPUs."
            ),
        },
    ]


def adjustment_messages(condition: str, error: str, spec: dict[str, Any]) -> list[Message]:
    failed = {key: spec[key] for key in ("temperature_k", "timestep_fs", "constraints", "hydrogen_mass_amu")}
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": (
                f"The simulation {condition} failed: {error}\nIts settings: {json.dumps(failed)}\n"
                "Propose settings that keep the same temperature but integrate stably."
            ),
        },
    ]


def interpretation_messages(goal: str, table: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": (
                f"Goal: {goal}\nResults (computed from the trajectories):\n{table}\n"
                "Write a short interpretation for a scientist. Cite only numbers that appear in the table."
            ),
        },
    ]
