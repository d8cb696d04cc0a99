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
# the experiment runner trains independent trials in this many processes (one thread each) when
# building or checking the book; the smoke tests keep one (pytest already runs two files at once)
BOOK_WORKERS ?= 2

.PHONY: install book test test-fast regress regress-update bench bench-peer lock clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# mermaid and MathJax are vendored from the npm registry so the built book loads nothing from a CDN
VENDORED := book/_static/mermaid/VERSION book/_static/mathjax/VERSION
$(VENDORED): scripts/vendor_mermaid.sh
	bash scripts/vendor_mermaid.sh

# Jupyter Book's execution cache only notices edits to a chapter's code cells; a change to the
# package must re-execute the chapters too (the experiment runner's own cache keys on the code)
PKG_STAMP := _build/.package-stamp
$(PKG_STAMP): $(shell find crossrec_lit -name '*.py' 2>/dev/null) _config.yml
	rm -rf _build/.jupyter_cache
	@mkdir -p _build && touch $@

## make book: execute every chapter and build the HTML book into _build/html (warnings are errors)
book: $(STAMP) $(VENDORED) $(PKG_STAMP)
	CROSSREC_WORKERS=$(BOOK_WORKERS) $(BIN)/jupyter-book build . -W --keep-going

## make test: unit tests, papermill smoke runs of every chapter, CLI and experiment smoke runs,
## then the browser check of the site built from the chapters' smoke runs
test: $(STAMP) $(VENDORED)
	$(BIN)/python -m pytest -n 2 --dist loadfile --ignore=tests/test_site.py -m "not book"
	$(BIN)/python -m pytest tests/test_site.py

## make test-fast: the unit tests only
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not chapter and not slow"

## make regress: run every chapter with the book's parameters and compare with tests/baselines/
regress: $(STAMP)
	CROSSREC_WORKERS=$(BOOK_WORKERS) $(BIN)/python tests/regress.py check
	CROSSREC_WORKERS=$(BOOK_WORKERS) $(BIN)/python -m pytest -m book

## make regress-update: rewrite the baselines (runs every chapter for 3 seeds; deliberate)
regress-update: $(STAMP)
	CROSSREC_WORKERS=$(BOOK_WORKERS) $(BIN)/python tests/regress.py update

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_throughput.py

## make bench-peer: BPR-MF against RecBole 1.2.1 in its own venv (.venv-recbole, created on first run),
## with the package's kernels in a bare loop beside them (the most any training loop gets)
bench-peer: $(STAMP)
	$(BIN)/python benchmarks/peer_recbole.py --ceiling

## make lock: rewrite requirements.txt from the current venv (torch stays 2.13.0, never +cpu)
lock: $(STAMP)
	{ head -2 requirements.txt; echo "torch==2.13.0"; $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^torch==' -e '^crossrec'; } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf _build .pytest_cache .hypothesis runs artifacts
