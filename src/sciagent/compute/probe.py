"""A tiny task that reports what a worker is: ``sciagent sites check`` sends it to a site.

Only the standard library at import time, and OpenMM if the worker has it, so that the probe runs
(and says what is missing) on a worker whose environment is incomplete.
"""

from __future__ import annotations

import os
import platform
import socket

_DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "ROCR_VISIBLE_DEVICES", "OPENMM_CPU_THREADS")


def worker_info() -> dict:
    """Python and OpenMM versions, OpenMM platforms, host, and the device pinning this worker got.

    Returns:
        A JSON-friendly dict; ``openmm`` is None (and ``openmm_error`` says why) when OpenMM cannot
        be imported there.
    """
    info: dict = {
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cpus": os.cpu_count(),
        "openmm": None,
        "platforms": [],
        "env": {name: os.environ[name] for name in _DEVICE_VARIABLES if name in os.environ},
    }
    try:
        import openmm
    except ImportError as exc:
        info["openmm_error"] = str(exc)
        return info
    info["openmm"] = openmm.__version__
    count = openmm.Platform.getNumPlatforms()
    info["platforms"] = [openmm.Platform.getPlatform(i).getName() for i in range(count)]
    return info
