# The two commands of the README: `make quickstart` (set up + main job) and `make test`.
# quickstart installs what the package needs to run; test adds the dev extras (pytest, torch, ...).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/quickstart

.PHONY: quickstart test setup setup-dev clean

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/msma-jax info
	$(BIN)/msma-jax train --config configs/quickstart.py --workdir $(WORKDIR)

test: setup-dev
	$(BIN)/python -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) outputs runs data .pytest_cache
