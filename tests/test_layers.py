"""The layers contract in pyproject.toml ([tool.importlinter]) holds, and it catches an upward import.

Both checks run the real ``lint-imports`` of this environment; the second runs it on a copy of the
package with one upward import added, so a contract that stopped checking would fail this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACT = "sciagent layers"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` (a dev dependency: ``pip install -e .[dev]``) in ``cwd``, without its cache dir."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the dev extras"
    env = os.environ.copy()
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_package_keeps_its_layers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers, cli, workflows, science = config["contracts"]
    assert layers["type"] == "layers" and layers["name"].startswith(CONTRACT)
    assert cli["type"] == "layers" and cli["containers"] == ["sciagent.cli"]
    assert workflows["type"] == "layers" and workflows["containers"] == ["sciagent.workflows"]
    assert layers["layers"][0] == "__main__" and layers["layers"][-1] == "errors"
    assert science["type"] == "forbidden" and science["source_modules"] == ["sciagent.science"]

    completed = lint_imports(ROOT)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Contracts: 4 kept, 0 broken." in output
    assert "KEPT" in output and "BROKEN" not in output


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """``science`` (what a remote worker imports) importing ``workflows`` is reported by module name."""
    copy = tmp_path / "src" / "sciagent"
    shutil.copytree(ROOT / "src" / "sciagent", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    spec = copy / "science" / "spec.py"
    spec.write_text(spec.read_text() + "\nimport sciagent.workflows.study.runner  # upward, on purpose\n")

    completed = lint_imports(tmp_path, pythonpath=tmp_path / "src")
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output
    assert "Contracts: 2 kept, 2 broken." in output  # the layers and science's own rule (CLI, workflows hold)
    assert "sciagent.science.spec -> sciagent.workflows.study.runner" in output
