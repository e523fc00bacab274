# hybatch developer entry points. Each target bootstraps .venv on a fresh clone.
#   make run   migrate and start the embedded service (API + one worker) on 127.0.0.1:8000
#   make test  run the whole suite (pytest, ruff, import contracts); installs Chromium for the
#              dashboard's browser tests from the system's packages if it is missing
#   make lint  ruff check + format check + import contracts

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml is newer than the last install.
STAMP := $(VENV)/.hybatch-installed
# The dashboard's browser tests drive Debian's Chromium with Playwright (no browser download).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install browser run test lint format clean-var

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

browser: $(CHROMIUM)

# Best effort: without Chromium the browser tests skip (and fail under HYBATCH_REQUIRE_SERVICES=1).
$(CHROMIUM):
	-$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver \
	  || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver)

run: $(STAMP)
	$(BIN)/hybatch migrate
	$(BIN)/hybatch up

test: $(STAMP) browser
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .

clean-var:
	rm -rf var
