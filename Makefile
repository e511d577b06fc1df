# Two entry points, both usable on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup repro test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	$(BIN)/dvc repro
	$(BIN)/python -m pipeline.summary

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
