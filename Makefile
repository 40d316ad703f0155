# The two commands of the README:
#   make run   set everything up, then start Sandman (simulated GPUs, SQLite)
#   make test  set everything up, then run the whole test suite
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: run test setup lint unit integration bench clean-test

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/sandman serve $(ARGS)

test:
	@bash scripts/setup.sh --for-tests
	$(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_sessions.py
	$(PY) bench/bench_planner.py
