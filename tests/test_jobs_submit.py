"""``sciagent submit``: the job script, its submission after another job, the job records and the command.

PBS Pro is the stand-in (tests/pbs_shim) at its command-line boundary; Slurm is a real single-node
cluster (tests/slurm_cluster.py). The script renderer, the submission, the journal records, the approval
policy and the command are the real code. Each protection is attacked, with a control that shows the
same input doing harm (or going through) where the protection does not stand in its way.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sciagent.agent.journal import Journal
from sciagent.compute.sites import BUILTIN_SITES, SiteConfig
from sciagent.errors import UserError
from sciagent.workflows.jobs.records import jobs_of, record_ended, record_started, record_submitted
from sciagent.workflows.jobs.script import render_job_script
from sciagent.workflows.jobs.spec import JobSpec, ModelInJob
from sciagent.workflows.jobs.submission import cancel, submit_script
from slurm_cluster import PARTITION

pytestmark = pytest.mark.timeout(300)
SHIM = Path(__file__).parent / "pbs_shim"
GOAL = "Is ubiquitin stable at 350 K?"
POLARIS = BUILTIN_SITES["polaris"].model_copy(update={"account": "MYPROJ"})
SLURM_SITE = SiteConfig(kind="parsl", provider="slurm", partition=PARTITION)
SLURM_TOML = f'[sites.slurm]\npartition = "{PARTITION}"\n'
PAYLOAD = "touch {marker}"  # what an injected line would run


def _spec(workspace: Path, **fields: object) -> JobSpec:
    model = ModelInJob(backend="vllm", model="meta-llama/Meta-Llama-3.1-8B-Instruct", devices=1)
    base = {"run_id": "20261207-101500-ab12", "workspace": workspace, "site": "polaris", "goal": GOAL,
            "budget_s": 4 * 3300.0, "walltime_s": 3600.0, "model_in_job": model}  # fmt: skip
    return JobSpec(**(base | fields))


@pytest.fixture
def pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shim first on PATH; jobs stay queued (a minute) so none starts before the test cancels it."""
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    monkeypatch.setenv("PBS_SHIM_QUEUE_S", "60")
    return tmp_path / "pbs"


def _qstat(job_id: str) -> dict:
    out = subprocess.run(
        ["qstat", "-x", "-f", "-F", "json", job_id], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)["Jobs"][job_id]


def test_the_pbs_pro_script_for_a_polaris_like_site_and_its_dependent_submission(pbs, tmp_path) -> None:
    """Polaris (4 A100 a node, 1 for the model): one node with its 4 GPUs, the site's filesystems, account,
    queue and walltime, the supervisor exec'd on the spec's path, and no word of the goal. Submitted after
    another job, the stand-in records ``-W depend=afterany:ID``; a first job has no dependency."""
    with pytest.raises(UserError, match="use a workspace whose path has only"):  # no space in a directive
        render_job_script(_spec(tmp_path / "my ws"), tmp_path / "s", "polaris", POLARIS, stop_margin_s=60)
    spec = _spec(tmp_path / "ws")
    spec_path = spec.save()
    text = render_job_script(spec, spec_path, "polaris", POLARIS, stop_margin_s=300)
    lines = text.splitlines()
    for expected in (
        "#PBS -N sciagent-20261207-101500-ab12", "#PBS -A MYPROJ", "#PBS -q debug",
        "#PBS -l select=1:ncpus=64:ngpus=4", "#PBS -l walltime=01:00:00", "#PBS -l filesystems=home:eagle",
        f"#PBS -o {spec.jobs_dir.resolve()}/job-0.out", "#PBS -l place=scatter",
        f"cd {shlex.quote(str(spec.start_dir.resolve()))}",
        f"exec sciagent job run --spec {shlex.quote(str(spec_path.resolve()))}",
    ):  # fmt: skip
        assert expected in lines, (expected, text)
    assert "ubiquitin" not in text and "350" not in text  # the goal lives in the spec file only
    assert "--signal" not in text  # PBS Pro has no pre-limit signal: the supervisor watches the end time
    print(text)  # the rendered script, as the issue asks to show

    script = spec.jobs_dir / "job-0.sh"
    script.write_text(text)
    first = submit_script("polaris", POLARIS, script, after=None)
    second = submit_script("polaris", POLARIS, script, after=first)
    try:
        assert "depend" not in _qstat(first)["Submit_arguments"]
        assert _qstat(second)["Submit_arguments"] == f"-W depend=afterany:{first} {script.resolve()}"
        assert _qstat(second)["Account_Name"] == "MYPROJ" and _qstat(second)["queue"] == "debug"
    finally:
        for job_id in (second, first):
            cancel("polaris", POLARIS, job_id)
    assert {_qstat(job_id)["job_state"] for job_id in (first, second)} == {"F"}


def test_a_submission_the_scheduler_refuses_is_one_line_with_its_reason(pbs, tmp_path) -> None:
    from sciagent.compute.sites import SiteUnavailable

    stopped = POLARIS.model_copy(update={"queue": "maint"})  # the stand-in's queue that is not enabled
    spec = _spec(tmp_path)
    script = spec.jobs_dir / "job-0.sh"
    script.parent.mkdir(parents=True)
    script.write_text(render_job_script(spec, spec.save(), "polaris", stopped, stop_margin_s=60))
    with pytest.raises(SiteUnavailable, match="Queue is not enabled") as refused:
        submit_script("polaris", stopped, script, after=None)
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match="not a batch job id"):
        submit_script("polaris", POLARIS, script, after="1000; qdel all")


INJECTIONS = [
    ("account", "MYPROJ\n{payload}"),
    ("queue", "debug\n{payload}"),
    ("queue", "debug; {payload}"),
    ("filesystems", "home:eagle\n{payload}"),
    ("select_options", "ngpus=4\n{payload}"),
    ("scheduler_options", "#PBS -l place=scatter\n{payload}"),
]


@pytest.mark.parametrize(("field", "raw"), INJECTIONS)
def test_a_site_value_with_a_line_break_or_a_command_is_refused(tmp_path, field, raw) -> None:
    """Attack: a site value that ends its directive and starts a command. Refused, naming the value.
    Control: the same value written into a script unchecked (as a plain f-string would) runs the command."""
    marker = tmp_path / f"pwned-{field}"
    value = raw.format(payload=PAYLOAD.format(marker=marker))
    site = POLARIS.model_copy(update={field: value})
    spec = _spec(tmp_path)
    with pytest.raises(UserError) as refused:
        render_job_script(spec, spec.save(), "polaris", site, stop_margin_s=60)
    assert "\n" not in str(refused.value)

    if field == "scheduler_options":
        unchecked = f"#!/bin/bash\n{value}\necho job\n"
    elif ";" in value:  # a shell line that uses the value unquoted, as a careless template would
        unchecked = f"#!/bin/bash\n#PBS -q {value}\nqstat -Q {value} 2>/dev/null || true\n"
    else:
        unchecked = f"#!/bin/bash\n#PBS -l {field}={value}\necho job\n"
    subprocess.run(["bash", "-c", unchecked], capture_output=True, timeout=30)
    assert marker.exists(), "control: unchecked, the value runs its own command"


def test_job_records_fold_into_one_row_per_job_in_chain_order(tmp_path) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        run_id = journal.create_run(GOAL, {})
        record_submitted(journal, run_id, "101", 0, tmp_path / "job-0.sh")
        record_started(journal, run_id, "101", 0, "node7", 1_900_000_000.0)
        record_submitted(journal, run_id, "102", 1, tmp_path / "job-1.sh")
        record_ended(
            journal, run_id, "101", 0, "walltime margin: continues in job 102", {"simulating_s": 3000.0}
        )
        record_started(journal, run_id, "102", 1, "node8", None)
        first, second = jobs_of(journal, run_id)
        assert jobs_of(journal, journal.create_run("other", {})) == []
    assert (first.index, first.job_id, first.host, first.ends_at) == (0, "101", "node7", 1_900_000_000.0)
    assert first.submitted_at <= first.started_at <= first.ended_at
    assert first.end_reason.startswith("walltime margin") and first.allocation == {"simulating_s": 3000.0}
    assert first.script == str(tmp_path / "job-0.sh")
    assert (second.index, second.job_id, second.ended_at, second.end_reason) == (1, "102", None, None)


# -- the command ----------------------------------------------------------------------------------


def _submit(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sciagent", "submit", GOAL, *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def _runs(cwd: Path) -> list[tuple[str, str]]:
    journal = cwd / "sciagent-runs" / "journal.sqlite"
    if not journal.exists():
        return []
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT id, status FROM runs").fetchall()


def _one_error_line(completed: subprocess.CompletedProcess) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
    assert "Traceback" not in completed.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--site", "nowhere", "--llm-in-job", "llama-cpp"], "unknown site nowhere"),
        (["--site", "local", "--llm-in-job", "llama-cpp"], "not a Slurm or PBS Pro site"),
        (["--site", "slurm", "--walltime", "soon", "--llm-in-job", "llama-cpp"], "invalid --walltime"),
        (["--site", "slurm", "--llm-in-job", "llama-cpp", "--llm-devices", "0"], "--llm-devices must be 1"),
        (["--site", "slurm", "--llm-in-job", "llama-cpp", "--llm", "embedded"], "give one of --llm-in-job"),
        (["--site", "slurm"], "give one of --llm-in-job"),
        (["--site", "slurm", "--llm-in-job", "vllm:some/model"], "has 0 GPU(s) a node"),
        (["--site", "slurm", "--llm-in-job", "llama-cpp:missing.gguf"], "not a .gguf file"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_is_queued(tmp_path, args, says) -> None:
    (tmp_path / "sciagent.toml").write_text(SLURM_TOML)
    completed = _submit(tmp_path, *args, "--yes")
    assert completed.returncode == 2, completed.stderr
    assert says in _one_error_line(completed)
    assert _runs(tmp_path) == []


def test_without_a_terminal_or_yes_or_with_a_deny_rule_nothing_is_queued(tmp_path) -> None:
    """Spending an allocation asks first: with no terminal and no --yes it is refused; a deny rule refuses
    even with --yes. Neither creates a run (the control, --yes with no rule, is the Slurm test below)."""
    (tmp_path / "sciagent.toml").write_text(SLURM_TOML)
    asked = _submit(tmp_path, "--site", "slurm", "--llm-in-job", "llama-cpp")
    assert asked.returncode == 2 and "no terminal to ask: add --yes" in _one_error_line(asked)
    (tmp_path / "sciagent.toml").write_text(
        SLURM_TOML + '[[approval.rules]]\ntool = "submit"\nsite = "slurm"\ndecision = "deny"\n'
    )
    denied = _submit(tmp_path, "--site", "slurm", "--llm-in-job", "llama-cpp", "--yes")
    assert denied.returncode == 2 and "refused: [[approval.rules]] #1 says deny" in _one_error_line(denied)
    assert _runs(tmp_path) == []


def test_an_injected_account_is_refused_by_the_command_before_anything_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "sciagent.toml").write_text(
        '[sites.evil]\nkind = "parsl"\nprovider = "pbspro"\n'
        f'account = "P\\n{PAYLOAD.format(marker=marker)}"\n'
    )
    completed = _submit(tmp_path, "--site", "evil", "--llm", "embedded", "--yes")
    assert completed.returncode == 2 and "job request: account" in _one_error_line(completed)
    assert _runs(tmp_path) == [] and not marker.exists()


# -- real Slurm -----------------------------------------------------------------------------------


def _stamp_script(path: Path, name: str, sleep_s: float) -> Path:
    path.write_text(
        f"#!/bin/bash\n#SBATCH --time=2\n#SBATCH --output={path.parent}/{name}.log\n"
        f"date +%s.%N > {path.parent}/{name}.start\nsleep {sleep_s}\ndate +%s.%N > {path.parent}/{name}.end\n"
    )
    return path


def _wait_for(path: Path, timeout_s: float = 90) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return float(path.read_text())
        time.sleep(0.2)
    raise AssertionError(f"{path.name} did not appear within {timeout_s} s")


@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_a_job_submitted_after_another_starts_only_when_that_one_has_ended(
    slurm_cluster, tmp_path, monkeypatch
) -> None:
    """B (afterany A) starts after A's last line; C, submitted with no dependency at the same time, starts
    while A still runs (the control: the node had room for B, only the dependency held it)."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    first = submit_script("slurm", SLURM_SITE, _stamp_script(tmp_path / "a.sh", "a", 4), after=None)
    after = submit_script("slurm", SLURM_SITE, _stamp_script(tmp_path / "b.sh", "b", 0), after=first)
    free = submit_script("slurm", SLURM_SITE, _stamp_script(tmp_path / "c.sh", "c", 0), after=None)
    assert first.isdigit() and int(first) < int(after) < int(free)
    a_end, b_start, c_start = (_wait_for(tmp_path / name) for name in ("a.end", "b.start", "c.start"))
    assert b_start >= a_end
    assert c_start < a_end


@pytest.mark.hpc
@pytest.mark.xdist_group("slurm")
def test_submit_queues_the_run_on_real_slurm_records_its_job_and_show_lists_it(
    slurm_cluster, tmp_path
) -> None:
    """With --yes: the run is queued in the journal with its spec, the script is shown (the supervisor
    exec'd, no goal), the job is in Slurm's queue and in the journal, and `sciagent show` lists it.
    A job holding the node keeps ours pending (it asks for the node exclusively), so nothing of it runs."""
    env = slurm_cluster | {"PATH": f"{Path(sys.executable).parent}:{slurm_cluster['PATH']}"}
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--time=5", "--output=/dev/null", "--wrap", "sleep 240"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (tmp_path / "sciagent.toml").write_text(SLURM_TOML)
    job_id = None
    try:
        completed = _submit(
            tmp_path, "--site", "slurm", "--walltime", "10m", "--llm-in-job", "llama-cpp", "--yes", env=env
        )
        assert completed.returncode == 0, completed.stderr
        [(run_id, status)] = _runs(tmp_path)
        assert status == "queued"
        assert "#SBATCH --exclusive" in completed.stdout and "#SBATCH --signal=B:USR1@60" in completed.stdout
        assert "exec sciagent job run --spec" in completed.stdout and "ubiquitin" not in completed.stdout
        with Journal(tmp_path / "sciagent-runs" / "journal.sqlite") as journal:
            (job,) = jobs_of(journal, run_id)
            config = journal.get_run(run_id).config
        job_id = job.job_id
        assert f"queued as job {job_id}" in completed.stdout and f"sciagent show {run_id}" in completed.stdout
        assert config["job"]["goal"] == GOAL and config["job"]["model_in_job"]["backend"] == "llama-cpp"
        assert config["job"]["walltime_s"] == 600 and config["job"]["budget_s"] == 4 * (600 - 60)
        spec = JobSpec.load(tmp_path / "sciagent-runs" / run_id / "jobs" / "spec.json")
        assert spec.run_id == run_id and spec.goal == GOAL and job.script.endswith("jobs/job-0.sh")
        queue = subprocess.run(["squeue", "-h", "-o", "%i %T %j"], env=env, capture_output=True, text=True)
        assert f"{job_id} PENDING sciagent-{run_id}" in queue.stdout
        shown = subprocess.run(
            [sys.executable, "-m", "sciagent", "show", run_id], cwd=tmp_path, capture_output=True, text=True,
            timeout=60, env=env | {"COLUMNS": "200"},
        )  # fmt: skip
        assert shown.returncode == 0 and "Batch jobs of run" in shown.stdout and job_id in shown.stdout
    finally:
        for queued in (job_id, blocker):
            if queued:
                subprocess.run(["scancel", queued], env=env, capture_output=True, timeout=30)
