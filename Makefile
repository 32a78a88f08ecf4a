# Two entry points for a newcomer: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint quickstart ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make test: create .venv, install, lint, run the whole suite (slow integration tests included)
test: venv lint
	$(BIN)/python -m pytest -ra

## make test-fast: skip the slow integration tests
test-fast: venv
	$(BIN)/python -m pytest -ra -m "not slow"

## make quickstart: run the quickstart sweep on local Ray with MLflow in ./mlflow.db
quickstart: venv
	$(BIN)/sparsesweep run sweeps/configs/quickstart.yaml

ui: venv
	$(BIN)/sparsesweep ui

clean:
	rm -rf sweep_results mlflow.db mlartifacts .pytest_cache
