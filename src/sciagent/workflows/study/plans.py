"""The plan of a thermal-stability study, as the model proposes it: the schema the guardrails hold to limits.

It lives here, in ``agent/``, because the guardrails (this layer) read it and the workflows (above)
ask the model for it; a schema belongs to the lowest layer that uses it. The bounds are small
enumerations where they can be: a constrained decoder (llama.cpp's JSON-schema grammar) enforces an
enum but not ``minimum``/``maximum``, so a tiny offline model can still only say something valid.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ReferenceTemperature = Literal[290, 300, 310]
ElevatedTemperature = Literal[320, 330, 340, 350, 360, 370, 380, 390, 400, 420, 450]
PRODUCTION_CHOICES_PS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)


class StudyPlan(BaseModel):
    """The model's proposal for a thermal-stability study: a physiological reference and hotter runs."""

    reference_temperature_k: ReferenceTemperature = Field(description="physiological reference temperature")
    elevated_temperatures_k: list[ElevatedTemperature] = Field(
        min_length=1, max_length=3, description="elevated temperatures that stress the fold"
    )
    replicas: int = Field(ge=1, le=3, description="independent runs per temperature")
    timestep_fs: Literal[1, 2, 4] = Field(description="4 fs needs hydrogen mass repartitioning")
    hydrogen_mass_repartitioning: bool
    constraints: Literal["hbonds", "none"] = Field(description="none lets bonds to hydrogen vibrate freely")
    production_ps: float = Field(
        ge=1,
        le=50_000,
        description="production length per run in picoseconds",
        # What the model may say: a grammar enforces an enum but not a float's bounds (a model behind
        # llama.cpp's server answered 3.6e-40 three times). Validation still takes any length in range.
        json_schema_extra={"enum": list(PRODUCTION_CHOICES_PS)},
    )
    solvent: Literal["implicit", "explicit"]
    rationale: str = Field(max_length=800, description="why this design answers the goal")

    @property
    def temperatures_k(self) -> list[float]:
        """Every temperature of the study, lowest first, each once."""
        return sorted({float(self.reference_temperature_k), *map(float, self.elevated_temperatures_k)})

    def describe(self) -> str:
        """One line for people: temperatures, replicas, integration and length."""
        temperatures = ", ".join(f"{t:g} K" for t in self.temperatures_k)
        hmr = " with HMR" if self.hydrogen_mass_repartitioning else ""
        return (
            f"{temperatures} x {self.replicas} replica(s), {self.timestep_fs} fs{hmr}, {self.constraints} "
            f"constraints, {self.production_ps:g} ps, {self.solvent}"
        )


class HeldPlan(StudyPlan):
    """A plan whose temperatures the user's goal states: they replace the model's reference and elevated ones.

    Built by code from a validated ``StudyPlan`` (``workflows/study/goal.py``), never asked of a model, so
    the model's schema keeps its small enumerations while a goal may name any temperature a run can take.
    """

    stated_temperatures_k: list[float] = Field(min_length=1)

    @property
    def temperatures_k(self) -> list[float]:
        return sorted(set(map(float, self.stated_temperatures_k)))
