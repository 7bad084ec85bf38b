"""The science layer: pure, picklable kernels that run on any worker.

Nothing here imports the agent, the LLM layer or the workflows: a Globus Compute or Parsl worker
needs only OpenMM, PDBFixer, mdtraj, NumPy and pydantic to run these functions.
"""
