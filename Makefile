# tradeforge — every target sets up .venv itself when needed, so each is the only command a new user types.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: install run dashboard test test-fast lint browser bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@mkdir -p data mlruns
	@touch $(STAMP)

install: $(STAMP)

## run: the platform on 127.0.0.1 — Prefect (4200), MLflow UI (5000), dashboard (8501), paper runtime on the
## built-in sample market; the first start bootstraps demo content. No network, no keys. Ctrl-C stops it all.
run: install
	$(BIN)/tradeforge up

## dashboard: only the dashboard, on 127.0.0.1:8501 (reads the same settings and state as everything else, and
## asks for the same operator credential); the viewer's toolbar: no developer menu, no Deploy button
dashboard: install
	$(BIN)/streamlit run dashboards/app.py --server.address 127.0.0.1 --server.port 8501 \
		--server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy --strict pipeline runtime
	$(BIN)/lint-imports

## browser: Debian's Chromium and its driver for the real-browser dashboard test (a downloaded browser does not
## run here); installed once, when missing
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: lint browser
	$(BIN)/python -m pytest

## test-fast: everything but the tests marked slow (system tests, drills): a developer's loop
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/optimize.py
	$(BIN)/python bench/live_feed.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache .mypy_cache .ruff_cache
