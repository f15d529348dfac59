# Two commands set everything up on a fresh machine with Python 3.11, gcc and make:
#   make run   - install, start Redis, Ray, Serve and the payment sandbox, seed a demo city
#   make test  - install, then ruff, mypy, import-linter and the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint unit bench bench-frontdoor bench-sync bench-nearby bench-memory bench-isolation bench-promotions bench-hop bench-positions chaos clean test-cluster test-multinode chaos-cluster

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

# The order loop, payments, sync, dispatch and the durable reactions run a second time
# on a Valkey cluster of three primaries with a replica each (tests/e2e/conftest.py).
CLUSTER_SUITE := tests/e2e/test_order_loop.py tests/e2e/test_payments.py \
	tests/e2e/test_sync.py tests/e2e/test_dispatch.py tests/e2e/test_crash_recovery.py \
	tests/e2e/test_cancel_and_reject.py tests/e2e/test_accept_timeout.py \
	tests/e2e/test_full_loop.py tests/e2e/test_personal_data.py

# The order loop again with every message to an entity a Ray actor call, the other way
# a host takes them (O2O_ENTITY_TRANSPORT, actors/mailroom.py).
RAY_CALL_SUITE := tests/e2e/test_order_loop.py tests/e2e/test_payments.py \
	tests/e2e/test_dispatch.py tests/e2e/test_cancel_and_reject.py

test: lint /usr/bin/chromium
	$(BIN)/pytest -q -p no:cacheprovider
	O2O_TEST_REDIS=cluster $(BIN)/pytest -q -p no:cacheprovider $(CLUSTER_SUITE)
	O2O_ENTITY_TRANSPORT=ray $(BIN)/pytest -q -p no:cacheprovider $(RAY_CALL_SUITE)
	$(BIN)/pytest -q -s -p no:cacheprovider tests/multinode

test-cluster: $(STAMP)
	O2O_TEST_REDIS=cluster $(BIN)/pytest -q -p no:cacheprovider $(CLUSTER_SUITE)

# A real two-node Ray cluster on this machine (two `ray start` processes with their own
# ports), the app deployed with `serve deploy`, autoscaled, and its worker node SIGKILLed
# under load (tests/multinode, its own session: the main run never collects it). -s
# prints the figures it measures.
test-multinode: $(STAMP)
	$(BIN)/pytest -q -s -p no:cacheprovider tests/multinode

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

# A flooding client and a slow merchant beside everybody else's placements, and a drain.
bench-isolation: $(STAMP) /usr/bin/wrk
	$(BIN)/python -m loadtests.bench_isolation

# Order events' latency with and without a 10,000-customer regional promotion in flight.
bench-promotions: $(STAMP)
	$(BIN)/python -m loadtests.bench_promotions

# One request to an entity host: a Ray actor call beside a mailbox hop, CPU per message.
bench-hop: $(STAMP)
	$(BIN)/python -m loadtests.bench_mailbox_hop

# Riders' positions, the busiest write of a city: 10,000 riders, each every 3 s.
bench-positions: $(STAMP) /usr/bin/wrk
	$(BIN)/python -m loadtests.bench_positions

# Kills each part of a running platform under load and prints what it cost.
chaos: $(STAMP)
	$(BIN)/python -m loadtests.chaos

# The same on a Valkey cluster: a primary killed under load, its replica takes over.
chaos-cluster: $(STAMP)
	$(BIN)/python -m loadtests.chaos --cluster

bench: $(VENV)/.bench /usr/bin/wrk
	$(BIN)/python -m loadtests.bench

clean:
	rm -rf $(VENV) data bench/*.tmp
