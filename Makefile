# Two entry points for a newcomer: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint browser quickstart results ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make browser: Debian's chromium for the dashboard test (tests/test_dashboard.py), if missing.
## Without root or passwordless sudo it says so and goes on: that test then fails naming it.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "make browser: $(CHROMIUM) is missing and installing it needs root or sudo:" \
		"run 'apt-get install chromium' as root; tests/test_dashboard.py fails until then" >&2; \
		exit 0; fi; \
	$$sudo $(APT_CHROMIUM) || { $$sudo apt-get update && $$sudo $(APT_CHROMIUM); } || \
		echo "make browser: apt-get could not install chromium; tests/test_dashboard.py will fail" >&2

## make test: create .venv, install, lint, run the whole suite (slow integration tests included)
test: venv lint browser
	$(BIN)/python -m pytest -ra

## make test-fast: skip the slow integration tests
test-fast: venv
	$(BIN)/python -m pytest -ra -m "not slow"

## make quickstart: run the quickstart sweep on local Ray with MLflow in ./mlflow.db
quickstart: venv
	$(BIN)/sparsesweep run sweeps/configs/quickstart.yaml

## make results: every experiment of RESULTS.md through the sweep system, into results/
## (~3 h on an idle 2-core machine: Ray's per-trial start-up dominates 536 tiny trials)
RUNS := sweep_results
results: venv
	$(BIN)/sparsesweep skew --sparsities 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.97 \
		--json --plot results/skew/skew.png > results/skew/skew.json
	for sweep in results_digits_budget results_digits_budget_set results_digits_ablations; do \
		$(BIN)/sparsesweep run sweeps/configs/$$sweep.yaml && \
		$(BIN)/sparsesweep report -e $$sweep -o results/$${sweep#results_} || exit 1; \
	done
	for sweep in digits_budget digits_budget_set; do \
		$(BIN)/sparsesweep fanin --runs $(RUNS)/results_$$sweep/train_runs \
			> results/$$sweep/fanin.jsonl && \
		$(BIN)/python results/fanin_vs_accuracy.py results/$$sweep/fanin.jsonl \
			results/$$sweep/data/trials > results/$$sweep/fanin_table.md || exit 1; \
	done

ui: venv
	$(BIN)/sparsesweep ui

clean:
	rm -rf sweep_results mlflow.db mlartifacts .pytest_cache
