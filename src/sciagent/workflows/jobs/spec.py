"""What one batch job of a run is to do, written by ``sciagent submit`` and read by the job's supervisor.

The spec is a file in the run's directory (``jobs/spec.json``), never a command-line string: the job
script carries only the path, so nothing a model wrote reaches the script or a shell. A continuation
job reads the same spec; only ``continuation`` (which job of the chain this is) differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sciagent.atomic import write_atomic

SPEC_FILE = "spec.json"
JOBS_DIR = "jobs"  # under the run's directory: the spec, each job's script, log and allocation record
DEFAULT_MAX_CONTINUATIONS = 3


class ModelInJob(BaseModel):
    """The model server the job starts on its own node (single-system mode).

    Attributes:
        backend: ``vllm`` on the node's GPUs, or ``llama-cpp`` on CPU threads.
        model: a Hugging Face id or local directory (vLLM); a ``.gguf`` path, or None for the bundled
            model (llama.cpp).
        devices: GPUs given to vLLM, or CPU threads given to llama.cpp; the simulations get the rest.
        gpu_memory_fraction: vLLM's ``--gpu-memory-utilization`` on its devices.
        ready_timeout_s: how long the health gate waits for the server (loading a model takes minutes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["vllm", "llama-cpp"]
    model: str | None = None
    devices: int = Field(default=1, ge=1)
    gpu_memory_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    ready_timeout_s: float = Field(default=900.0, gt=0.0)


class JobSpec(BaseModel):
    """One run carried through one or more batch jobs.

    Attributes:
        run_id: the run in the workspace's journal (created by ``submit``, status ``queued``).
        workspace: where the journal and the run's directory are (a shared filesystem).
        directory: where ``sciagent submit`` ran; the job starts there, so it reads the same
            ``sciagent.toml`` (None: the workspace's parent).
        site: the batch site (``sciagent sites list``) whose scheduler runs the jobs.
        kind: ``study`` (``sciagent run``'s stability study) or ``ask`` (an open-ended question).
        goal: the study's goal or the question.
        structure: the study's structure (name, PDB id or file), None for ``ask``.
        budget_s: the run's own working-time budget, across all its jobs.
        walltime_s: each job's walltime asked of the scheduler.
        model_in_job: the model served inside the job; None when ``llm`` names a remote profile.
        llm: the profile used when no model is served in the job (multi-system mode).
        fallback_llm: a profile to use when the served model fails its health gate.
        max_continuations: dependent jobs that may continue the run after the first.
        continuation: which job of the chain this is (0: the first).
        margin_s: stop this long before the walltime ends; None: sized from the checkpoint interval.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    workspace: Path
    directory: Path | None = None
    site: str
    kind: Literal["study", "ask"] = "study"
    goal: str
    structure: str | None = None
    budget_s: float = Field(gt=0.0)
    walltime_s: float = Field(gt=0.0)
    model_in_job: ModelInJob | None = None
    llm: str | None = None
    fallback_llm: str | None = None
    max_continuations: int = Field(default=DEFAULT_MAX_CONTINUATIONS, ge=0, le=20)
    continuation: int = Field(default=0, ge=0)
    margin_s: float | None = Field(default=None, gt=0.0)

    @property
    def run_dir(self) -> Path:
        return self.workspace / self.run_id

    @property
    def start_dir(self) -> Path:
        """Where the job script ``cd``s before it starts the supervisor."""
        return self.directory or self.workspace.parent

    @property
    def jobs_dir(self) -> Path:
        return self.run_dir / JOBS_DIR

    def save(self, path: Path | None = None) -> Path:
        """Write the spec (default ``<run>/jobs/spec.json``) and return its path."""
        target = path or self.jobs_dir / SPEC_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, self.model_dump_json(indent=2))
        return target

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        return cls.model_validate_json(path.read_text())
