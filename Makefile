# The two commands of the README, plus helpers. Every target sets up .venv itself (idempotent).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crossrec-installed
# one torch thread: on shared 2-core machines the default pool was measured 17x slower per step
export CROSSREC_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install book test test-fast regress regress-update bench lock clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

MERMAID_JS := book/_static/mermaid/mermaid.min.js
$(MERMAID_JS): scripts/vendor_mermaid.sh
	bash scripts/vendor_mermaid.sh

## make book: execute every chapter and build the HTML book into _build/html (warnings are errors)
book: $(STAMP) $(MERMAID_JS)
	$(BIN)/jupyter-book build . -W --keep-going

## make test: unit tests, papermill smoke runs of every chapter, CLI and experiment smoke runs
test: $(STAMP)
	$(BIN)/python -m pytest

## make test-fast: the unit tests only
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not chapter and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_throughput.py

## make lock: rewrite requirements.txt from the current venv (torch stays 2.13.0, never +cpu)
lock: $(STAMP)
	{ head -2 requirements.txt; echo "torch==2.13.0"; $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^torch==' -e '^crossrec'; } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf _build .pytest_cache .hypothesis runs
