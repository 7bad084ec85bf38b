"""Runs model-written code isolated: bubblewrap namespaces, rlimits and per-run cgroups.

    sandbox = Sandbox(allow_unsandboxed=settings.allow_unsandboxed_code)
    sandbox.check()  # SandboxUnavailable when bubblewrap is missing and that was not allowed
    run = sandbox.run([sys.executable, "analysis.py"], workdir=scratch, read_only={"villin.pdb": pdb})
    print(run.summary())

``probe_layers()`` says which protections work on this machine; ``rundir.read_back`` is the one way
to read a file a run left (no links, no FIFOs, bounded) and ``rundir.prune`` bounds old run
directories. Imports only ``sciagent.errors``.
"""

from sciagent.sandbox.limits import Limits, SandboxRun
from sciagent.sandbox.probe import Layers, probe_layers
from sciagent.sandbox.runner import Sandbox

__all__ = ["Layers", "Limits", "Sandbox", "SandboxRun", "probe_layers"]
