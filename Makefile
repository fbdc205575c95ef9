# Everything starts from a machine with only Python and make: each target builds what it needs.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
# The oldest Airflow the provider supports; `make test-min` runs the unit tests on it.
AIRFLOW_MIN_VERSION ?= 3.1.8

VENV := .venv
VENV_MIN := .venv-min
BIN := $(VENV)/bin
BIN_MIN := $(VENV_MIN)/bin
PIP_FLAGS := --quiet --disable-pip-version-check

# Tests and the demo never touch ~/airflow.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: help install test lint typecheck unit test-min demo demo-ui bench clean

help:
	@echo "make demo      run an example DAG end to end against the local RunComfy emulator"
	@echo "make test      ruff, mypy and every test (unit, emulator, end-to-end)"
	@echo "make test-min  unit tests on the oldest supported Airflow ($(AIRFLOW_MIN_VERSION))"
	@echo "make bench     benchmarks; figures go into BENCHMARKS.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint typecheck unit

$(BIN_MIN)/python:
	$(PYTHON) -m venv $(VENV_MIN)

$(VENV_MIN)/.installed: pyproject.toml | $(BIN_MIN)/python
	$(BIN_MIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN_MIN)/python -m pip install $(PIP_FLAGS) -e ".[test]" "apache-airflow==$(AIRFLOW_MIN_VERSION)"
	touch $@

test-min: $(VENV_MIN)/.installed
	$(BIN_MIN)/pytest -m "not e2e"

demo: install
	$(BIN)/python -m airflow_provider_dreamina.emulator.smoke

demo-ui: install
	@echo "make demo-ui arrives with the example DAGs"; exit 1

bench: install
	@echo "benchmarks arrive with their issue"; exit 1

clean:
	rm -rf $(VENV) $(VENV_MIN) .airflow .pytest_cache .mypy_cache .ruff_cache dist build
