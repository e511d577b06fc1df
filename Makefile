# Two entry points, both usable on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
# pytest-xdist processes for `make test`: the end-to-end tests wait on DVC, git and HTTP for part of their time,
# so two workers on two cores finish the suite in about three quarters of the time one takes
TEST_WORKERS ?= 2
# DVC stage commands call `python`: the venv's must come first.
export PATH := $(BIN):$(PATH)

# The exact version of every dependency, extras (dev, s3, bench) included: what dvc.lock was recorded with.
LOCK := requirements.lock
# The lock's tool, pinned, in an environment of its own (never part of the locked one). pip-tools resolves through
# pip, so it reads pip's configuration as `pip install` does and locks the torch build pip finds (the CPU wheel).
LOCK_TOOLS := $(abspath $(VENV))/lock-tools
LOCK_TOOL_VERSIONS := pip==26.3 pip-tools==7.6.2
# `make lock` keeps every pin it can; PIP_COMPILE_ARGS=--upgrade (or --upgrade-package NAME) moves pins on
PIP_COMPILE_ARGS ?=

.PHONY: setup repro test lock clean

setup: $(VENV)/.installed

# The lock first, then the project alone: nothing is resolved afresh, so every machine installs the same versions
$(VENV)/.installed: $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version.split()[0]; sys.exit(None if sys.version_info >= (3, 11, 5) else \
	  f"$(LOCK) needs Python 3.11.5 or later, $(PYTHON) is {v}: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(LOCK_TOOLS)/.installed:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet $(LOCK_TOOL_VERSIONS)
	touch $@

# pip-compile writes over a copy of the lock (keeping its pins), tests/lockfile.py stamps the digest of
# pyproject.toml's dependency tables and drops torch's build label (+cpu), then the copy replaces the lock.
# --unsafe-package: the project itself, which dev names (midi-pipeline[s3]), stays out of the lock, while
# setuptools (torch requires it) is pinned like the rest; --strip-extras keeps the lock usable as constraints;
# no index or find-links options: each machine's pip keeps its own.
lock: $(LOCK_TOOLS)/.installed
	if [ -f $(LOCK) ]; then cp $(LOCK) $(LOCK).new; else rm -f $(LOCK).new; fi
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --extra dev --extra s3 --extra bench \
	  --strip-extras --unsafe-package midi-pipeline --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	  --newline LF $(PIP_COMPILE_ARGS) --output-file $(LOCK).new pyproject.toml
	$(LOCK_TOOLS)/bin/python -m tests.lockfile $(LOCK).new
	mv $(LOCK).new $(LOCK)

repro: setup
	dvc repro
	python -m pipeline.summary

test: setup
	ruff check .
	python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV)
