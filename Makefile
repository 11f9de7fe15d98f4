# One entry point per job; every target creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest bench bench-quick bench-deployment demo sandbox clean e2e e2e-celery dist

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

E2E_STAMP := $(VENV)/.installed-e2e

$(E2E_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,e2e]"
	touch $(E2E_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .  # line length 120 ([tool.ruff])

typecheck: $(STAMP)
	$(BIN)/mypy --strict --cache-dir .mypy_cache/strict airflow_provider_mirpanel  # the package, strict
	$(BIN)/mypy  # the files of [tool.mypy] in pyproject.toml: tests, benchmarks, scripts, example DAGs

# The shared budgets' tests run a real redis-server: Debian's, installed first when missing (as root; otherwise
# they are skipped, and this says what to run).
pytest: $(STAMP)
	$(BIN)/python tests/e2e/debian.py redis-server
	$(BIN)/pytest -q -m "not e2e"  # everything but the e2e deployment test; a bare `pytest` also skips the slow tests

test: lint typecheck pytest bench-quick

# The benchmark of docs/performance.md (a few minutes); bench-quick is its smoke run (seconds, counts only).
bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

# Placement of 3,000 orders without a store, with the per-task ledger and with a ledger scope (its claim on
# its own row), then four writers of one scope at once, run by a real scheduler in the deployment of make e2e
# (in .e2e/bench; 0 and 50 ms panel latency; about 11 minutes, heavy: not part of make test).
bench-deployment: $(E2E_STAMP)
	$(BIN)/python -m benchmarks --deployment

# A real Airflow deployment on 127.0.0.1 (PostgreSQL, api-server, scheduler, dag-processor, triggerer) on
# LocalExecutor driven through thirteen scenarios (issue 11's five; issue 15's asset-triggered report and balance
# watch; issue 20's concurrent writers of one ledger scope: two runs, two DAGs, mapped chunks, a retry beside a
# new run, a killed holder — 0 bought twice, 0 entries lost; issue 22's page in a browser), in .e2e/ (about
# 7 minutes), then the same on CeleryExecutor (e2e-celery, below; about 8½ minutes). README: "Production
# deployment".
e2e: $(E2E_STAMP)
	$(BIN)/pytest -m e2e tests/e2e -q -p no:cacheprovider
	$(MAKE) e2e-celery

# The same deployment on CeleryExecutor (issue 23), in .e2e-celery/: Redis (Debian's redis-server) as the broker,
# two Celery workers (worker1, worker2; 2 slots each), results in PostgreSQL; the scenarios above plus a mapped
# placement spread over both workers (13) and a worker killed with kill -9 mid-placement (14).
e2e-celery: $(E2E_STAMP)
	$(BIN)/pytest -m e2e tests/e2e -q -p no:cacheprovider --executor CeleryExecutor

# The release files: sdist and wheel in dist/, checked by twine (README: "Install into your Airflow").
dist: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,release]"
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

sandbox: $(STAMP)
	$(BIN)/python -m airflow_provider_mirpanel.sandbox --port 8765

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
