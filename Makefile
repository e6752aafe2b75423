# Sovereign Gateway — two commands: `make run` (local demo) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LLAMA_VERSION := 0.3.36
# llama-cpp-python compiles once (several minutes): the wheel is kept in a git-ignored folder
# and mirrored in the user cache so fresh clones on the same machine reuse it.
WHEELS := .cache/wheels
USER_WHEELS := $(HOME)/.cache/sovereign-gateway/wheels
LLAMA_WHEEL_GLOB := llama_cpp_python-$(LLAMA_VERSION)-*.whl
STAMP := $(VENV)/.installed

.PHONY: run test install lint clean-venv bench bench-quick bench-soak

run: $(STAMP)
	$(BIN)/gateway up --config gateway.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

# Gateway overhead vs direct / aiohttp floor / LiteLLM proxy (benchmarks/README.md): ~12-15 min;
# bench-quick ~3 min; bench-soak 30 min steady load with RSS sampled (SOAK=minutes).
# `hey` (Debian package) is used for saturation when installed. BENCH_ARGS passes more flags.
BENCH_STAMP := $(VENV)/.bench-installed
SOAK ?= 30

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_bench.py --wait-load 0.7 $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_bench.py --quick $(BENCH_ARGS)

bench-soak: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_bench.py --soak $(SOAK) $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway adapters tests
	$(BIN)/mypy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel

$(WHEELS)/.llama-$(LLAMA_VERSION): | $(BIN)/python
	@mkdir -p $(WHEELS) $(USER_WHEELS)
	@if ls $(WHEELS)/$(LLAMA_WHEEL_GLOB) >/dev/null 2>&1; then \
	  echo "llama-cpp-python $(LLAMA_VERSION): using cached wheel in $(WHEELS)"; \
	elif ls $(USER_WHEELS)/$(LLAMA_WHEEL_GLOB) >/dev/null 2>&1; then \
	  echo "llama-cpp-python $(LLAMA_VERSION): using cached wheel in $(USER_WHEELS)"; \
	  cp $(USER_WHEELS)/$(LLAMA_WHEEL_GLOB) $(WHEELS)/; \
	else \
	  echo "llama-cpp-python $(LLAMA_VERSION): compiling once (several minutes)..."; \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/pip wheel --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION) && \
	  cp $(WHEELS)/$(LLAMA_WHEEL_GLOB) $(USER_WHEELS)/; \
	fi
	@touch $@

$(STAMP): pyproject.toml $(WHEELS)/.llama-$(LLAMA_VERSION) | $(BIN)/python
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[local,dev]'
	@touch $@

clean-venv:
	rm -rf $(VENV)
