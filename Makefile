# tradeforge — every target sets up .venv itself when needed, so each is the only command a new user types.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@mkdir -p data mlruns
	@touch $(STAMP)

install: $(STAMP)

## run: bootstrap the lake with the built-in sample market, report its health, backtest it (no network, no keys)
run: install
	$(BIN)/tradeforge ingest --source sample --symbol BTC/USDT --timeframe 1h
	$(BIN)/tradeforge ingest --source sample --symbol ETH/USDT --timeframe 1h
	$(BIN)/tradeforge ingest --source sample --symbol AAPL --timeframe 1d
	$(BIN)/tradeforge data health
	$(BIN)/tradeforge backtest --strategy golden_cross --symbol BTC/USDT --timeframe 1h --max-position 1.0
	$(BIN)/tradeforge doctor

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy --strict pipeline runtime
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/runtime.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache .mypy_cache .ruff_cache
