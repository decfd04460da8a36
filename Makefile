# videoanom: `make demo` and `make test` each set up everything they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURE_STAMP := $(VENV)/.installed-azure
NODE_STAMP := node_modules/.installed
DATASTORE ?= data/datastore
DEMO_LOCATIONS ?= 2

.PHONY: help setup setup-test demo test test-fast lint format bench bench-detection clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "videoanom needs Python 3.11; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Both Azure ML SDKs (extras azure-v1, azure-v2): the tests build their pipelines offline.
$(AZURE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,azure-v1,azure-v2]"
	touch $(AZURE_STAMP)

# Azurite (the Azure Storage emulator the blob datastore tests use), pinned in package-lock.json.
$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@command -v npm >/dev/null || { echo "make setup: npm not found; install Node.js 20+ (the tests run Azurite from node_modules)" >&2; exit 1; }
	if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	touch $(NODE_STAMP)

setup: $(STAMP)  ## create .venv and install videoanom with its dev tools

setup-test: $(STAMP) $(AZURE_STAMP) $(NODE_STAMP)  ## setup, plus both Azure ML SDKs and Azurite (npm)

demo: setup  ## generate demo data (if absent) and train a detector for every demo location
	$(PY) -m ml_service.demo --datastore $(DATASTORE) --locations $(DEMO_LOCATIONS)

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup-test lint  ## lint, then every test (slow ones included)
	$(VENV)/bin/pytest

test-fast: setup-test  ## the tests not marked slow
	$(VENV)/bin/pytest -m "not slow"

bench: setup-test  ## PredNet, scoring throughput, master poll time and latency -> docs/benchmarks.md (~15 min)
	$(PY) bench/bench_prednet.py --output docs/benchmarks.md
	$(PY) bench/bench_scoring.py --output docs/benchmarks.md
	$(PY) bench/bench_master.py --output docs/benchmarks.md

bench-detection: setup  ## detection AUCs on unseen demo seeds + UCSD layout -> docs/detection.md (~30 min)
	$(PY) bench/eval_detection.py --out docs/detection.md

clean:  ## remove local state and demo data (never the venv)
	rm -rf .videoanom data/datastore
