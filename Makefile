# Inside language models: build the book and run the tests.
#
#   make book   create .venv if needed, then build the book into _build/html
#               (notebooks executed, results cached, warnings are errors)
#   make test   `make book`, then the whole test suite (unit tests, the site in a headless
#               chromium, nbval over solutions/)
#
# Helpers: make venv | make labs | make artefacts | make clean | make help
# Use another interpreter with e.g. `make book PYTHON=python3.11`.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIPLOG := $(VENV)/.pip-install.log

# Nothing at build or test time may reach a model hub: fail fast instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# The book's kernels have no ipywidgets (widgets need JavaScript the offline site cannot load):
# tqdm.auto's warning that they are missing is the one warning silenced here (utils/progress.py).
export PYTHONWARNINGS := ignore:IProgress not found
# The notebooks that the book build and nbval run check every number the book quotes against
# what they compute (utils/results.py); `store-outputs` records them.
export COURSE_RESULTS := check
# The browser tests (tests/test_site.py) drive the system chromium: Playwright never downloads one.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

BOOK_FLAGS   ?= -W -n --keep-going
PYTEST_FLAGS ?= -n 2 --dist loadscope
NBVAL_FLAGS  := --nbval-lax --nbval-kernel-name python3 --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: help book test venv labs artefacts clean check-python

help:
	@echo "make book   build the book into _build/html (creates .venv on first use)"
	@echo "make test   build the book, then run the whole test suite"
	@echo "helpers:    make venv | make labs | make artefacts (after a retrain) | make clean"

check-python:
	@$(PYTHON) scripts/check_env.py

# Re-install only when the requirements or the package metadata changed.
$(STAMP): requirements.txt pyproject.toml scripts/check_env.py
	@command -v $(PYTHON) >/dev/null || { echo "error: '$(PYTHON)' not found; this course needs Python 3.10-3.12 (e.g. make book PYTHON=python3.11)" >&2; exit 1; }
	@$(PYTHON) scripts/check_env.py
	@if [ ! -x $(VPY) ]; then \
	  echo "creating $(VENV) with $$($(PYTHON) -c 'import sys; print(sys.executable)')"; \
	  $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv $(VENV)' failed (see above)" >&2; exit 1; }; \
	fi
	@$(VPY) scripts/check_env.py
	@echo "installing requirements into $(VENV) (log: $(PIPLOG))"
	@$(VPY) -m pip install --disable-pip-version-check -r requirements.txt 2>&1 | tee $(PIPLOG) \
	  || $(VPY) scripts/check_env.py pip-failed $(PIPLOG)
	@$(VPY) -m pip install --disable-pip-version-check -e . --no-deps 2>&1 | tee -a $(PIPLOG) \
	  || $(VPY) scripts/check_env.py pip-failed $(PIPLOG)
	@touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --builder html $(BOOK_FLAGS)
	@echo "book: $(CURDIR)/_build/html/index.html"

# The warnings-as-errors book build is part of the test. nbval runs two notebook kernels side by
# side (PYTEST_FLAGS): one torch thread each, or the two cores are oversubscribed (several times slower).
test: book
	@test -f tests/nbval_sanitize.cfg
	$(VPY) -m pytest tests $(PYTEST_FLAGS)
	@if ls solutions/*.ipynb >/dev/null 2>&1; then \
	  echo "OMP_NUM_THREADS=1 $(VPY) -m pytest $(NBVAL_FLAGS) $(PYTEST_FLAGS) solutions/"; \
	  OMP_NUM_THREADS=1 $(VPY) -m pytest $(NBVAL_FLAGS) $(PYTEST_FLAGS) solutions/; \
	else echo "no solutions/*.ipynb yet: nbval skipped"; fi

# Regenerate the exercise notebooks labs/*.ipynb from solutions/*.ipynb: first rewrite each
# solution's colab-install cell from pyproject.toml (version, repository) and ruff-format the
# solutions' code cells, then build the labs, then check the conventions (python -m
# utils.notebooks --help for the other commands).
labs: $(STAMP)
	$(VPY) -m utils.notebooks sync
	$(VPY) -m utils.notebooks format
	$(VPY) -m utils.notebooks build-labs
	$(VPY) -m utils.notebooks lint

# After `python -m utils.course_model train`: rebuild everything derived from the course model, in
# order (model card, adapters, tuned lens, SAEs, then every solution's stored outputs and recorded
# results, then the labs). About 35 minutes on 2 CPU cores; no GPU.
artefacts: $(STAMP)
	$(VPY) -m utils.course_model evaluate
	$(VPY) -m utils.finetune
	$(VPY) -m utils.tuned_lens
	$(VPY) -m utils.sae
	for notebook in solutions/[0-9][0-9]_*.ipynb; do $(VPY) -m utils.notebooks store-outputs $$notebook; done
	$(MAKE) labs

clean:
	rm -rf _build .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -print | xargs rm -rf
