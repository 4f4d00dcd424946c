# The README's two commands: `make up` (run the venue) and `make test` (run the tests).
# Both install what is missing first (see scripts/setup.sh).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# pytest workers for `make test`: the tests mostly wait on brokers and timers, so three share
# two cores well (measured 10 min for pytest run serially, 6 min with three workers)
WORKERS ?= 3

.PHONY: setup up test test-all lint bench clean

setup:
	@bash scripts/setup.sh

up: setup
	$(VENV)/bin/plaza up $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -n $(WORKERS)
	$(VENV)/bin/pytest -m e2e

test-all: setup
	$(VENV)/bin/pytest -m ""

bench: setup
	$(VENV)/bin/plaza bench presence
	$(VENV)/bin/plaza bench reservations
	$(VENV)/bin/plaza bench fanout

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
