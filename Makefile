# Two commands set up a fresh machine:  `make demo` (the pipeline) and `make test` (the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every library's state in the project and quiet: the one list is rlhf.flows.env (`rlhf` and
# the tests apply it themselves; DVC started from here gets it through this).
WITH_ENV = eval "$$($(BIN)/python -m rlhf.flows.env)" &&

.PHONY: demo test test-e2e check lint types docs test-all setup data dvc-repro generated clean

demo: setup  ## install, generate the demo data, run the whole pipeline
	$(BIN)/rlhf run

test: lint types docs  ## install and run everything CI runs: lint, types, docs, the test suite
	$(BIN)/python -m pytest -q

test-e2e: setup  ## the end-to-end job: servers, a browser, DVC, fresh clones, several processes
	$(BIN)/python -m pytest -q -m e2e

check: lint types  ## the inner loop, under a minute: lint, types, the unit tests
	$(BIN)/python -m pytest -q -m "not integration and not slow and not gpu"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: setup
	PYTHON=$(BIN)/python MYPY=$(BIN)/mypy .ci/typecheck

docs: setup  ## the documentation site (docs/), built strictly: a broken link fails
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

test-all: setup  ## every test but the GPU ones: the default suite, the end-to-end job, the slow ones
	$(BIN)/python -m pytest -q -m "not gpu"

setup: $(STAMP) data

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@echo "installing into $(VENV) (about 3 minutes on a fresh machine; log: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -r requirements.lock -r requirements-dev.lock \
	  > $(VENV)/install.log 2>&1 || { tail -20 $(VENV)/install.log; exit 1; }
	@$(BIN)/python -m pip install --no-deps -e . >> $(VENV)/install.log 2>&1 \
	  || { tail -20 $(VENV)/install.log; exit 1; }
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; \
	  sys.exit(0 if v.endswith('+cpu') or torch.cuda.is_available() else f'unexpected torch {v}')"
	@mkdir -p .import-root && ln -sfn .. .import-root/rlhf  # rlhf.* for mypy, pyright, editors
	@touch $@

data: $(STAMP)  ## the demo's raw inputs; deterministic, so data.dvc stays valid
	@test -d data || $(BIN)/rlhf data

generated: setup  ## rewrite the files generated from the code: params.yaml, dvc.yaml, docs/settings.md
	$(BIN)/python -m rlhf.flows.generated

dvc-repro: setup  ## reproduce the pipeline with DVC instead of Prefect
	$(WITH_ENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean:  ## remove run outputs and stores (keeps the venv and data)
	rm -rf artifacts mlflow.db mlartifacts .prefect
