# Everything starts from a machine with only Python and make: each target builds what it needs.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
# The oldest Airflow the provider supports; `make test-min` runs the unit tests on it.
AIRFLOW_MIN_VERSION ?= 3.1.8
# The 3.2 line; `make test-3.2` runs the unit tests on it.
AIRFLOW_32_VERSION ?= 3.2.2

VENV := .venv
VENV_MIN := .venv-min
VENV_32 := .venv-3.2
BIN := $(VENV)/bin
BIN_MIN := $(VENV_MIN)/bin
BIN_32 := $(VENV_32)/bin
PIP_FLAGS := --quiet --disable-pip-version-check

# Tests and the demo never touch ~/airflow.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: help install test lint typecheck unit fuzz test-min test-3.2 dist check-dist demo demo-ui e2e test-browser test-distributed bench docs clean

help:
	@echo "make demo      run an example DAG end to end against the local RunComfy emulator"
	@echo "make demo-ui   the Airflow UI with the example DAGs and the emulator, until Ctrl-C"
	@echo "make test      ruff, mypy and every test (unit, emulator, end-to-end)"
	@echo "make unit      the fast inner loop: every test but the end-to-end ones"
	@echo "make e2e       only the end-to-end tests (real scheduler, triggerer, API server)"
	@echo "make fuzz      the property tests with thousands of examples each (FUZZ_EXAMPLES=2000)"
	@echo "make test-browser  the gallery and review in headless Chromium (apt-get install chromium)"
	@echo "make test-distributed  chaos scenarios on PostgreSQL, Redis, Celery and two triggerers"
	@echo "make test-min  unit tests on the oldest supported Airflow ($(AIRFLOW_MIN_VERSION))"
	@echo "make test-3.2  unit tests on Airflow $(AIRFLOW_32_VERSION)"
	@echo "make dist      the wheel and the sdist in dist/, checked by twine"
	@echo "make check-dist  the built wheel in a clean virtualenv: provider, gallery, example DAGs"
	@echo "make bench     benchmarks; figures go into BENCHMARKS.md"
	@echo "make bench-smoke   every benchmark (the pipeline's too) at a tiny size: does each still run?"
	@echo "make bench-pipeline  100 and 500 generations on the distributed deployment against Airflow's floor"
	@echo "make docs      the documentation site, warnings as errors, into docs/_build/html"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the project's metadata or its pinned versions change. The constraints
# files pin every package (as Airflow's own constraints do), so installs are fast and repeatable.
$(VENV)/.installed: pyproject.toml constraints/airflow-$(AIRFLOW_VERSION).txt | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[dev]" -c constraints/airflow-$(AIRFLOW_VERSION).txt
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Workers for the unit tests: they mostly wait (on the emulator, on deadlines that are the point
# of a test), so more workers than cores pay off; each worker starts its own emulator.
# `make unit WORKERS=0` runs them in one process.
WORKERS ?= 4
XDIST := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS))

# The fast inner loop: no Airflow processes are started (the emulator and small HTTP servers are).
unit: install
	$(BIN)/pytest $(XDIST) -m "not e2e and not browser and not distributed"

# The property tests (Hypothesis) run a bounded, derandomized number of examples in `unit`; here
# thousands each, random, keeping failures in .hypothesis/ so that the next run replays them first.
FUZZ_EXAMPLES ?= 2000
FUZZ_TESTS := tests/runcomfy/test_properties.py tests/triggers/test_properties.py tests/test_fail_closed.py
fuzz: install
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest \
		-m "not e2e and not browser and not distributed" $(FUZZ_TESTS)

# The browser tests run in their own target (test-browser), once; the distributed chaos scenarios
# need their own extra and run with `make test-distributed`.
test: lint typecheck unit e2e

$(BIN_MIN)/python:
	$(PYTHON) -m venv $(VENV_MIN)

$(VENV_MIN)/.installed: pyproject.toml constraints/airflow-$(AIRFLOW_MIN_VERSION).txt | $(BIN_MIN)/python
	$(BIN_MIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN_MIN)/python -m pip install $(PIP_FLAGS) -e ".[test]" -c constraints/airflow-$(AIRFLOW_MIN_VERSION).txt
	touch $@

test-min: $(VENV_MIN)/.installed
	$(BIN_MIN)/pytest $(XDIST) -m "not e2e and not distributed"

$(BIN_32)/python:
	$(PYTHON) -m venv $(VENV_32)

$(VENV_32)/.installed: pyproject.toml constraints/airflow-$(AIRFLOW_32_VERSION).txt | $(BIN_32)/python
	$(BIN_32)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN_32)/python -m pip install $(PIP_FLAGS) -e ".[test]" -c constraints/airflow-$(AIRFLOW_32_VERSION).txt
	touch $@

test-3.2: $(VENV_32)/.installed
	$(BIN_32)/pytest $(XDIST) -m "not e2e and not distributed"

# The release artifacts: a wheel with the package only, and an sdist to rebuild and test from.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The built wheel (not the source tree) in a clean virtualenv with the constraints, as a user
# installs it: Airflow lists the provider, shows the gallery and parses every example DAG.
check-dist: dist
	$(BIN)/python scripts/check_dist.py --constraints constraints/airflow-$(AIRFLOW_VERSION).txt

# One run of dreamina_image_to_video against the emulator; prints where the video and manifest are.
demo: install
	$(BIN)/python scripts/demo.py

# Airflow standalone with every example DAG and the emulator, until Ctrl-C; prints URL and login.
demo-ui: install
	$(BIN)/python scripts/demo.py --ui

# Only the end-to-end tests (a real scheduler, triggerer, dag processor and API server).
e2e: install
	$(BIN)/pytest -m "e2e and not browser" tests/e2e

# The gallery and the review in a real Airflow, driven in headless Chromium (Debian's `chromium`;
# without it the tests skip and say how to get it). Screenshots go to test-artifacts/browser/.
test-browser: install
	$(BIN)/pytest -m browser tests/e2e -rs

$(VENV)/.installed-distributed: $(VENV)/.installed
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[dev,distributed]" -c constraints/airflow-$(AIRFLOW_VERSION).txt
	touch $@

# The chaos scenarios of RELIABILITY.md on a production-shaped Airflow: PostgreSQL, Redis, the
# CeleryExecutor with two workers, two triggerers (all from pip, on 127.0.0.1), and the emulator.
# One scenario: make test-distributed DISTRIBUTED=tests/distributed/test_worker_crash.py
DISTRIBUTED ?= tests/distributed
test-distributed: $(VENV)/.installed-distributed
	$(BIN)/pytest -m distributed $(DISTRIBUTED) -rxX

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[dev,docs]" -c constraints/airflow-$(AIRFLOW_VERSION).txt
	touch $@

# The documentation site: every warning is an error (-W), and every cross-reference inside it must
# resolve (-n). The pages open from docs/_build/html/index.html; nothing is fetched from the network.
docs: $(VENV)/.installed-docs
	rm -rf docs/_build
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
	@echo "The documentation is in docs/_build/html/index.html"

# All five benchmarks (under 15 minutes on 2 cores); each prints its table and writes its section
# of BENCHMARKS.md, and the run's timings go into its summary.
bench: install
	$(BIN)/python benchmarks/run_all.py

.PHONY: bench-trigger bench-download bench-parse bench-soak bench-video bench-smoke bench-pipeline

# Every benchmark script, the pipeline's included, at its tiny --smoke size (about 3 minutes on 2
# cores); writes nothing. CI runs it so that a merge cannot break a benchmark silently.
bench-smoke: $(VENV)/.installed-distributed
	$(BIN)/python benchmarks/run_all.py --smoke

# N = 100 and 500 generations through the content pipeline's shape on PostgreSQL, Redis, Celery and
# two triggerers, against the same DAG shape built from Airflow's own deferrable wait (about an
# hour on 2 cores; outside `make bench` and its budget). Writes "Pipeline at scale" in BENCHMARKS.md.
bench-pipeline: $(VENV)/.installed-distributed
	$(BIN)/python benchmarks/pipeline.py

bench-trigger: install
	$(BIN)/python benchmarks/trigger_scale.py

bench-download: install
	$(BIN)/python benchmarks/download.py

bench-parse: install
	$(BIN)/python benchmarks/parse_cost.py

bench-soak: install
	$(BIN)/python benchmarks/soak.py

bench-video: install
	$(BIN)/python benchmarks/video.py

clean:
	rm -rf $(VENV) $(VENV_MIN) $(VENV_32) .airflow .airflow-demo demo-output .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build docs/_build
