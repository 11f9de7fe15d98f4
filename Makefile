# One entry point per job; every target creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest bench bench-quick demo sandbox clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy airflow_provider_mirpanel

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest bench-quick

# The benchmark of docs/performance.md (a few minutes); bench-quick is its smoke run (seconds, counts only).
bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

sandbox: $(STAMP)
	$(BIN)/python -m airflow_provider_mirpanel.sandbox --port 8765

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
