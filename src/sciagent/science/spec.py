"""What one simulation is: ``MDSpec``, a validated, JSON-serialisable, hashable request.

Every value a person or a language model chooses for a run passes through this model before
OpenMM sees it, so bounds live here, with messages that say what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ForceFieldName = Literal["amber14", "amber99sbildn", "charmm36"]
Solvent = Literal["implicit", "explicit", "vacuum"]
ImplicitModel = Literal["auto", "obc2", "obc1", "hct", "gbn", "gbn2"]
Constraints = Literal["none", "hbonds", "allbonds", "hangles"]
PlatformName = Literal["auto", "CPU", "CUDA", "OpenCL", "HIP", "Reference"]
Precision = Literal["auto", "single", "mixed", "double"]

# Fields that do not change the physics or the starting point of a trajectory. A checkpoint written
# under one value of these can be continued under another (a longer production extends a run; a new
# wall-time limit, production deadline or stop file resumes one), so they are left out of the restart key.
_RESUMABLE_FIELDS = frozenset(
    {
        "production_steps",
        "max_wall_time_s",
        "production_deadline_unix",
        "stop_file",
        "checkpoint_interval",
        "cpu_threads",
        "platform",
        "precision",
    }
)


class MDSpec(BaseModel):
    """One molecular-dynamics simulation, from structure to production.

    Units are in the field names (K, bar, fs, nm, ps⁻¹, M) so that a JSON spec reads unambiguously.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    structure: str = Field(description="file path, bundled name (villin), PDB id or protein name")
    chains: tuple[str, ...] | None = Field(default=None, description="chain ids to keep; None keeps all")
    keep_water: bool = Field(default=False, description="keep crystallographic water")
    remove_unknown_residues: bool = Field(
        default=False,
        description=(
            "remove residues the force field does not know from inside chains (breaks the chain there)"
        ),
    )
    ph: float = Field(default=7.0, gt=0, lt=14, description="pH for protonation states")

    forcefield: ForceFieldName = "amber14"
    solvent: Solvent = "implicit"
    implicit_model: ImplicitModel = Field(
        default="auto", description="GB model; auto = OBC2 on every platform (computed with GBSAOBCForce)"
    )
    padding_nm: float = Field(default=1.0, gt=0.3, le=3.0, description="explicit solvent box padding")
    ionic_strength_molar: float = Field(default=0.15, ge=0, le=2.0, description="explicit solvent NaCl")

    temperature_k: float = Field(default=300.0, gt=0, le=1000.0)
    pressure_bar: float = Field(default=1.0, gt=0, le=10_000.0, description="NPT pressure (explicit solvent)")
    timestep_fs: float = Field(default=2.0, gt=0, le=10.0)
    constraints: Constraints = "hbonds"
    hydrogen_mass_amu: float | None = Field(
        default=None, ge=1.0, le=5.0, description="hydrogen mass repartitioning; None keeps 1.008 amu"
    )
    friction_per_ps: float = Field(default=1.0, gt=0, le=100.0)

    minimize: bool = True
    minimize_max_iterations: int = Field(default=0, ge=0, description="0 = until converged")
    equilibration_steps: int = Field(default=0, ge=0)
    production_steps: int = Field(
        default=5000, gt=0, description="production length; the maximum when a production deadline is set"
    )
    report_interval: int = Field(default=100, gt=0, description="steps between trajectory frames")
    checkpoint_interval: int = Field(default=5000, gt=0, description="steps between checkpoints")
    seed: int = Field(
        default=1, ge=1, lt=2**31, description="velocities, thermostat, barostat; fixed so reruns reproduce"
    )

    platform: PlatformName = "auto"
    precision: Precision = "auto"
    cpu_threads: int | None = Field(default=None, gt=0, description="CPU platform threads; None = all")
    max_wall_time_s: float | None = Field(
        default=None, gt=0, description="stop cleanly with a checkpoint after this long; resumable"
    )
    production_deadline_unix: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="epoch seconds (time.time()): production ends, completed, at the first report step at "
        "or after it (at least one report interval of production per call); equilibration is never cut. "
        "Resumable",
    )
    stop_file: str | None = Field(
        default=None,
        description="stop cleanly with a checkpoint at the first report step after this file exists; "
        "its text is the reason. Resumable",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> MDSpec:
        if self.report_interval > self.production_steps:
            raise ValueError(
                f"report_interval ({self.report_interval}) is longer than production "
                f"({self.production_steps} steps): lower it so at least one frame is written"
            )
        if self.solvent != "implicit" and self.implicit_model != "auto":
            raise ValueError(f"implicit_model applies to implicit solvent only, not {self.solvent!r}")
        return self

    @property
    def total_steps(self) -> int:
        """Equilibration plus production steps."""
        return self.equilibration_steps + self.production_steps

    def restart_key(self) -> str:
        """A digest of everything that defines the trajectory, to match a checkpoint to its spec."""
        physics = self.model_dump(mode="json", exclude=set(_RESUMABLE_FIELDS))
        canonical = json.dumps(physics, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
