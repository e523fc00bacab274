# hybatch developer entry points. Each target bootstraps .venv on a fresh clone.
#   make run   migrate and start the embedded service (API + one worker) on 127.0.0.1:8000
#   make test  run the whole suite (pytest, ruff, import contracts)
#   make lint  ruff check + format check + import contracts

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml is newer than the last install.
STAMP := $(VENV)/.hybatch-installed

.PHONY: install run test lint format clean-var

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hybatch migrate
	$(BIN)/hybatch up

test: $(STAMP)
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
