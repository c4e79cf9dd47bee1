# The two set-up commands are `make demo` and `make test`; both create/refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/featurestore demo --repo feature_repo

serve: $(STAMP)
	$(BIN)/featurestore serve --repo feature_repo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks are not tests: each compares us with stock Feast and prints JSON.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.generator_bench --rows 1000000 10000000
	$(BIN)/python -m benchmarks.materialize_bench
	$(BIN)/python -m benchmarks.pit_bench --case small
	$(BIN)/python -m benchmarks.serve_bench
	$(BIN)/python -m benchmarks.soak_bench

clean:
	rm -rf feature_repo/data/*.parquet feature_repo/data/registry.db feature_repo/data/redis
