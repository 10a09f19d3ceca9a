# Two commands set up a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# zig's prebuilt wasi-libc is shared by test runs (toolchain output only, never agents).
export AGENTFACTORY_TEST_TOOLCHAIN_CACHE ?= $(CURDIR)/.agentfactory/cache/toolchain-tests

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: build, test and publish every example template on the embedded defaults, then list the store
demo: $(STAMP)
	$(BIN)/agentfactory pipeline run
	$(BIN)/agentfactory store ls

## system-deps: what the tests need from the OS (git); installed with apt-get when run as root
system-deps:
	@command -v git >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq git; \
	  else echo "git is required: install it (apt-get install git)"; exit 1; fi; }

## test: install everything the tests need, lint, and run the whole suite
test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: run the benchmarks and write benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf .agentfactory .pytest_cache .mypy_cache .ruff_cache
