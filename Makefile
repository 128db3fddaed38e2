# The README's two commands are `make run` and `make test`; everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint format bench demo-network clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

## Run the node: web server and sync worker together, on SQLite, with a demo to click through.
run: $(STAMP)
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py bootstrap_demo
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py runnode

## Install everything and run the test suite.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Two nodes on one machine (127.0.0.1:8001 and :8002), connected through a real invitation code.
demo-network: $(STAMP)
	$(BIN)/python scripts/demo_network.py

## Benchmarks (not part of the tests): the script engine; API requests and queries per synced change for each
## connector double (and a real Redmine if one answers); polling's requests per hour per tracker; then on
## SQLite, and on PostgreSQL + Redis when both answer on 127.0.0.1: the pipeline (local connection, with
## 1/2/4 workers), two nodes over loopback HTTP, and a Bulk Exalate with single edits during it. Override
## e.g. BENCH_BULK_ARGS="--items 10000" (issue #10).
BENCH_ARGS ?= --scaling 1,2,4
BENCH_NET_ARGS ?=
BENCH_BULK_ARGS ?= --items 2000
bench: $(STAMP)
	$(BIN)/python bench/bench_rules.py
	$(BIN)/python bench/bench_connectors.py
	$(BIN)/python bench/bench_polling.py
	$(BIN)/python bench/bench_pipeline.py --db sqlite $(BENCH_ARGS)
	$(BIN)/python bench/bench_network.py --db sqlite $(BENCH_NET_ARGS)
	$(BIN)/python bench/bench_bulk.py --db sqlite $(BENCH_BULK_ARGS)
	@if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then \
		$(BIN)/python bench/bench_pipeline.py --db postgres $(BENCH_ARGS) && \
		$(BIN)/python bench/bench_network.py --db postgres $(BENCH_NET_ARGS) && \
		$(BIN)/python bench/bench_bulk.py --db postgres $(BENCH_BULK_ARGS); \
	else echo "PostgreSQL or Redis not reachable on 127.0.0.1: skipping the PostgreSQL + Redis runs"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run
	DEBUG=true $(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var
