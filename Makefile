# The two set-up commands are `make demo` and `make test`; both create/refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Airflow, kfp and MLflow pin too much to share the service's environment: their own venv,
# from a fully pinned list, with this project installed beside them (see
# pipelines/requirements.txt).
PIPE_VENV := .venv-pipelines
PIPE_BIN := $(PIPE_VENV)/bin
PIPE_STAMP := $(PIPE_VENV)/.installed
TEST_WORKERS ?= auto

.PHONY: install demo serve test lint format bench clean pipelines-env pipelines-compile pipelines-test java-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

$(PIPE_STAMP): pipelines/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(PIPE_VENV)
	$(PIPE_BIN)/python -m pip install --quiet --upgrade pip
	$(PIPE_BIN)/python -m pip install --quiet -r pipelines/requirements.txt
	$(PIPE_BIN)/python -m pip install --quiet --no-deps -e .
	$(PIPE_BIN)/python -m pip check
	touch $(PIPE_STAMP)

pipelines-env: $(PIPE_STAMP)

# The Kubeflow pipeline's IR YAML; tests/pipelines checks the checked-in file is current.
pipelines-compile: $(PIPE_STAMP)
	$(PIPE_BIN)/python -m pipelines.kubeflow.pipeline pipelines/kubeflow/ride_ranking.yaml

pipelines-test: $(PIPE_STAMP)
	$(PIPE_BIN)/python -m pytest tests/pipelines

demo: $(STAMP)
	$(BIN)/featurestore demo --repo feature_repo

serve: $(STAMP)
	$(BIN)/featurestore serve --repo feature_repo

# The service's suite in .venv, then the pipelines' (Airflow, kfp, MLflow) in .venv-pipelines.
# The first runs in TEST_WORKERS processes (pytest-xdist; default one per core), each test file
# whole on one worker, so a module's fixtures are built once. Each worker has its own private
# redis-server, PostgreSQL database and Spark session (tests/conftest.py); TEST_WORKERS=0 runs
# it in one process.
# The console's browser tests drive Debian's Chromium (Playwright cannot download its own).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	sudo -n apt-get install -y chromium || apt-get install -y chromium || \
		(apt-get update && apt-get install -y chromium)

test: $(STAMP) $(PIPE_STAMP) $(CHROMIUM) java-check
	$(BIN)/python -m pytest --ignore=tests/pipelines -n $(TEST_WORKERS) --dist loadfile
	$(PIPE_BIN)/python -m pytest tests/pipelines

# The Spark tests (local[2]) need a Java 17+ runtime next to the pyspark extra.
java-check:
	@if [ -n "$$JAVA_HOME" ] && [ -x "$$JAVA_HOME/bin/java" ]; then exit 0; fi; \
	command -v java >/dev/null 2>&1 || { \
	  echo "make test needs Java 17+ for the Spark tests: install it (Debian/Ubuntu:" \
	  "apt-get install openjdk-17-jre-headless) or set JAVA_HOME"; exit 1; }

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
