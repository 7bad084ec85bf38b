# Two commands for a fresh machine: `make run` (install + main job) and `make test` (install + whole suite).
# Both create .venv themselves; re-running is fast when pyproject.toml has not changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp built portable: a native build dies with "Illegal instruction" on these VMs (see DESIGN.md).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install run test lint bench clean

install: $(STAMP)

# torch first, pinned and CPU-only (the wheel on local disk where there is one; else PyTorch's CPU index),
# or pip resolves a multi-GB CUDA build for the [ml] extra (MACE).
TORCH_CPU_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl))
TORCH_SPEC ?= $(if $(TORCH_CPU_WHEEL),$(TORCH_CPU_WHEEL),torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)

$(STAMP): pyproject.toml
	-command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get install -y -qq bubblewrap || (apt-get update -qq && apt-get install -y -qq bubblewrap)); } || echo "bubblewrap could not be installed: model-written code will not run unless you pass --allow-unsandboxed-code"
	-PATH="$$PATH:/usr/sbin" command -v slurmctld >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm)); } || echo "slurm-wlm could not be installed: Slurm tests will be skipped"
	-command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)); } || echo "chromium could not be installed: the web UI's browser tests will be skipped"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[dev,ml]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sciagent run

test: $(STAMP)
	$(BIN)/ruff check .
	# One pytest-xdist worker per CPU for most tests, then alone the tests that need the whole machine.
	export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	$(BIN)/python -m pytest -n auto --dist loadgroup -m "not whole_machine"; parallel=$$?; \
	$(BIN)/python -m pytest -m whole_machine; alone=$$?; \
	test $$parallel = 0 && test $$alone = 0

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/md_overhead.py

clean:
	rm -rf $(VENV) sciagent-runs .pytest_cache .ruff_cache
