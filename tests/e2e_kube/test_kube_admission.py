"""A real kube-apiserver calls the webhook (issue 21); every case goes through kubectl alone.

The cluster (etcd + kube-apiserver on loopback), the signed world and the registered webhook come from
conftest.py. The tests run in file order: the webhook restart and the certificate rotation come after the
plain cases, the latency measurement last (it restarts the webhook to empty its verdict cache).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kube_env import ENFORCE, EXEMPT, FIGURES, RUNTIME_CLASS, WARN, register, wait_enforced
from kube_kubectl import ROOT, Kubectl, Result
from kube_pki import CA
from kube_world import AGENTFACTORY, SIGNED, Webhook, World

pytestmark = pytest.mark.e2e_kube

ENFORCE_HOOK = "enforce.admission.agentfactory.dev"
DENIED = f'admission webhook "{ENFORCE_HOOK}" denied the request: '


def wasm_agent(name: str, ref: str) -> dict[str, Any]:
    return {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": name},
            "spec": {"agent": ref}}


def pod_spec(*images: str) -> dict[str, Any]:
    return {"runtimeClassName": RUNTIME_CLASS,
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}


def wasm_pod(name: str, *images: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec(*images)}


def deployment(name: str, *images: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec(*images)}}}


def refused(result: Result) -> str:
    """The webhook's reason as kubectl printed it (the request was refused by the enforce webhook)."""
    assert not result.ok, f"admitted, expected a refusal:\n{result}"
    assert DENIED in result.err, f"not refused by the webhook:\n{result}"
    return result.err.split(DENIED, 1)[1].strip()


def audited(webhook: Webhook, namespace: str, name: str) -> dict[str, Any]:
    """The webhook's last audit record for `name` in `namespace`."""
    records = [r for r in webhook.audit_records() if r.get("namespace") == namespace and r.get("name") == name]
    assert records, f"the webhook has no audit record of {namespace}/{name}"
    return records[-1]


# --- WasmAgents -------------------------------------------------------------------------------------------


def test_signed_demo_agents_are_created(admission: Webhook, kubectl: Kubectl, world: World) -> None:
    """deploy/admission/examples/*.yaml with the real digests put in: created, and the webhook admitted each."""
    for name in SIGNED:
        text = (ROOT / "deploy" / "admission" / "examples" / f"{name}.yaml").read_text()
        text = re.sub(rf"{name}@sha256:0{{64}}", world.refs[name], text)
        result = kubectl("apply", "-n", ENFORCE, "-f", "-", stdin=text)
        assert result.ok and f"wasmagent.agentfactory.dev/{name} created" in result.out, str(result)
        stored = kubectl.get("wasmagent", name, ENFORCE)
        assert stored is not None and stored["spec"]["agent"] == world.refs[name]
        record = audited(admission, ENFORCE, name)
        assert record["allowed"] is True and record["operation"] == "CREATE", record


def test_shipped_examples_with_the_placeholder_digest_are_refused(admission: Webhook, kubectl: Kubectl,
                                                                  world: World) -> None:
    """As shipped (placeholder digest), an example cannot replace the admitted one (an UPDATE, refused)."""
    reason = refused(kubectl("apply", "-n", ENFORCE, "-f", "deploy/admission/examples/jsonfmt.yaml"))
    assert "jsonfmt@sha256:" + "0" * 64 in reason and "spec.agent" in reason, reason
    assert audited(admission, ENFORCE, "jsonfmt")["operation"] == "UPDATE"
    assert kubectl.must_get("wasmagent", "jsonfmt", ENFORCE)["spec"]["agent"] == world.refs["jsonfmt"]


@pytest.mark.parametrize(("case", "ref_of", "expect"), [
    ("unsigned", lambda w: w.refs["hello-unsigned"], "signature"),
    ("tampered", lambda w: w.refs["victim"], "digest"),
    ("unpinned", lambda w: "wordstats:1.0.0", "pin"),
])
def test_bad_wasmagents_are_refused_with_the_webhooks_reasons(admission: Webhook, kubectl: Kubectl, world: World,
                                                             case: str, ref_of: Any, expect: str) -> None:
    """kubectl's own error output carries the webhook's whole message, as its audit trail recorded it."""
    ref = ref_of(world)
    reason = refused(kubectl.apply(wasm_agent(f"bad-{case}", ref), ENFORCE))
    assert ref in reason and "spec.agent" in reason and expect in reason.lower(), reason
    record = audited(admission, ENFORCE, f"bad-{case}")  # the audit trail shortens long strings with "…"
    assert record["allowed"] is False and reason.startswith(record["message"].removesuffix("…")), (record, reason)
    assert kubectl.get("wasmagent", f"bad-{case}", ENFORCE) is None


# --- Pods, workloads, ephemeral containers -----------------------------------------------------------------


def test_wasm_pod_with_an_unsigned_agent_is_refused(admission: Webhook, kubectl: Kubectl, world: World) -> None:
    reason = refused(kubectl.create(wasm_pod("pod-unsigned", world.refs["wordstats"], world.refs["hello-unsigned"]),
                                    ENFORCE))
    assert "spec.containers[1].image" in reason and world.refs["hello-unsigned"] in reason, reason
    assert "spec.containers[0]" not in reason, reason
    assert kubectl.get("pod", "pod-unsigned", ENFORCE) is None
    created = kubectl.create(wasm_pod("pod-signed", world.refs["wordstats"]), ENFORCE)
    assert created.ok, str(created)
    assert kubectl.must_get("pod", "pod-signed", ENFORCE)["status"]["phase"] == "Pending"  # no kubelet here


def test_deployment_with_an_unsigned_agent_in_its_template_is_refused(admission: Webhook, kubectl: Kubectl,
                                                                      world: World) -> None:
    reason = refused(kubectl.create(deployment("dep-unsigned", world.refs["hello-unsigned"]), ENFORCE))
    assert "spec.template.spec.containers[0].image" in reason, reason
    assert kubectl.get("deployment", "dep-unsigned", ENFORCE) is None
    assert kubectl.create(deployment("dep-signed", world.refs["jsonfmt"]), ENFORCE).ok


def test_kubectl_debug_with_an_unsigned_image_is_refused(admission: Webhook, kubectl: Kubectl, world: World) -> None:
    """`kubectl debug` goes through pods/ephemeralcontainers: the rule for it must be there, and it is judged."""
    assert kubectl.create(wasm_pod("debug-me", world.refs["base64"]), ENFORCE).ok
    reason = refused(kubectl("debug", "-n", ENFORCE, "pod/debug-me", f"--image={world.refs['hello-unsigned']}",
                             "--container=dbg-bad"))
    assert "spec.ephemeralContainers[0].image" in reason and world.refs["hello-unsigned"] in reason, reason
    record = audited(admission, ENFORCE, "debug-me")
    assert record["operation"] == "UPDATE" and record["allowed"] is False, record
    assert not kubectl.must_get("pod", "debug-me", ENFORCE)["spec"].get("ephemeralContainers")
    # the same command with a signed agent is admitted: the refusal was the image's
    added = kubectl("debug", "-n", ENFORCE, "pod/debug-me", f"--image={world.refs['sha256sum']}", "--container=dbg-ok")
    assert added.ok, str(added)
    ephemeral = kubectl.must_get("pod", "debug-me", ENFORCE)["spec"]["ephemeralContainers"]
    assert [(c["name"], c["image"]) for c in ephemeral] == [("dbg-ok", world.refs["sha256sum"])]


# --- namespaces: warn, exempt, and the control plane's own ---------------------------------------------------


def test_warn_namespace_admits_with_the_reasons_as_kubectl_warnings(admission: Webhook, kubectl: Kubectl,
                                                                    world: World) -> None:
    result = kubectl.apply(wasm_agent("warned", world.refs["hello-unsigned"]), WARN)
    assert result.ok and "wasmagent.agentfactory.dev/warned created" in result.out, str(result)
    assert re.search(r"^Warning: would be denied: spec\.agent: .*" + re.escape(world.refs["hello-unsigned"]),
                     result.err, re.M), result.err
    record = audited(admission, WARN, "warned")
    assert record["mode"] == "warn" and record["decision"] == "warned", record
    pod = kubectl.create(wasm_pod("warned-pod", world.refs["hello-unsigned"]), WARN)
    assert pod.ok and "Warning: would be denied: spec.containers[0].image" in pod.err, str(pod)


def test_exempt_namespaces_are_never_sent(admission: Webhook, kubectl: Kubectl, world: World) -> None:
    """The label `exempt` and kube-system: admitted untouched, and the webhook never saw a review."""
    kubectl.ok("apply", "-n", "kube-system", "-f", "-",
               stdin='{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}')
    for namespace, obj in ((EXEMPT, wasm_agent("exempt-agent", world.refs["hello-unsigned"])),
                           (EXEMPT, wasm_pod("exempt-pod", world.refs["hello-unsigned"])),
                           ("kube-system", wasm_pod("system-pod", world.refs["hello-unsigned"]))):
        result = kubectl.create(obj, namespace)
        assert result.ok and "Warning" not in result.err, str(result)
    seen = {r.get("namespace") for r in admission.audit_records()}
    assert not seen & {EXEMPT, "kube-system"}, seen


# --- the webhook as Kubernetes configures it ----------------------------------------------------------------


def test_the_api_server_keeps_the_rendered_rules_and_settings(admission: Webhook, kubectl: Kubectl,
                                                              rendered: dict[str, Any]) -> None:
    """What kube-apiserver stored is what deploy/admission renders (only clientConfig differs): none of the
    rules, selectors, matchPolicy, failurePolicy, sideEffects, timeoutSeconds was dropped or rewritten."""
    stored = kubectl.get("validatingwebhookconfiguration", "agentfactory-admission", "default")
    assert stored is not None
    got = {h["name"]: h for h in stored["webhooks"]}
    assert set(got) == {h["name"] for h in rendered["webhooks"]}
    for hook in rendered["webhooks"]:
        for key, value in hook.items():
            if key != "clientConfig":
                assert got[hook["name"]][key] == value, (hook["name"], key, got[hook["name"]][key], value)
        assert got[hook["name"]]["clientConfig"]["url"] == admission.url + hook["clientConfig"]["service"]["path"]


def test_reapplying_the_manifest_keeps_the_patched_ca_bundle(admission: Webhook, kubectl: Kubectl,
                                                             rendered: dict[str, Any]) -> None:
    """deploy/admission/README.md, "Without cert-manager": apply, patch the caBundle, apply again: the
    caBundle stays. Checked on a copy under another name whose selector matches no namespace."""
    copy = {**rendered, "metadata": {**rendered["metadata"], "name": "agentfactory-admission-reapply-check"}}
    copy["webhooks"] = [{**h, "namespaceSelector": {"matchLabels": {"agentfactory.dev/e2e-never": "true"}}}
                        for h in rendered["webhooks"]]
    bundle = base64.b64encode((admission.tls / "ca.crt").read_bytes()).decode()
    try:
        kubectl.ok("apply", "-f", "-", stdin=json.dumps(copy))
        kubectl.ok("patch", "validatingwebhookconfiguration", copy["metadata"]["name"], "--type=json", "-p",
                   json.dumps([{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                               for i in range(len(copy["webhooks"]))]))
        kubectl.ok("apply", "-f", "-", stdin=json.dumps(copy))
        stored = kubectl.get("validatingwebhookconfiguration", copy["metadata"]["name"], "default")
        assert stored is not None
        assert [h["clientConfig"].get("caBundle") for h in stored["webhooks"]] == [bundle] * len(copy["webhooks"])
    finally:
        kubectl("delete", "validatingwebhookconfiguration", copy["metadata"]["name"], "--ignore-not-found")


# --- UPDATE and dry runs ------------------------------------------------------------------------------------


def test_update_swapping_a_good_agent_for_a_bad_one_is_refused(admission: Webhook, kubectl: Kubectl,
                                                               world: World) -> None:
    assert kubectl.apply(wasm_agent("swap", world.refs["wordstats"]), ENFORCE).ok
    reason = refused(kubectl.apply(wasm_agent("swap", world.refs["hello-unsigned"]), ENFORCE))
    assert world.refs["hello-unsigned"] in reason, reason
    assert audited(admission, ENFORCE, "swap")["operation"] == "UPDATE"
    assert kubectl.must_get("wasmagent", "swap", ENFORCE)["spec"]["agent"] == world.refs["wordstats"]
    # a Pod's image is mutable in Kubernetes: `kubectl set image` on a running wasm pod
    assert kubectl.create(wasm_pod("swap-pod", world.refs["wordstats"]), ENFORCE).ok
    reason = refused(kubectl("set", "image", "-n", ENFORCE, "pod/swap-pod", f"c0={world.refs['victim']}"))
    assert "spec.containers[0].image" in reason and world.refs["victim"] in reason, reason
    assert kubectl.must_get("pod", "swap-pod", ENFORCE)["spec"]["containers"][0]["image"] == world.refs["wordstats"]


def test_server_dry_run_is_judged_like_the_real_request(admission: Webhook, kubectl: Kubectl, world: World) -> None:
    bad = wasm_agent("dry-bad", world.refs["hello-unsigned"])
    dry = refused(kubectl.create(bad, ENFORCE, "--dry-run=server"))
    assert audited(admission, ENFORCE, "dry-bad")["dryRun"] is True
    real = refused(kubectl.create(bad, ENFORCE))
    assert dry == real, (dry, real)
    good = kubectl.create(wasm_agent("dry-good", world.refs["jsonfmt"]), ENFORCE, "--dry-run=server")
    assert good.ok and "created (server dry run)" in good.out, str(good)
    assert "Warning: request.dryRun: dry run" in good.err, good.err
    assert kubectl.get("wasmagent", "dry-good", ENFORCE) is None
    # an UPDATE dry run is judged like the UPDATE
    assert kubectl.apply(wasm_agent("dry-swap", world.refs["base64"]), ENFORCE).ok
    swap = refused(kubectl.apply(wasm_agent("dry-swap", world.refs["victim"]), ENFORCE, "--dry-run=server"))
    assert world.refs["victim"] in swap, swap
    assert kubectl.must_get("wasmagent", "dry-swap", ENFORCE)["spec"]["agent"] == world.refs["base64"]


# --- availability: the webhook down, its certificate rotated ------------------------------------------------


def test_webhook_down_refuses_then_admits_once_it_is_back(admission: Webhook, kubectl: Kubectl,
                                                          world: World) -> None:
    """failurePolicy: Fail, as the API server applies it; the exempt namespace keeps working meanwhile."""
    admission.stop()
    try:
        down = kubectl.apply(wasm_agent("while-down", world.refs["wordstats"]), ENFORCE)
        assert not down.ok and f'failed calling webhook "{ENFORCE_HOOK}"' in down.err, str(down)
        assert "connection refused" in down.err, str(down)
        assert kubectl.get("wasmagent", "while-down", ENFORCE) is None
        assert kubectl.apply(wasm_agent("exempt-while-down", world.refs["wordstats"]), EXEMPT).ok
    finally:
        admission.start()
    up = kubectl.apply(wasm_agent("while-down", world.refs["wordstats"]), ENFORCE)
    assert up.ok and "created" in up.out, str(up)


def held_connections(pid: int, port: int) -> int:
    """How many established connections to the webhook's `port` the process `pid` holds (its server sockets)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(fd) in inodes
        except OSError:  # closed meanwhile
            continue
    return held


def test_two_worker_processes_judge_the_api_servers_reviews_as_one_webhook(admission: Webhook, kubectl: Kubectl,
                                                                         world: World) -> None:
    """`admission serve --workers 2` behind the real API server: its concurrent reviews arrive on several
    connections, which the supervisor shares out, so both workers judge; every answer is the one a single
    process gives (signed created, unsigned refused with the reason), and the workers' records continue the one
    audit trail, whose hash chain `runtime audit` checks. The webhook is back to one process afterwards."""
    admission.stop()
    admission.workers = 2
    try:
        admission.start()
        pids = admission.worker_pids()
        assert len(pids) == 2, admission.log()
        wait_enforced(kubectl, world)
        jobs = [(f"workers-{i}-{name}", world.refs[name]) for i in range(3) for name in SIGNED]
        jobs += [(f"workers-{i}-unsigned", world.refs["hello-unsigned"]) for i in range(4)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: kubectl.create(wasm_agent(*job), ENFORCE), jobs))
        for (name, ref), result in zip(jobs, results, strict=True):
            if name.endswith("-unsigned"):
                assert ref in refused(result) and audited(admission, ENFORCE, name)["allowed"] is False
            else:
                assert result.ok and "created" in result.out, str(result)
                assert audited(admission, ENFORCE, name)["allowed"] is True
        # the API server keeps its connections open for the next reviews: each worker holds some of them
        held = {pid: held_connections(pid, admission.port) for pid in pids}
        assert all(held.values()), f"a worker holds none of the API server's connections: {held}"
        audit = subprocess.run([AGENTFACTORY, "runtime", "audit", str(admission.audit)], capture_output=True,
                               text=True, env=world.env, timeout=120)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        admission.stop()
        admission.workers = 1
        admission.start()
    wait_enforced(kubectl, world)
    assert admission.worker_pids() == []


def served_certificate(port: int, ca: Path) -> x509.Certificate:
    """The certificate a new TLS handshake with the webhook gets, verified against `ca`."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def install_pair(cert: Path, key: Path, tls: Path, ca: Path | None = None) -> None:
    """Replace the served pair (and the secret's ca.crt) as the kubelet does for a renewed Secret: whole
    files, renamed into place."""
    files = [(key, "tls.key"), (cert, "tls.crt")] + ([(ca, "ca.crt")] if ca else [])
    for source, name in files:
        staged = tls / f".{name}.new"
        shutil.copyfile(source, staged)
        os.replace(staged, tls / name)


def wait_reloaded(webhook: Webhook, count: int, seconds: float = 90.0) -> None:
    """Until the webhook logged its `count`-th certificate reload (it checks the files every 30 s)."""
    deadline = time.monotonic() + seconds
    while webhook.log().count('"tls": "reloaded"') < count:
        assert time.monotonic() < deadline, f"the webhook did not reload its certificate:\n{webhook.log()}"
        time.sleep(0.5)


def wait_for(kubectl: Kubectl, obj: dict[str, Any], expect: str, seconds: float = 60.0) -> Result:
    """Create `obj` (server dry run) until the API server's answer contains `expect`: the new webhook
    configuration has reached its informer."""
    deadline = time.monotonic() + seconds
    while True:
        result = kubectl.create(obj, ENFORCE, "--dry-run=server")
        if expect in result.out + result.err:
            return result
        assert time.monotonic() < deadline, f"never answered {expect!r}:\n{result}"
        time.sleep(0.5)


def test_certificate_rotated_while_running_is_still_answered(admission: Webhook, kubectl: Kubectl, world: World,
                                                             rendered: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """Two rotations without a restart. First the CA changes (a cert-manager-like CA takes over from the
    `admission certs` one): the caBundle holds both while the files are swapped. Then a renewal under the
    same CA, caBundle untouched (what cert-manager does every 60 days). The API server keeps being answered,
    and a caBundle holding only the old CA is refused once the new certificate is served, so the answers did
    come through the new one."""
    old_ca = (admission.tls / "ca.crt").read_bytes()
    ca = CA(tmp_path / "ca", name="agentfactory e2e-kube webhook CA")
    good = wasm_agent("rotation-probe", world.refs["wordstats"])
    reloads = admission.log().count('"tls": "reloaded"')

    register(kubectl, rendered, admission, [old_ca, ca.cert.read_bytes()])
    first = ca.issue("tls-1", "agentfactory-admission", server=True, dns=("localhost",), ips=("127.0.0.1",),
                     folder=tmp_path / "leaf-1")
    install_pair(first.cert, first.key, admission.tls, ca.cert)
    wait_reloaded(admission, reloads + 1)
    assert served_certificate(admission.port, ca.cert).serial_number == \
        x509.load_pem_x509_certificate(first.cert.read_bytes()).serial_number
    answered = kubectl.apply(wasm_agent("rotated-1", world.refs["wordstats"]), ENFORCE)
    assert answered.ok and "created" in answered.out, str(answered)
    # the old CA alone no longer verifies what is served; the new one alone does
    register(kubectl, rendered, admission, [old_ca])
    wait_for(kubectl, good, "x509")
    register(kubectl, rendered, admission, [ca.cert.read_bytes()])
    wait_for(kubectl, good, "created (server dry run)")

    second = ca.issue("tls-2", "agentfactory-admission", server=True, dns=("localhost",), ips=("127.0.0.1",),
                      folder=tmp_path / "leaf-2")
    install_pair(second.cert, second.key, admission.tls)
    kept = kubectl.apply(wasm_agent("rotating-2", world.refs["base64"]), ENFORCE)  # answered during the swap
    assert kept.ok, str(kept)
    wait_reloaded(admission, reloads + 2)
    assert served_certificate(admission.port, ca.cert).serial_number == \
        x509.load_pem_x509_certificate(second.cert.read_bytes()).serial_number
    after = kubectl.apply(wasm_agent("rotated-2", world.refs["jsonfmt"]), ENFORCE)
    assert after.ok and "created" in after.out, str(after)
    # still judged, not only reachable
    bad = world.refs["hello-unsigned"]
    assert bad in refused(kubectl.apply(wasm_agent("rotated-bad", bad), ENFORCE))


# --- what the API server measures ---------------------------------------------------------------------------

METRIC = "apiserver_admission_webhook_admission_duration_seconds"


def admission_histogram(kubectl: Kubectl) -> dict[str, float]:
    """kube-apiserver's histogram of the enforce webhook's admitted CREATEs: {le: count, "sum":, "count":}."""
    text = kubectl.ok("get", "--raw", "/metrics").out
    want = {"name": ENFORCE_HOOK, "operation": "CREATE", "rejected": "false", "type": "validating"}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(METRIC):
            continue
        match = re.match(rf"{METRIC}(_bucket|_sum|_count)\{{([^}}]*)\}} (\S+)", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if any(labels.get(k) != v for k, v in want.items()):
            continue
        key = labels["le"] if match.group(1) == "_bucket" else match.group(1)[1:]
        out[key] = float(match.group(3))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def summary(d: dict[str, float]) -> dict[str, Any]:
    count = int(d.get("count", 0))
    buckets = {k: int(v) for k, v in d.items() if k not in ("sum", "count")}
    return {"reviews": count, "mean_ms": round(1000 * d["sum"] / count, 1) if count else None,
            "cumulative_buckets_le_s": dict(sorted(buckets.items(), key=lambda kv: float(kv[0])))}


CACHE = "agent_factory_control_plane_verdict_cache_total"
INSIDE = "agent_factory_control_plane_request_duration_seconds"


def inside_mean(d: dict[str, float]) -> float:
    """The webhook's own mean answer time (body read to response), in ms."""
    return round(1000 * d[f"{INSIDE}_sum"] / d[f"{INSIDE}_count"], 1)


def test_admission_latency_as_kube_apiserver_measures_it(admission: Webhook, kubectl: Kubectl,
                                                         world: World) -> None:
    """First-sight reviews (the webhook restarted, so its verdict cache is empty: each agent is verified from
    the store) against cached ones (the same agents again within cacheTtlSeconds), from kube-apiserver's own
    /metrics. Recorded in the terminal summary; benchmarks/results/kube-admission.md reports them."""
    rounds, repeats = 3, 10
    first: dict[str, float] = {}
    first_inside: dict[str, float] = {}
    for r in range(rounds):
        admission.stop()
        admission.start()
        wait_enforced(kubectl, world)  # a refusal, not counted (rejected="true"); opens the API server's connection
        before, inside = admission_histogram(kubectl), admission.metrics()
        for name in SIGNED:
            assert kubectl.create(wasm_agent(f"first-{r}-{name}", world.refs[name]), ENFORCE).ok
        for k, v in delta(admission_histogram(kubectl), before).items():
            first[k] = first.get(k, 0.0) + v
        for k, v in delta(admission.metrics(), inside).items():
            first_inside[k] = first_inside.get(k, 0.0) + v
    before, inside = admission_histogram(kubectl), admission.metrics()
    for i in range(repeats):
        for name in SIGNED:
            assert kubectl.create(wasm_agent(f"cached-{i}-{name}", world.refs[name]), ENFORCE).ok
    cached = delta(admission_histogram(kubectl), before)
    cached_inside = delta(admission.metrics(), inside)
    assert first["count"] == rounds * len(SIGNED), first
    assert cached["count"] == repeats * len(SIGNED), cached
    # first sight was verified from the store, the repeats came from the verdict cache (the webhook's counters)
    assert first_inside[f'{CACHE}{{result="miss"}}'] == rounds * len(SIGNED), first_inside
    assert first_inside.get(f'{CACHE}{{result="hit"}}', 0) == 0, first_inside
    assert cached_inside[f'{CACHE}{{result="hit"}}'] == repeats * len(SIGNED), cached_inside
    assert cached_inside.get(f'{CACHE}{{result="miss"}}', 0) == 0, cached_inside
    FIGURES["first_sight"] = {**summary(first), "webhook_mean_ms": inside_mean(first_inside)}
    FIGURES["cached"] = {**summary(cached), "webhook_mean_ms": inside_mean(cached_inside)}
    FIGURES["kube_apiserver"] = json.loads(kubectl.ok("version", "-o", "json").out)["serverVersion"]["gitVersion"]
