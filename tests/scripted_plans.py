"""The study plan the scripted model answers with in end-to-end tests: villin at 300 K against 400 K,
implicit solvent, 4 fs with hydrogen mass repartitioning (the cheapest physics that holds), one replica.

A test states only what it changes (a length, a temperature, its rationale), so what it is about shows.
"""

from __future__ import annotations

from typing import Any


def villin_plan(**changes: Any) -> dict[str, Any]:
    """The plan as the model's JSON reply would hold it, with ``changes`` applied."""
    plan = {
        "reference_temperature_k": 300,
        "elevated_temperatures_k": [400],
        "replicas": 1,
        "timestep_fs": 4,
        "hydrogen_mass_repartitioning": True,
        "constraints": "hbonds",
        "production_ps": 2,
        "solvent": "implicit",
        "rationale": "A short look at the reference and one elevated temperature.",
    }
    return {**plan, **changes}
