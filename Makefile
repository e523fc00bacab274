# hybatch developer entry points. Each target bootstraps .venv on a fresh clone.
#   make run   migrate and start the embedded service (API + one worker) on 127.0.0.1:8000
#   make test  run the whole suite (pytest, ruff, import contracts); installs Chromium for the
#              dashboard's browser tests from the system's packages if it is missing
#   make lint  ruff check + format check + import contracts

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml is newer than the last install. `make run` installs only
# what serving needs (RUN_STAMP); `make test` adds the bench, test and lint tooling (TEST_STAMP).
RUN_STAMP := $(VENV)/.hybatch-installed-run
TEST_STAMP := $(VENV)/.hybatch-installed-dev
# The dashboard's browser tests drive Debian's Chromium with Playwright (no browser download).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install install-dev browser test-clocks run test lint format clean-var

install: $(RUN_STAMP)

install-dev: $(TEST_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $(RUN_STAMP)

# The dev extra contains everything the runtime needs, so it stands for both stamps.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(TEST_STAMP) $(RUN_STAMP)

browser: $(CHROMIUM)

# Best effort: without Chromium the browser tests skip (and fail under HYBATCH_REQUIRE_SERVICES=1).
$(CHROMIUM):
	-$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver \
	  || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver)

run: $(RUN_STAMP)
	$(BIN)/hybatch migrate
	$(BIN)/hybatch up

test: $(TEST_STAMP) browser
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .

# The date-dependent tests again, with the clock pinned at the first hour of a month, the last hour
# of a month and on 29 February (tests/conftest.py: --clock).
CLOCK_PINS := 2027-03-01T00:20:00Z 2027-01-31T23:40:00Z 2028-02-29T12:00:00Z
test-clocks: $(TEST_STAMP) browser
	set -e; for pin in $(CLOCK_PINS); do $(BIN)/python -m pytest -q -m dated --clock=$$pin; done

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(TEST_STAMP)
	$(BIN)/ruff format .

clean-var:
	rm -rf var
