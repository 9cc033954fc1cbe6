# ZeroDoc — every target does its own set-up (uv, .venv, .env); `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
export ZERODOC_HOME ?= $(CURDIR)/var
PERSONS ?= 10000000
RUN_PERSONS ?= 20000
SEED ?= 42
SECTIONS ?= e2e,validate,api,extract,dbt,faults,cluster

.PHONY: help setup browser haproxy wrk run test test-ui bench lint serve cluster-up cluster-down clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --group dev --compile-bytecode
	@touch $@

.env: .env.example
	@if [ ! -f .env ]; then \
	  sed "s/^ZERODOC_PSEUDONYM_KEY=.*/ZERODOC_PSEUDONYM_KEY=$$($(PYTHON) -c 'import secrets;print(secrets.token_hex(32))')/" .env.example > .env; \
	  echo "created .env with a random pseudonym key"; fi
	@touch .env

setup: $(VENV)/.synced .env ## Install uv if missing, create .venv from the lock file, create .env

# The browser tests drive Debian's Chromium (never a downloaded browser); install it when missing.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

# Hangul glyphs for the pages the browser tests screenshot (names, regions): without a Korean font
# Chromium draws empty boxes where a reader of test-artifacts/ui/ expects 서울특별시.
HANGUL_FONT := /usr/share/fonts/truetype/nanum/NanumGothic.ttf
$(HANGUL_FONT):
	apt-get install -y -q fonts-nanum || (apt-get update -q && apt-get install -y -q fonts-nanum)

browser: $(CHROMIUM) $(HANGUL_FONT) ## Install Debian's Chromium and a Korean font for the browser tests (apt-get; needs root)

# The API replica test puts Debian's HAProxy (the LB of docker-compose.yaml) in front of two servers.
HAPROXY := /usr/sbin/haproxy
$(HAPROXY):
	apt-get install -y -q haproxy || (apt-get update -q && apt-get install -y -q haproxy)

haproxy: $(HAPROXY) ## Install Debian's HAProxy for the API replica test (apt-get; needs root)

# The API bench (and its tiny-scale test) drive the server with Debian's wrk.
WRK := /usr/bin/wrk
$(WRK):
	apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)

wrk: $(WRK) ## Install Debian's wrk, the API bench's load generator (apt-get; needs root)

run: setup ## Generate agency data, run the whole pipeline through Airflow, print the summary
	set -a; . ./.env; set +a; $(BIN)/zerodoc run --persons $(RUN_PERSONS) --seed $(SEED)

test: setup $(CHROMIUM) $(HANGUL_FONT) $(HAPROXY) $(WRK) ## Lint, then all tests against the real PostgreSQL and MariaDB (started if down)
	$(BIN)/ruff check dags plugins tests bench
	set -a; . ./.env; set +a; $(BIN)/pytest

lint: setup ## ruff (with Airflow rules)
	$(BIN)/ruff check dags plugins tests bench

test-ui: setup $(CHROMIUM) $(HANGUL_FONT) ## Browser tests only: pipeline, airflow standalone, headless Chromium; screenshots in test-artifacts/ui/
	set -a; . ./.env; set +a; $(BIN)/pytest tests/ui -m e2e

bench: setup $(WRK) ## Benchmarks at national scale (PERSONS=10000000, SECTIONS=e2e,validate,api,extract,dbt,faults,cluster); writes bench/results/latest.json
	set -a; . ./.env; set +a; $(BIN)/python bench/run.py --persons $(PERSONS) --seed $(SEED) --sections $(SECTIONS)

serve: setup ## Start the evidence API on 127.0.0.1:8000
	set -a; . ./.env; set +a; $(BIN)/zerodoc serve

cluster-up: setup ## Start Airflow (CeleryExecutor on PostgreSQL + Redis, 2 workers) and the evidence API on loopback
	set -a; . ./.env; set +a; $(BIN)/zerodoc cluster up

cluster-down: setup ## Stop every cluster process cleanly
	set -a; . ./.env; set +a; $(BIN)/zerodoc cluster down

clean: ## Remove generated data (var/) and test artifacts; keeps .venv
	rm -rf var test-artifacts
