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
HOST ?= 127.0.0.1
PORT ?= 8000
LOCATION ?=
DEPLOY ?= none
AZUREML_MLFLOW_STAMP := $(VENV)/.installed-azureml-mlflow

.PHONY: help setup setup-test setup-azure demo test test-fast lint format check-workflows serve publish release bench bench-detection clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

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

# azureml-mlflow lets MLflow talk to a workspace (azureml:// tracking URIs) from outside Azure
# ML (CI's publish and release jobs). It declares mlflow-skinny<=3.15 while the project pins
# mlflow 3.17.2, so it is installed without dependencies (its own are already here).
$(AZUREML_MLFLOW_STAMP): $(AZURE_STAMP)
	$(PY) -m pip install --quiet --no-deps "azureml-mlflow==1.62.0.post6"
	touch $(AZUREML_MLFLOW_STAMP)

# Azurite (the Azure Storage emulator the blob datastore tests use), pinned in package-lock.json.
$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@command -v npm >/dev/null || { echo "make setup: npm not found; install Node.js 20+ (the tests run Azurite from node_modules)" >&2; exit 1; }
	if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	touch $(NODE_STAMP)

setup: $(STAMP)  ## create .venv and install videoanom with its dev tools

setup-test: $(STAMP) $(AZURE_STAMP) $(NODE_STAMP)  ## setup, plus both Azure ML SDKs and Azurite (npm)

setup-azure: $(AZURE_STAMP) $(AZUREML_MLFLOW_STAMP)  ## setup, plus both Azure ML SDKs and azureml-mlflow (CI's Azure jobs)

demo: setup  ## generate demo data (if absent) and train a detector for every demo location
	$(PY) -m ml_service.demo --datastore $(DATASTORE) --locations $(DEMO_LOCATIONS)

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check-workflows: setup  ## validate the CI files (GitHub, Azure Pipelines, dependabot) against their schemas, offline
	$(PY) -m ml_service.util.ci_files

serve: setup  ## the scoring service for the registered models (after make demo); HOST, PORT (127.0.0.1:8000)
	$(VENV)/bin/videoanom serve --host $(HOST) --port $(PORT)

publish: setup-azure  ## publish the pipelines on Azure ML and (re)create the master's schedule
	$(VENV)/bin/videoanom azure publish
	$(VENV)/bin/videoanom azure schedule

# LOCATION and DEPLOY reach the shell as environment variables, never pasted into the
# command line: a location name cannot inject a command.
release: export LOCATION := $(LOCATION)
release: export DEPLOY := $(DEPLOY)
release: setup-azure  ## release gate for LOCATION=<name>, then deploy (DEPLOY=none|azureml-v2|azureml-v1)
	@test -n "$$LOCATION" || { echo "make release: set LOCATION=<location>" >&2; exit 2; }
	$(VENV)/bin/videoanom release --location "$$LOCATION" --deploy "$$DEPLOY"

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
