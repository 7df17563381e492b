# Two commands on a fresh machine: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test eval lint test-services clean

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.runtime
	$(BIN)/python -m devstack

# Real servers the tests start themselves (Debian's prometheus and prometheus-alertmanager), installed when missing.
test-services:
	sh scripts/install-test-services.sh

test: $(VENV)/.dev test-services
	$(BIN)/python -m pytest

# Scenario evaluation: every scenario's world in real back-ends, the real product, scored (see README, Evaluation).
# `make eval SCENARIOS=path` for another directory; `make eval EVAL_ARGS="--jobs 4 --out /tmp/eval --no-llm"`.
SCENARIOS ?= ../shared/scenarios
EVAL_ARGS ?=

eval: $(VENV)/.dev test-services
	$(BIN)/python -m evals $(SCENARIOS) $(EVAL_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
