"""What the model is asked for during a stability study, besides the plan (``workflows/study/plans.py``).

Every value a model produces passes through one of these before anything acts on it; the bounds are
small enumerations where a constrained decoder must enforce them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Adjustment(BaseModel):
    """The model's fix for a simulation that blew up."""

    timestep_fs: Literal[0.5, 1, 2] = Field(description="new timestep; smaller is more stable")
    constraints: Literal["hbonds", "allbonds"]
    minimize: bool
    rationale: str = Field(max_length=400)


class Interpretation(BaseModel):
    """The model's reading of the results table; every number it cites is checked against the data."""

    # Short: a small model fills long limits by repeating itself, and the computed findings carry the numbers.
    summary: str = Field(max_length=700)
