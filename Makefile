# Two commands set up a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# zig's prebuilt wasi-libc is shared by test runs (toolchain output only, never agents).
export AGENTFACTORY_TEST_TOOLCHAIN_CACHE ?= $(CURDIR)/.agentfactory/cache/toolchain-tests

.PHONY: demo test lint bench system-deps tools e2e-kube clean

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
	$(BIN)/agentfactory osv import examples/scanning/osv
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
	@echo "Every signature above is in the embedded transparency log (verify checked each record offline):"
	$(BIN)/agentfactory tlog info --check
	@echo "A template asking for a dangerous tool (shell.exec) must be refused by the template policy:"
	@! $(BIN)/agentfactory template validate tests/fixtures/policy-templates/t1-dangerous-tool
	$(BIN)/agentfactory policy test
	@echo "Scanning: htmlpage vendors lodash 4.17.20 (GHSA-35jh-r3h4-6jhm, High); the pipeline must refuse it:"
	@! $(BIN)/agentfactory pipeline run --templates examples/scanning/templates --store oci-layout:$(DEMO)/scan-store
	@echo "With a signed VEX statement saying why it does not apply, it passes and the report shows why:"
	$(BIN)/agentfactory vex sign examples/scanning/vex/htmlpage.openvex.json -o $(DEMO)/vex/htmlpage.dsse.json
	$(BIN)/agentfactory pipeline run --templates examples/scanning/templates --store oci-layout:$(DEMO)/scan-store \
	  --vex $(DEMO)/vex
	$(BIN)/agentfactory verify --store oci-layout:$(DEMO)/scan-store htmlpage
	@echo "Each example agent through the node runtime: fetched by digest, verified, then run in the sandbox:"
	printf 'hello agent factory\nsecond line\n' | $(BIN)/agentfactory run wordstats --stdin -
	printf '{"b":[1,2],"a":true}' | $(BIN)/agentfactory run jsonfmt --stdin -
	printf 'abc' | $(BIN)/agentfactory run sha256sum --stdin -
	printf 'hello' | $(BIN)/agentfactory run base64 --stdin -
	@echo "A Python agent (examples/python/ticket-triage): componentize-py builds a WebAssembly component of the project's WIT world;"
	@echo "its test cases answer its http.fetch calls from tests/cases.yaml (the build never reaches the network):"
	$(BIN)/agentfactory pipeline run --templates examples/python
	$(BIN)/agentfactory verify ticket-triage
	@echo "It asks a model server over HTTPS with an API key: a stand-in on loopback with its own CA, the key in OpenBao,"
	@echo "read by the node (a read-only token) and added to the request; the agent never sees it (examples/python/demo_services.py):"
	$(BIN)/python examples/python/demo_services.py start $(DEMO)/services --ttl 900
	set -a; . $(DEMO)/services/node.env; set +a; \
	  printf '{"subject": "Site down", "body": "The dashboard is not loading, 503 for everyone."}' | \
	  $(BIN)/agentfactory run ticket-triage --stdin - && echo
	@echo "The same agents through the node service (agentfactory runtime serve) over HTTP:"
	@set -a; . $(DEMO)/services/node.env; set +a; \
	  $(BIN)/agentfactory runtime serve --listen 127.0.0.1:0 --audit-log $(DEMO)/audit.jsonl 2>$(DEMO)/runtime.log & \
	  pid=$$!; $(BIN)/python -c "$$DEMO_HTTP" $(DEMO)/runtime.log; rc=$$?; kill $$pid; wait $$pid; \
	  $(BIN)/python examples/python/demo_services.py stop $(DEMO)/services; exit $$rc
	@echo "A valid but unsigned agent must be refused before it is compiled (exit 125):"
	@$(BIN)/agentfactory pipeline run --templates tests/fixtures/runtime-templates --no-sign \
	  --store oci-layout:$(DEMO)/unsigned-store >/dev/null
	@$(BIN)/agentfactory run --store oci-layout:$(DEMO)/unsigned-store hello-unsigned; test $$? -eq 125
	$(BIN)/agentfactory runtime audit $(DEMO)/audit.jsonl
	@echo "GitOps promotion (docs/promotion.md) into a demo environment repository, $(DEMO)/env:"
	@rm -rf $(DEMO)/env $(DEMO)/promo-store && mkdir -p $(DEMO)/env && git -C $(DEMO)/env init -q -b main && \
	  git -C $(DEMO)/env -c user.name=demo -c user.email=demo@example.com commit -q --allow-empty -m "environments"
	@$(BIN)/agentfactory pipeline run --templates examples/promotion/v1 --store oci-layout:$(DEMO)/promo-store >/dev/null 2>&1
	@$(BIN)/agentfactory pipeline run --templates examples/promotion/v2 --store oci-layout:$(DEMO)/promo-store >/dev/null 2>&1
	@echo "The promotion's trust policy: build keys, the separate promoter key, the log, and this repository (prod refuses '*'):"
	@repo=$$(git remote get-url "$$(git remote | head -1)" 2>/dev/null || echo "file://$$(git rev-parse --show-toplevel)"); \
	  $(BIN)/agentfactory trust init --repository "$$repo" --tlog-key .agentfactory/tlog/log-public-key.pem \
	  -o $(DEMO)/trust.yaml
	@$(BIN)/agentfactory runtime serve --listen 127.0.0.1:0 --stage canary --store oci-layout:$(DEMO)/promo-store \
	  --policy $(DEMO)/trust.yaml 2>$(DEMO)/canary-runtime.log & pid=$$!; \
	  GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.com GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.com \
	  $(BIN)/python -c "$$DEMO_PROMOTION" $(DEMO)/canary-runtime.log $(DEMO)/env oci-layout:$(DEMO)/promo-store \
	  $(DEMO)/trust.yaml; rc=$$?; kill $$pid; wait $$pid; exit $$rc
	@echo "A prod node runs what prod was promoted to (greeter 1.0.0), and refuses 1.1.0, which never reached prod:"
	$(BIN)/agentfactory run --store oci-layout:$(DEMO)/promo-store --policy $(DEMO)/trust.yaml --stage prod greeter
	@$(BIN)/agentfactory run --store oci-layout:$(DEMO)/promo-store --policy $(DEMO)/trust.yaml --stage prod \
	  greeter:1.1.0; test $$? -eq 125
	@echo "The admission webhook over TLS on loopback: the examples' WasmAgents, an unsigned, a tampered and an unpinned one:"
	@rm -rf $(DEMO)/admission-store && cp -r .agentfactory/store $(DEMO)/admission-store
	@$(BIN)/agentfactory pipeline run --templates tests/fixtures/runtime-templates --no-sign \
	  --store oci-layout:$(DEMO)/admission-store >/dev/null 2>&1
	@$(BIN)/agentfactory pipeline run --templates tests/fixtures/admission-templates \
	  --store oci-layout:$(DEMO)/admission-store >/dev/null 2>&1
	@$(BIN)/agentfactory admission certs --out $(DEMO)/tls >/dev/null 2>&1
	@$(BIN)/agentfactory admission serve --listen 127.0.0.1:0 --tls-cert $(DEMO)/tls/tls.crt \
	  --tls-key $(DEMO)/tls/tls.key --store oci-layout:$(DEMO)/admission-store 2>$(DEMO)/admission.log & \
	  pid=$$!; $(BIN)/python -c "$$DEMO_ADMISSION" $(DEMO)/admission.log $(DEMO)/admission-store $(DEMO)/tls/ca.crt; \
	  rc=$$?; kill $$pid; wait $$pid 2>/dev/null; exit $$rc

# make demo: wait for the service's "listening" line, invoke every example over HTTP, show the headers.
define DEMO_HTTP
import json, sys, time, httpx
for _ in range(200):
    text = open(sys.argv[1]).read()
    if "listening" in text:
        break
    time.sleep(0.05)
url = json.loads(text.splitlines()[0])["listening"]
for _ in range(1800):  # ready once the warm pool compiled every agent it may run (503 `compiling` before)
    if httpx.get(f"{url}/readyz").status_code == 200:
        break
    time.sleep(0.1)
print("readyz:", httpx.get(f"{url}/readyz").text.strip())
inputs = {"wordstats": b"served over HTTP\n", "jsonfmt": b"[3,2,1]", "sha256sum": b"abc", "base64": b"hello",
          "ticket-triage": b'{"subject": "Charged twice", "body": "Please refund."}'}
for name, body in inputs.items():
    r = httpx.post(f"{url}/v1/agents/{name}/invoke", content=body)
    head = {k: v for k, v in r.headers.items() if k.startswith("x-agent-") and k != "x-agent-digest"}
    print(r.status_code, name, head, r.text.strip()[:80])
    assert r.status_code == 200, r.text
print("healthz:", httpx.get(f"{url}/healthz").text.strip())
endef
export DEMO_HTTP

# make demo: promote greeter 1.0.0 dev -> canary -> prod with canary analysis under traffic, then a
# broken 1.1.0 dev -> canary whose analysis fails: the canary is rolled back by a new commit.
define DEMO_PROMOTION
import json, subprocess, sys, threading, time, httpx
log, env, store, policy = sys.argv[1:5]
for _ in range(200):
    text = open(log).read()
    if "listening" in text:
        break
    time.sleep(0.05)
url = json.loads(text.splitlines()[0])["listening"]
def af(*args, check=True):
    where = ["--store", store, "--policy", policy]
    cmd = [".venv/bin/agentfactory", *args, "--env-repo", env, *where, "--stages", "examples/promotion/stages.yaml"]
    print("$ agentfactory " + " ".join(args), flush=True)
    done = subprocess.run(cmd)
    if check and done.returncode != 0:
        sys.exit(f"unexpected exit {done.returncode}")
    return done.returncode
def traffic(digest, stop):
    with httpx.Client(base_url=url) as c:
        while not stop.is_set():
            c.post("/v1/agents/greeter/invoke", params={"digest": digest})
def canary_digest():
    out = subprocess.run([".venv/bin/agentfactory", "status", "--json", "--no-verify", "--env-repo", env, "--store", store, "--policy", policy, "--stages", "examples/promotion/stages.yaml"], capture_output=True, text=True).stdout
    return next(p["digest"] for p in json.loads(out)["placements"] if p["stage"] == "canary")
def analyse(expect):
    stop = threading.Event()
    t = threading.Thread(target=traffic, args=(canary_digest(), stop)); t.start()
    try:
        code = af("promote", "greeter", "--to", "prod", "--analyze", "3s", "--runtime-metrics", url + "/metrics", check=False)
    finally:
        stop.set(); t.join()
    assert code == expect, f"promote to prod exited {code}, expected {expect}"
af("promote", "greeter:1.0.0", "--to", "dev")
af("promote", "greeter", "--to", "canary")
analyse(0)
af("promote", "greeter:1.1.0", "--to", "dev")
af("promote", "greeter", "--to", "canary")
analyse(1)
af("status")
af("history", "greeter")
endef
export DEMO_PROMOTION

# make demo: tamper with the victim in the demo store, then send the webhook one WasmAgent per agent.
define DEMO_ADMISSION
import json, pathlib, ssl, sys, time, uuid, httpx
log, store, ca = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
index = json.loads((store / "index.json").read_text())["manifests"]
digests = {m["annotations"]["org.opencontainers.image.ref.name"].split(":")[0]: m["annotations"]["dev.agentfactory.artifact.digest"] for m in index if ":" in m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")}
blob = store / "blobs" / "sha256" / digests["victim"][7:]
blob.chmod(0o644)
blob.write_bytes(blob.read_bytes().replace(b"victim", b"attack"))
for _ in range(400):
    text = open(log).read()
    if "listening" in text:
        break
    time.sleep(0.05)
url = json.loads(text.splitlines()[0])["listening"]
client = httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=ca), timeout=30)
for _ in range(200):
    try:
        client.get("/healthz"); break
    except httpx.TransportError:
        time.sleep(0.05)
def ask(ref):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": str(uuid.uuid4()), "kind": {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"}, "resource": {"group": "agentfactory.dev", "version": "v1alpha1", "resource": "wasmagents"}, "namespace": "team-a", "operation": "CREATE", "name": ref.split("@")[0].split(":")[0], "object": {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": "a"}, "spec": {"agent": ref}}}}
    return client.post("/validate", json=review).json()["response"]
cases = [(n, f"{n}@{digests[n]}", True) for n in ("wordstats", "jsonfmt", "sha256sum", "base64")]
cases += [("unsigned", f"hello-unsigned@{digests['hello-unsigned']}", False), ("tampered", f"victim@{digests['victim']}", False), ("unpinned", "wordstats:1.0.0", False)]
for label, ref, expected in cases:
    r = ask(ref)
    print(("ADMITTED " if r["allowed"] else "DENIED   ") + label.ljust(10), "" if r["allowed"] else r["status"]["message"][:200] + "…")
    assert r["allowed"] == expected, r
endef
export DEMO_ADMISSION

## system-deps: what the tests need from the OS (git; the OCI registry `docker-registry`; `prometheus`
## for the canary-analysis test; `lua5.4` for the Argo CD health checks), installed with apt-get when run as root
system-deps:
	@missing=""; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v lua5.4 >/dev/null 2>&1 || missing="$$missing lua5.4"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing; install with: sudo apt-get install$$missing"; exit 1; fi; fi

## tools: build the real OPA, cosign, rekor-cli, Grype and Trivy from their Go modules at the versions
## pinned in tools/versions.txt into .agentfactory/tools/bin/ (a tool already at its pin is skipped)
tools:
	bash tools/install.sh

## test: install everything the tests need, lint, and run the whole suite
test: $(STAMP) system-deps tools lint
	$(BIN)/pytest -q --durations=25

## e2e-kube: a real kube-apiserver calls the admission webhook (tests/e2e_kube; docs/admission.md "Checking
## against a real API server"): etcd (Debian etcd-server), kube-apiserver + kubectl built by tools/build-kube.sh
## at the pin in tools/versions.txt (cached in .agentfactory/tools/bin/; the first build takes about 20 minutes)
e2e-kube: $(STAMP)
	@command -v etcd >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; \
	  else echo "missing: etcd; install with: sudo apt-get install etcd-server"; exit 1; fi; }
	bash tools/build-kube.sh
	$(BIN)/pytest -q -m e2e_kube tests/e2e_kube

lint: $(STAMP)
	$(BIN)/ruff check .
	mkdir -p .agentfactory/mypy && ln -sfn ../../sandbox-runtime .agentfactory/mypy/sandbox_runtime
	$(BIN)/mypy

## bench: run every benchmarks/bench_*.py and write benchmarks/results/ (each page says pass or fail per target);
## builds the real OPA and cosign first (`make tools`): some benchmarks run them
bench: $(STAMP) tools
	@failed=""; for script in benchmarks/bench_*.py; do echo "== $$script"; \
	  $(BIN)/python $$script || failed="$$failed $$script"; done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf .agentfactory .pytest_cache .mypy_cache .ruff_cache
