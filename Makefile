# The two commands of the README: `make demo` and `make test`. Each sets everything up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extras installed by setup. llama-cpp-python is built from source: without native CPU flags,
# since the native build crashes in decode on some CPUs (AMX path, llama.cpp #20824). pip keeps
# the built wheel in its cache, so later setups reuse it instead of rebuilding.
# `make test` runs every loader against a real model, so the default installs all of them.
EXTRAS ?= dev,all
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK = 1

STAMP := $(VENV)/.mlsup-setup

.PHONY: setup demo test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mlsup demo

lint: setup
	$(VENV)/bin/ruff check mlsup tests
	$(VENV)/bin/ruff format --check mlsup tests

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest tests/unit -q

test: lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(VENV)/bin/mlsup bench --json benchmarks/results/latest.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
