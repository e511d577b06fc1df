# Two entry points, both usable on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
# DVC stage commands call `python`: the venv's must come first.
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	dvc repro
	python -m pipeline.summary

test: setup
	ruff check .
	python -m pytest

clean:
	rm -rf $(VENV)
