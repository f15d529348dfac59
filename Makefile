# Two commands set everything up on a fresh machine with Python 3.11, gcc and make:
#   make run   - install, start Redis, Ray, Serve and the payment sandbox, seed a demo city
#   make test  - install, then ruff, mypy, import-linter and the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint unit bench bench-frontdoor bench-sync bench-nearby bench-memory chaos clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Dev mode on loopback: tokens from /v1/auth/dev-token, the default secrets.
run: $(STAMP)
	$(BIN)/o2o up --dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The page tests drive Debian's Chromium; Playwright's own browsers are never downloaded.
/usr/bin/chromium:
	apt-get install -y chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y chromium; }

test: lint /usr/bin/chromium
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

# wrk, the load generator of the benchmarks, comes from Debian's packages.
/usr/bin/wrk:
	apt-get install -y wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y wrk; }

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(VENV)/.bench

bench-frontdoor: $(STAMP) /usr/bin/wrk
	$(BIN)/python -m loadtests.frontdoor

bench-sync: $(STAMP)
	$(BIN)/python -m loadtests.bench_sync --replicas 4

bench-nearby: $(STAMP) /usr/bin/wrk
	$(BIN)/python -m loadtests.bench_nearby

bench-memory: $(STAMP) /usr/bin/wrk
	$(BIN)/python -m loadtests.bench_memory

# Kills each part of a running platform under load and prints what it cost.
chaos: $(STAMP)
	$(BIN)/python -m loadtests.chaos

bench: $(VENV)/.bench /usr/bin/wrk
	$(BIN)/python -m loadtests.bench

clean:
	rm -rf $(VENV) data bench/*.tmp
