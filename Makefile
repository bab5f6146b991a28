# dawn_train: `make test` and `make demo` install what they need on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast test-slurm demo lint clean

install: $(STAMP)

# The CPU torch wheel is pinned first so that the unpinned `torch>=2.4` of setup.cfg is
# already satisfied and pip does not pull a multi-GB CUDA build on CPU-only machines.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not slurm"

# Only the jobs submitted to a real SLURM cluster (started first; needs root the first time).
test-slurm: install
	scripts/slurm_cluster.sh
	$(BIN)/python -m pytest -q -m slurm tests/launch

demo: install
	PATH=$(BIN):$$PATH bash experiments/demo/demo.sh

clean:
	rm -rf runs datasets/*/raw datasets/*/shards .pytest_cache
