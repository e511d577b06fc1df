# Two entry points, both usable on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
# pytest-xdist processes for `make test`: the end-to-end tests wait on DVC, git and HTTP for part of their time,
# so two workers on two cores finish the suite in about three quarters of the time one takes
TEST_WORKERS ?= 2
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
	python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV)
