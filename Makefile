# Two commands set up a fresh machine:  `make demo` (the pipeline) and `make test` (the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Keep every library's state in the project and quiet (see flows/env.py for the same list).
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR ?= $(CURDIR)/.dvc/tmp/site
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1

.PHONY: demo test test-all setup data dvc-repro clean

demo: setup  ## install, generate the demo data, run the whole pipeline
	$(BIN)/rlhf run

test: setup  ## install and run the test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-all: setup  ## also the slow tests
	$(BIN)/python -m pytest -q -m "slow or not slow"

setup: $(STAMP) data

$(STAMP): requirements.lock pyproject.toml
	@echo "installing into $(VENV) (about 3 minutes on a fresh machine; log: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -r requirements.lock > $(VENV)/install.log 2>&1 \
	  || { tail -20 $(VENV)/install.log; exit 1; }
	@$(BIN)/python -m pip install --no-deps -e . >> $(VENV)/install.log 2>&1 \
	  || { tail -20 $(VENV)/install.log; exit 1; }
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; \
	  sys.exit(0 if v.endswith('+cpu') or torch.cuda.is_available() else f'unexpected torch {v}')"
	@touch $@

data: $(STAMP)  ## the demo's raw inputs; deterministic, so data.dvc stays valid
	@test -d data || $(BIN)/rlhf data

dvc-repro: setup  ## reproduce the pipeline with DVC instead of Prefect
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean:  ## remove run outputs and stores (keeps the venv and data)
	rm -rf artifacts mlflow.db mlartifacts .prefect
