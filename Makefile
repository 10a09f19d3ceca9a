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

DEMO := .agentfactory/demo
## demo: build, test, sign and publish every example template on the embedded defaults, verify each,
## show a tampered copy (one flipped byte in a copy of the store) and a template that breaks the
## policy refused with their reasons, and run the Rego unit tests
demo: $(STAMP)
	$(BIN)/agentfactory pipeline run
	$(BIN)/agentfactory store ls
	@for ref in $$($(BIN)/agentfactory store ls --json | $(BIN)/python -c \
	    'import json,sys; print(" ".join(a["name"]+"@"+a["digest"] for a in json.load(sys.stdin)["agents"] if a["tag"]))'); do \
	  $(BIN)/agentfactory verify $$ref || exit 1; done
	@rm -rf $(DEMO) && mkdir -p $(DEMO) && cp -r .agentfactory/store $(DEMO)/tampered-store
	@$(BIN)/python -c 'import json,pathlib,sys; s=pathlib.Path(sys.argv[1]); \
	  d=json.loads(s.joinpath("index.json").read_text()); \
	  m=[x for x in d["manifests"] if x.get("annotations",{}).get("org.opencontainers.image.ref.name","").startswith("wordstats:")][0]; \
	  b=s/"blobs/sha256"/m["annotations"]["dev.agentfactory.artifact.digest"][7:]; x=bytearray(b.read_bytes()); \
	  x[len(x)//2]^=1; b.write_bytes(bytes(x))' $(DEMO)/tampered-store
	@echo "One byte of wordstats flipped in a copy of the store; the verifier must refuse it:"
	@! $(BIN)/agentfactory verify --store oci-layout:$(DEMO)/tampered-store wordstats:1.0.0
	@echo "A template asking for a dangerous tool (shell.exec) must be refused by the template policy:"
	@! $(BIN)/agentfactory template validate tests/fixtures/policy-templates/t1-dangerous-tool
	$(BIN)/agentfactory policy test

## system-deps: what the tests need from the OS (git; the OCI registry `docker-registry`), installed
## with apt-get when run as root
system-deps:
	@missing=""; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing; install with: sudo apt-get install$$missing"; exit 1; fi; fi

## test: install everything the tests need, lint, and run the whole suite
test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	mkdir -p .agentfactory/mypy && ln -sfn ../../sandbox-runtime .agentfactory/mypy/sandbox_runtime
	$(BIN)/mypy

## bench: run the benchmarks and write benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_sbom.py
	$(BIN)/python benchmarks/bench_signing.py
	$(BIN)/python benchmarks/bench_verify.py
	$(BIN)/python benchmarks/bench_registry.py
	$(BIN)/python benchmarks/bench_policy.py

clean:
	rm -rf .agentfactory .pytest_cache .mypy_cache .ruff_cache
