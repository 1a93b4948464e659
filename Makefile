# gnbench: `make bench` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint format smoke bench bench-quick ladder ladder-quick clean slurm-start slurm-stop

install: $(STAMP)  ## Create .venv; install gnbench with its bench, ladder and dev extras (idempotent).

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[bench,ladder,dev]'
	touch $(STAMP)

# XLA fixes the device count per process: the suite runs on 1 fake CPU device, then the
# multidevice tests (sharding, data parallelism) on 8 (tests/conftest.py). Both always run.
# The 1-device pass runs in TEST_WORKERS pytest-xdist workers, a test file per worker at a time
# (its session fixtures, e.g. a prepared corpus, built once per worker that needs them).
TEST_WORKERS ?= 2
test: install  ## Run the whole test suite (what CI runs).
	GNBENCH_TEST_DEVICES=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile \
		-m "not multidevice" tests; one=$$?; \
	GNBENCH_TEST_DEVICES=8 $(BIN)/pytest -q -m multidevice tests; eight=$$?; \
	test $$one -eq 0 && test $$eight -eq 0

# The edit loop: the optimizers' math and contracts, config validation and CLI errors, data,
# docs; not the trainer, model, sweeps, report, experiment builds, subprocess runs, Flax
# container and transformer-scale optimizer checks (marked slow) or multi-device tests.
FAST_TESTS := tests/optim tests/data tests/test_cli_errors.py tests/test_docs.py
test-fast: install  ## The fast tier (< 3 min): make test runs these too.
	GNBENCH_TEST_DEVICES=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile \
		-m "not slow and not multidevice" $(FAST_TESTS)

# A throwaway one-node SLURM cluster on loopback (needs slurm-wlm and root); then
# `export SLURM_CONF=$(SLURM_DIR)/slurm.conf` and `make test` uses it for tests/launch/.
SLURM_DIR ?= /tmp/gnbench-slurm

slurm-start:  ## Start the local SLURM cluster (launch/local_slurm.sh) under $(SLURM_DIR).
	launch/local_slurm.sh start $(SLURM_DIR)

slurm-stop:  ## Stop it.
	launch/local_slurm.sh stop $(SLURM_DIR)

lint: install  ## ruff lint and format check.
	$(BIN)/ruff check gnbench tests experiments examples benchmarks launch
	$(BIN)/ruff format --check gnbench tests experiments examples benchmarks launch

format: install
	$(BIN)/ruff format gnbench tests experiments examples benchmarks launch
	$(BIN)/ruff check --fix gnbench tests experiments examples benchmarks launch

smoke: install  ## A 5-iteration tiny run.
	$(BIN)/gnbench train --config experiments/tiny.py --config.train.steps=5 \
		--config.train.workdir=runs/smoke --config.wandb.mode=disabled

bench: install  ## Fetch the corpus, run the benchmark (critical_batch_tiny), write the report.
	$(BIN)/gnbench data prepare --source shakespeare --tokenizer byte
	$(BIN)/gnbench sweep experiments/critical_batch_tiny.py --executor local --parallel 2 --out runs
	@echo "bench: report in runs/critical_batch_tiny/report.md; runs and logs in runs/critical_batch_tiny/runs/"

bench-quick: install  ## The same pipeline on a small grid (< 5 minutes).
	$(BIN)/gnbench data prepare --source shakespeare --tokenizer byte
	$(BIN)/gnbench sweep experiments/critical_batch_tiny.py --quick --executor local --parallel 2 --out runs
	@echo "bench-quick: report in runs/critical_batch_tiny_quick/report.md"

ladder: install  ## The approximation ladder (experiments/ladder_tiny.py), reusing make bench's runs.
	$(BIN)/gnbench data prepare --source shakespeare --tokenizer byte
	$(BIN)/gnbench sweep experiments/ladder_tiny.py --executor local --parallel 2 --out runs
	@echo "ladder: report in runs/ladder_tiny/report.md"

ladder-quick: install  ## The ladder's pipeline on a small grid.
	$(BIN)/gnbench data prepare --source shakespeare --tokenizer byte
	$(BIN)/gnbench sweep experiments/ladder_tiny.py --quick --executor local --parallel 2 --out runs
	@echo "ladder-quick: report in runs/ladder_tiny_quick/report.md"

clean:
	rm -rf runs/smoke

.PHONY: accelerator-check
# Runs with $(PYTHON) as is (no install: the machine may have only jax, flax, optax and numpy).
accelerator-check:  ## Numerics, speed and training of every method on this accelerator (< 8 min).
	$(PYTHON) benchmarks/accelerator_check.py $(ACCELERATOR_CHECK_ARGS)
