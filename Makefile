# Everything a fresh machine needs: `make demo` and `make test` build their own virtual environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench bench-kube tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per dependency set, so `make demo` does not pull the test tools.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[plot]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $(VENV)/.runtime $@

demo: $(VENV)/.runtime
	$(BIN)/gpuscale demo

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.test
	$(BIN)/mypy

unit: $(VENV)/.test
	$(BIN)/pytest

test: lint typecheck unit

# The load tools the benchmarks drive (Debian's hey and wrk).
tools:
	@command -v hey >/dev/null && command -v wrk >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq hey wrk >/dev/null)

bench: $(VENV)/.runtime tools
	$(BIN)/python -m bench.pod_server
	$(BIN)/python -m bench.autoscale

# The Kubernetes API test server's own speed, and the operator's against it (test extras: aiohttp, kopf).
bench-kube: $(VENV)/.test
	$(BIN)/python -m bench.kube_api
	$(BIN)/python -m bench.operator_bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
