# Two entry points for a newcomer: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: venv lock test test-fast lint browser postgres quickstart results results-digits-v3 \
	results-resnet20-pilot results-resnet20 results-resnet20-steps ui clean

## The install goes through the lock file (pip constraints): a fresh machine gets the exact
## versions the suite passed with; pyproject.toml's ranges say what may work.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## make lock: re-pin requirements.lock to what .venv holds (after upgrading a dependency
## within pyproject.toml's ranges and passing make test)
lock: venv
	{ echo "# Exact versions the test suite passed with; \`make\` installs through it (pip -c)."; \
	  echo "# Regenerate with \`make lock\` after upgrading a dependency and passing \`make test\`."; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > $(LOCK)

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

## make postgres: Debian's postgresql for the test of MLflow on PostgreSQL
## (tests/test_tracking_postgres.py starts its own throw-away cluster with initdb and pg_ctl),
## if missing. Without root or passwordless sudo it says so and goes on: that test then fails
## naming it.
APT_POSTGRES := env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
postgres:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "make postgres: PostgreSQL is missing and installing it needs root or sudo:" \
		"run 'apt-get install postgresql' as root; tests/test_tracking_postgres.py fails until then" >&2; \
		exit 0; fi; \
	$$sudo $(APT_POSTGRES) || { $$sudo apt-get update && $$sudo $(APT_POSTGRES); } || \
		echo "make postgres: apt-get could not install postgresql; tests/test_tracking_postgres.py will fail" >&2

## make test: create .venv, install, lint, run the whole suite (slow integration tests included)
## on 2 pytest-xdist workers: the tests that start Ray, servers or the browser in xdist groups
## (one per module, or module and parameter set), queued longest first in collection order
## (tests/conftest.py; hence --no-loadscope-reorder), the quick tests after them
PYTEST_PARALLEL := -n 2 --dist loadgroup --no-loadscope-reorder
test: venv lint browser postgres
	$(BIN)/python -m pytest -ra $(PYTEST_PARALLEL)

## make test-fast: skip the slow integration tests
test-fast: venv
	$(BIN)/python -m pytest -ra -m "not slow" $(PYTEST_PARALLEL)

## make quickstart: run the quickstart sweep on local Ray with MLflow in ./mlflow.db
quickstart: venv
	$(BIN)/sparsesweep run sweeps/configs/quickstart.yaml

## make results: every experiment of RESULTS.md through the sweep system, into results/
## (~2 h on an idle 2-core machine: 4,756 trials of 2-16 epochs on the actor executor; RESULTS.md says what was cut)
RUNS := sweep_results
RESULT_SWEEPS := rigl set ablations trace
results: venv
	$(BIN)/sparsesweep skew --sparsities 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.97 \
		--json --plot results/skew/skew.png > results/skew/skew.json
	for sweep in $(RESULT_SWEEPS); do \
		$(BIN)/sparsesweep run sweeps/configs/results_digits_$$sweep.yaml && \
		$(BIN)/sparsesweep report -e results_digits_$$sweep -o results/digits_$$sweep || exit 1; \
	done
	$(BIN)/sparsesweep fanin --runs $(RUNS)/results_digits_trace/train_runs \
		> results/digits_trace/fanin.jsonl
	$(BIN)/python results/mechanism.py results/digits_trace/fanin.jsonl \
		results/digits_trace/data/trials > results/digits_trace/mechanism.md
	for sweep in rigl ablations; do \
		$(BIN)/python results/lr_edges.py results/digits_$$sweep > results/digits_$$sweep/lr_edges.txt || exit 1; \
	done

## make results-digits-v3: RESULTS.md v3's digits work (issue 26), after `make results`'s
## exports: the rownorm intervention (1,280 trials, ~1 h on an idle 2-core machine), the
## per-update row trace (72 trials), the primary verdict of the v2 sweeps re-written from their
## committed exports, and every corrected number re-derived. Each sweep's wall time, CPU time
## and the machine's load go to its folder's cost.jsonl (results/measure.py).
MEASURE := $(BIN)/python results/measure.py
results-digits-v3: venv
	$(MEASURE) --log results/digits_rownorm/cost.jsonl --label "run results_digits_rownorm" -- \
		$(BIN)/sparsesweep run sweeps/configs/results_digits_rownorm.yaml
	$(MEASURE) --log results/digits_rownorm/cost.jsonl --label "report results_digits_rownorm" -- \
		$(BIN)/sparsesweep report -e results_digits_rownorm -o results/digits_rownorm
	$(BIN)/python results/interaction.py results/digits_rownorm > results/digits_rownorm/interaction.md
	$(MEASURE) --log results/digits_rowtrace/cost.jsonl --label "run results_digits_rowtrace" -- \
		$(BIN)/sparsesweep run sweeps/configs/results_digits_rowtrace.yaml
	$(BIN)/sparsesweep report -e results_digits_rowtrace -o results/digits_rowtrace
	$(BIN)/sparsesweep fanin --runs $(RUNS)/results_digits_rowtrace/train_runs \
		| gzip -n > results/digits_rowtrace/fanin.jsonl.gz
	$(BIN)/python results/row_trace.py results/digits_rowtrace/fanin.jsonl.gz \
		results/digits_rowtrace/data/trials --layer 6 --layer 3 > results/digits_rowtrace/row_trace.md
	for lr in 0.1 0.3 1.0; do \
		$(BIN)/python results/row_trace.py results/digits_rowtrace/fanin.jsonl.gz \
			results/digits_rowtrace/data/trials --lr $$lr \
			--plot results/digits_rowtrace/row_trace_lr$$lr.png || exit 1; \
	done
	for sweep in rigl set ablations; do \
		$(BIN)/python results/report_from_export.py results/digits_$$sweep/data \
			results/digits_$${sweep}_v3 || exit 1; \
	done
	$(BIN)/python results/corrections.py --rownorm results/digits_rownorm > results/corrections.md

## make results-resnet20-pilot: the pilot that fixed results-resnet20's design (8 trials of 100
## epochs: cost per trial, lr bracket, the row trace at ResNet-20 fan-in)
results-resnet20-pilot: venv
	$(MEASURE) --log results/resnet20_pilot/cost.jsonl --label "run results_resnet20_pilot" -- \
		$(BIN)/sparsesweep run sweeps/configs/results_resnet20_pilot.yaml
	$(BIN)/sparsesweep report -e results_resnet20_pilot -o results/resnet20_pilot
	$(BIN)/sparsesweep fanin --runs $(RUNS)/results_resnet20_pilot/train_runs \
		> $(RUNS)/results_resnet20_pilot/fanin.jsonl
	$(BIN)/python results/row_trace.py $(RUNS)/results_resnet20_pilot/fanin.jsonl \
		results/resnet20_pilot/data/trials --all-layers > results/resnet20_pilot/row_trace.md

## make results-resnet20: ResNet-20 on the digits at realistic fan-in (38 trials of 100 epochs,
## ~80 min of 2 idle cores, within 2 h with export, report and fanin; the spec says what was cut).
## The full fanin trace (~1.7 MB per trial) stays under $(RUNS); results/resnet20 keeps its
## per-update summary, a compact per-third series and the plots.
RESNET20_LAYERS := --layer layer1.0.conv1 --layer layer2.0.conv1 --layer layer2.2.conv2 \
	--layer layer3.0.conv1 --layer layer3.2.conv2
results-resnet20: venv
	$(MEASURE) --log results/resnet20/cost.jsonl --label "make results-resnet20 (whole target)" -- \
		$(MAKE) --no-print-directory results-resnet20-steps

results-resnet20-steps: venv
	$(MEASURE) --log results/resnet20/cost.jsonl --label "run results_resnet20" -- \
		$(BIN)/sparsesweep run sweeps/configs/results_resnet20.yaml
	$(MEASURE) --log results/resnet20/cost.jsonl --label "report results_resnet20" -- \
		$(BIN)/sparsesweep report -e results_resnet20 -o results/resnet20
	$(BIN)/sparsesweep fanin --runs $(RUNS)/results_resnet20/train_runs \
		> $(RUNS)/results_resnet20/fanin.jsonl
	$(BIN)/python results/row_trace.py $(RUNS)/results_resnet20/fanin.jsonl \
		results/resnet20/data/trials --all-layers > results/resnet20/row_trace.md
	$(BIN)/python results/row_trace.py $(RUNS)/results_resnet20/fanin.jsonl \
		results/resnet20/data/trials $(RESNET20_LAYERS) >> results/resnet20/row_trace.md
	$(BIN)/python results/row_trace.py $(RUNS)/results_resnet20/fanin.jsonl \
		results/resnet20/data/trials --all-layers --series results/resnet20/row_trace_series.csv.gz
	for lr in 0.03 0.1 0.3; do \
		$(BIN)/python results/row_trace.py $(RUNS)/results_resnet20/fanin.jsonl \
			results/resnet20/data/trials --layer layer3.2.conv2 --lr $$lr \
			--plot results/resnet20/row_trace_lr$$lr.png || exit 1; \
	done
	$(BIN)/python results/mechanism.py $(RUNS)/results_resnet20/fanin.jsonl \
		results/resnet20/data/trials --layer layer3.2.conv2 --epochs 99,100 \
		> results/resnet20/mechanism.md

ui: venv
	$(BIN)/sparsesweep ui

clean:
	rm -rf sweep_results mlflow.db mlartifacts .pytest_cache
