# leadml: `make train` runs the main job on the embedded synthetic data, `make test` the test suite.
# Both create .venv and install the locked dependencies on first use.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help install system-deps test test-fast train score report forecast backtest export serve notebooks generate ingest features lint bench clean mlflow-ui

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  (extra Hydra overrides: make train ARGS='features.cadence_days=7')"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install leadml with its locked dependencies

# the benchmarks' own extra (duckdb for bench_score_floor.py), never needed by make test
BENCH_STAMP := $(VENV)/.bench-installed-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,bench]"
	@touch $(BENCH_STAMP)

CHROMIUM := /usr/bin/chromium
# the tests start their own throwaway cluster with these binaries (tests/postgres.py)
PG_INITDB := /usr/lib/postgresql/*/bin/initdb
system-deps: ## Debian's chromium and postgresql for the browser and PostgreSQL tests (installed when root with apt-get)
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else \
	    echo "note: $(CHROMIUM) is missing and cannot be installed here: the browser tests will skip"; \
	  fi; \
	fi
	@if ! ls $(PG_INITDB) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's postgresql for the PostgreSQL source and sink tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q postgresql >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }; \
	  else \
	    echo "note: the PostgreSQL server ($(PG_INITDB)) is missing and cannot be installed here:" \
	      "the PostgreSQL tests will skip"; \
	  fi; \
	fi

# test modules run on this many workers, each module whole on one (its fixtures are built once)
TEST_WORKERS ?= 2
test: $(STAMP) system-deps ## lint (ruff, the import layers) and run the test suite (TEST_WORKERS=2)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP) ## the unit tests only (pure functions, seconds): tests/unit
	$(BIN)/python -m pytest tests/unit

train: $(STAMP) ## the main job: generate (if absent), ingest, features, train, calibrate, evaluate, register
	$(BIN)/leadml-generate $(ARGS)
	$(BIN)/leadml-ingest $(ARGS)
	$(BIN)/leadml-features $(ARGS)
	$(BIN)/leadml-train $(ARGS)

score: $(STAMP) ## the nightly job: score open leads with the champion into data/scored (after make train)
	$(BIN)/leadml-score $(ARGS)

report: $(STAMP) ## the leadership report (HTML) and ranked CSV of the latest scored run (after make score)
	$(BIN)/leadml-report $(ARGS)

forecast: $(STAMP) ## funnel forecast: forward, reverse and capacity tables (after make train; capacity after make score)
	$(BIN)/leadml-forecast $(ARGS)

backtest: $(STAMP) ## rolling backtest: train before each cutoff, test on the next period (make backtest ARGS=data=bank)
	$(BIN)/leadml-backtest $(ARGS)

export: $(STAMP) ## copy the champion to models/<name>-v<version>/ with MODEL_CARD.md and SHA256SUMS (after make train)
	$(BIN)/leadml-export $(ARGS)

# the newest export unless MODEL=models/<name>-v<version> is given
MODEL ?= $(shell ls -dt models/*-v[0-9]* 2>/dev/null | head -n 1)
PORT ?= 5001
serve: $(STAMP) ## real-time endpoint on 127.0.0.1:5001 for the newest export (MODEL=models/<name>-v<n> PORT=...; after make export)
	@test -n "$(MODEL)" || { echo "no exported model in models/: run make export first"; exit 2; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local --host 127.0.0.1 --port $(PORT)

notebooks: $(STAMP) ## run both notebooks on the trained project; executed copies in reports/notebooks/ (after make train)
	@mkdir -p reports/notebooks
	$(BIN)/jupyter execute --kernel_name=python3 --output='../reports/notebooks/{notebook_name}' notebooks/01-explore-leads.ipynb notebooks/02-model-diagnostics.ipynb

mlflow-ui: $(STAMP) ## open the MLflow UI on the local tracking store (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

generate: $(STAMP) ## (re)generate the synthetic CRM: make generate ARGS='overwrite=true'
	$(BIN)/leadml-generate $(ARGS)

ingest: $(STAMP) ## validate raw data against the contracts into data/interim
	$(BIN)/leadml-ingest $(ARGS)

features: $(STAMP) ## build point-in-time training snapshots into data/features
	$(BIN)/leadml-features $(ARGS)

lint: $(STAMP) ## ruff, and the import layers of src/leadml (import-linter, contracts in pyproject.toml)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/lint-imports

bench: $(STAMP) $(BENCH_STAMP) ## benchmarks (not part of make test); results in benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_train.py --synthetic million
	$(BIN)/python benchmarks/bench_score.py
	$(BIN)/python benchmarks/bench_threads.py
	$(BIN)/python benchmarks/bench_train_busy.py --policies passive active
	$(BIN)/python benchmarks/bench_request.py
	$(BIN)/python benchmarks/bench_serve.py --root . --requests 1000
	$(BIN)/python benchmarks/bench_score_floor.py

clean: ## remove generated data and the virtual environment
	rm -rf $(VENV) data/raw data/interim data/features outputs
