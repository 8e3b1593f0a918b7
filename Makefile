# The two commands of the README: `make quickstart` (set up + main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/quickstart

.PHONY: quickstart test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/msma-jax info
	$(BIN)/msma-jax train --config configs/quickstart.py --workdir $(WORKDIR)

test: setup
	$(BIN)/python -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) outputs runs data .pytest_cache
