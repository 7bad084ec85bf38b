"""Which OpenMM platform to run on, and how to configure it.

``auto`` tries the GPU platforms first (fastest first) and falls back to the CPU platform; each
platform that could not be used is recorded with OpenMM's reason, so a slow run explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import openmm

from sciagent.errors import SpecError

GPU_PLATFORMS = ("CUDA", "HIP", "OpenCL")
# Precision used by platforms that have no 'Precision' property.
_FIXED_PRECISION = {"CPU": "single", "Reference": "double"}


@dataclass(frozen=True)
class PlatformChoice:
    """A platform to try, with the properties to create the context with."""

    platform: openmm.Platform
    properties: dict[str, str]
    reason: str

    @property
    def name(self) -> str:
        return self.platform.getName()


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms whose plugins loaded on this machine."""
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def platform_candidates(requested: str, precision: str, cpu_threads: int | None) -> list[PlatformChoice]:
    """Platforms to try in order for ``requested`` (``auto`` or a platform name).

    Raises:
        SpecError: a named platform is not available here.
    """
    available = available_platforms()
    if requested != "auto":
        if requested not in available:
            raise SpecError(
                f"OpenMM platform {requested} is not available here (available: {', '.join(available)}): "
                "use --platform auto or one of those"
            )
        names = [requested]
    else:
        names = [name for name in GPU_PLATFORMS if name in available] + ["CPU"]
    choices = []
    for name in names:
        reason = "requested" if requested != "auto" else _auto_reason(name, available)
        choices.append(
            PlatformChoice(
                openmm.Platform.getPlatformByName(name), _properties(name, precision, cpu_threads), reason
            )
        )
    return choices


def precision_of(context: openmm.Context) -> str:
    """The floating-point precision ``context`` actually computes in."""
    platform = context.getPlatform()
    if "Precision" in platform.getPropertyNames():
        return platform.getPropertyValue(context, "Precision")
    return _FIXED_PRECISION.get(platform.getName(), "unknown")


def _auto_reason(name: str, available: list[str]) -> str:
    if name in GPU_PLATFORMS:
        return f"auto: {name} is the fastest platform available"
    gpus = [p for p in GPU_PLATFORMS if p in available]
    return (
        "auto: CPU (no GPU platform could be used)" if gpus else "auto: CPU (no GPU platform on this machine)"
    )


def _properties(name: str, precision: str, cpu_threads: int | None) -> dict[str, str]:
    if name in GPU_PLATFORMS:
        return {"Precision": "mixed" if precision == "auto" else precision}
    if name == "CPU" and cpu_threads:
        return {"Threads": str(cpu_threads)}
    return {}
