"""The admission webhook over real TLS: signed examples admitted, every bad case refused with its reason."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from admission_helpers import in_template, review, wasm_agent, wasm_pod, webhook
from helpers import EXAMPLES, ROOT, TEMPLATES
from runtime_helpers import OK_WAT, Signed, publish, signed_store, wat_manifest

from admission.config import AdmissionConfig
from admission.decide import Admitter, Judged, NotCached, Reach
from admission.refs import POD_TEMPLATES
from admission.review import parse_review
from admission.verdicts import VerdictCache
from agentfactory.audit import AuditLog
from agentfactory.verifier import refuse
from pipelines.run import Signing, run_pipeline

pytestmark = pytest.mark.toolchain
SAMPLES = ROOT / "tests" / "fixtures" / "admission"  # datreeio and our own (tests/fixtures/SOURCES.md)
EXAMPLE_REVIEWS = ROOT / "examples" / "inputs" / "admission"  # one review per supported kind


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Signed, dict[str, str], Path]]:
    """The signed examples, an unsigned agent and a tampered one, in one store."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFACTORY_HOME", str(home))
        s = signed_store(home)
        report = run_pipeline(TEMPLATES, s.store, signing=Signing(s.keyring), engine=s.engine)
        assert report.ok, [t.errors for t in report.templates]
        publish(s, home / "extra", {"victim": (wat_manifest("victim"), {"src/main.wat": OK_WAT})})
        publish(s, home / "unsigned", {"plain": (wat_manifest("plain"), {"src/main.wat": OK_WAT.replace("ok", "no")})},
                sign=False)
        refs = {a.name: f"{a.name}@{a.digest}" for a in (s.store.resolve(n) for n in [*EXAMPLES, "victim", "plain"])}
        victim = Path(s.store.url.removeprefix("oci-layout:")) / "blobs" / "sha256" / refs["victim"].split(":")[-1]
        victim.chmod(0o644)
        victim.write_bytes(victim.read_bytes().replace(b"ok\n", b"pwn"))
        yield s, refs, home


@pytest.fixture(params=[False, True], ids=["decisions-in-workers", "decisions-on-the-loop"])
def server(world: tuple[Signed, dict[str, str], Path], tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[tuple[str, httpx.Client]]:
    """The webhook as `admission serve --host-cpu off` serves it (every evaluation in a worker thread) and as it
    serves by default (admission.rego evaluated on the event loop when the verdict is cached): every test here
    must get the same answers from both."""
    s, _, _ = world
    config = AdmissionConfig(audit_log=tmp_path / "audit.jsonl", max_request_bytes=256 * 1024, max_references=64,
                             deadline_ms=2000)
    admitter = Admitter(config, s.store, s.trust, s.engine, AuditLog(tmp_path / "audit.jsonl"))
    with webhook(admitter, tmp_path / "tls", inline_decisions=request.param) as served:
        yield served


def ask(client: httpx.Client, body: dict[str, Any] | bytes, path: str = "/validate") -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text  # every answer is an AdmissionReview, never an HTTP error
    doc = r.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    if not isinstance(body, bytes):
        assert doc["response"]["uid"] == body["request"]["uid"]
    return doc["response"]


def test_signed_examples_are_admitted_in_every_form(server: tuple[str, httpx.Client],
                                                    world: tuple[Signed, dict[str, str], Path]) -> None:
    _, client = server
    _, refs, _ = world
    for name in EXAMPLES:
        resp = ask(client, review(wasm_agent(refs[name], name), group="agentfactory.dev", version="v1alpha1",
                                  kind="WasmAgent"))
        assert resp["allowed"] is True, resp
        assert "warnings" not in resp
    pod = wasm_pod(*(refs[n] for n in EXAMPLES))
    assert ask(client, review(pod))["allowed"] is True
    annotated = wasm_pod("nginx:1.25", runtime_class="runc",
                         annotations={"agentfactory.dev/agent": f"{refs['wordstats']}, {refs['base64']}"})
    for kind, group in (("Deployment", "apps"), ("StatefulSet", "apps"), ("DaemonSet", "apps"),
                        ("ReplicaSet", "apps"), ("Job", "batch"), ("CronJob", "batch")):
        assert ask(client, review(in_template(annotated, kind), group=group, kind=kind))["allowed"] is True
        assert ask(client, review(in_template(wasm_pod(refs["jsonfmt"]), kind), group=group, kind=kind))["allowed"]


def test_each_bad_agent_is_refused_with_its_reason(server: tuple[str, httpx.Client],
                                                   world: tuple[Signed, dict[str, str], Path],
                                                   tmp_path: Path) -> None:
    _, client = server
    _, refs, _ = world
    cases = {
        refs["plain"]: "signature: no signature for",
        refs["victim"]: "digest: ",
        "wordstats:1.0.0": 'is not pinned by digest',
        "wordstats": 'is not pinned by digest',
        "wordstats@sha256:" + "0" * 64: "is not in oci-layout:",
        "wordstats@sha256:abc": "the digest must be sha256: and 64 lower-case hex digits",
        "Not A Name@sha256:" + "0" * 64: "is not an agent name",
    }
    for ref, reason in cases.items():
        resp = ask(client, review(wasm_agent(ref), group="agentfactory.dev", version="v1alpha1", kind="WasmAgent"))
        assert resp["allowed"] is False, ref
        assert resp["status"]["code"] == 403 and reason in resp["status"]["message"], (ref, resp)
    resp = ask(client, review(wasm_pod("busybox:latest")))
    assert not resp["allowed"] and "spec.containers[0].image" in resp["status"]["message"]
    assert "is not pinned by digest" in resp["status"]["message"]
    mixed = ask(client, review(in_template(wasm_pod(refs["wordstats"], refs["plain"]), "Deployment"), group="apps",
                                kind="Deployment"))
    assert not mixed["allowed"] and "spec.template.spec.containers[1].image" in mixed["status"]["message"]
    foreign = ask(client, review(wasm_pod("evil.example.com/agents/" + refs["wordstats"])))
    assert foreign["allowed"] is True  # a local store accepts any prefix: the digest is what is judged
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sum(1 for r in records if r["event"] == "admission" and not r["allowed"]) >= len(cases) + 2


def test_operator_behaviour(server: tuple[str, httpx.Client], world: tuple[Signed, dict[str, str], Path]) -> None:
    _, client = server
    _, refs, _ = world
    bad = wasm_agent(refs["plain"])
    crd = {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"}
    assert ask(client, review(bad, **crd, operation="DELETE"))["allowed"] is True
    assert ask(client, review(bad, **crd, namespace="kube-system"))["allowed"] is True
    assert ask(client, review(bad, **crd, namespace="agentfactory-system"))["allowed"] is True
    # UPDATE is judged on the new object, not the old one
    assert not ask(client, review(bad, **crd, operation="UPDATE", old=wasm_agent(refs["wordstats"])))["allowed"]
    assert ask(client, review(wasm_agent(refs["wordstats"]), **crd, operation="UPDATE", old=bad))["allowed"]
    dry = ask(client, review(wasm_agent(refs["wordstats"]), **crd, dry_run=True))
    assert dry["allowed"] and any("dry run" in w for w in dry["warnings"])
    assert not ask(client, review(bad, **crd, dry_run=True))["allowed"]  # a dry run is judged like the real one
    warned = ask(client, review(bad, **crd), path="/validate/warn")
    assert warned["allowed"] is True and any(w.startswith("would be denied: ") and "signature" in w
                                             for w in warned["warnings"])
    # objects that carry no agent pass untouched
    config_map = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    assert ask(client, review(config_map, kind="ConfigMap"))["allowed"]
    assert ask(client, review(wasm_pod("nginx:1.25", runtime_class="runc")))["allowed"]
    # the stage is the namespace's (tests/security/test_attack_stage_claimed_by_object.py has the attacks): an
    # object may ask for its namespace's stage or a lower one, not a higher one, nor an unknown one
    assert ask(client, review(wasm_agent(refs["wordstats"], stage="dev"), **crd))["allowed"]
    higher = ask(client, review(wasm_agent(refs["wordstats"], stage="prod"), **crd))
    assert not higher["allowed"] and 'asks for stage "prod", higher than stage "dev"' in higher["status"]["message"]
    unknown = ask(client, review(wasm_agent(refs["wordstats"], stage="qa"), **crd))
    assert not unknown["allowed"] and "spec.stage: 'qa' is not a known stage" in unknown["status"]["message"]


def test_the_shared_sample_reviews(server: tuple[str, httpx.Client]) -> None:
    _, client = server
    for name in ("datree-applyAllowedRequest.json", "datree-applyNotAllowedRequest.json"):
        body = json.loads((SAMPLES / name).read_text())
        # UPDATEs of the scale subresource (request.kind autoscaling/v1 Scale) carrying plain Pods (nginx,
        # busybox): not agent workloads, admitted untouched. The kind that counts is request.kind.
        resp = ask(client, body)
        assert resp["allowed"] is True and resp["uid"] == body["request"]["uid"]
        body["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
        resp = ask(client, body)  # the same Pod as a Pod: still runc, still not an agent
        assert resp["allowed"] is True
        body["request"]["object"]["spec"]["runtimeClassName"] = "wasmtime"  # the same Pod as a wasm workload
        resp = ask(client, body)  # scale is allowed only when it adds no agent reference: this one adds some
        assert resp["allowed"] is False
        assert "spec.containers[0].command: a wasm container" in resp["status"]["message"]  # the sample sets one
        del body["request"]["object"]["spec"]["containers"][0]["command"]
        resp = ask(client, body)
        assert resp["allowed"] is False and "is not pinned by digest" in resp["status"]["message"]


# Every sample, whatever its shape (workloads of each kind, an ephemeral container, kubectl debug, a null or broken
# request, v1beta1 reviews): an AdmissionReview back, never a 500, and the expected decision.
# {file: (allowed, status code, text in the message)}. Sources: tests/fixtures/SOURCES.md.
V1BETA1 = (False, 400, "expected admission.k8s.io/v1 AdmissionReview (admissionReviewVersions: [v1])")
NOT_AN_AGENT: tuple[bool, int | None, str] = (True, None, "")
SAMPLE_ANSWERS: dict[str, tuple[bool, int | None, str]] = {
    "v1beta1-deployment.json": V1BETA1,
    "broken-no-uid.json": (False, 400, "request.uid: missing"),
    "json-null.json": (False, 400, "not a JSON object"),
    "broken-old-object.json": (False, 400, "oldObject"),
    "datree-applyAllowedRequest.json": NOT_AN_AGENT,
    "datree-applyNotAllowedRequest.json": NOT_AN_AGENT,
    "null-request.json": (False, 400, "request: missing"),
    "null-object.json": (False, 400, "request.object is missing"),
    "wasm-pod-ephemeralcontainers.json": (False, 403,
                                          'spec.ephemeralContainers[0].image: "busybox:1.36" is not pinned'),
    "wasm-replicationcontroller.json": (False, 403, "spec.template.spec.containers[0].image"),
    "wasm-podtemplate.json": (False, 403, "template.spec.containers[0].image"),
}


def post_raw(client: httpx.Client, body: bytes) -> dict[str, Any]:
    r = client.post("/validate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    response: dict[str, Any] = r.json()["response"]
    if not response["allowed"]:
        assert response["status"]["code"] != 500 and "Traceback" not in response["status"]["message"], response
    return response


def test_every_sample_shape_is_answered(server: tuple[str, httpx.Client]) -> None:
    _, client = server
    assert sorted(SAMPLE_ANSWERS) == sorted(p.name for p in SAMPLES.glob("*.json")), "a sample without an answer"
    for name, (allowed, code, needle) in SAMPLE_ANSWERS.items():
        resp = post_raw(client, (SAMPLES / name).read_bytes())
        assert resp["allowed"] is allowed, (name, resp)
        if not allowed:
            assert resp["status"]["code"] == code and needle in resp["status"]["message"], (name, resp)


def test_every_sample_workload_on_a_wasm_runtime_is_judged(server: tuple[str, httpx.Client]) -> None:
    """The real samples of each kind, turned into wasm workloads (v1 review, runtimeClassName: wasmtime, not in an
    exempt namespace): each is refused, naming its first container (its unpinned image, or its command)."""
    _, client = server
    judged = set()
    for path in sorted([*SAMPLES.glob("*.json"), *EXAMPLE_REVIEWS.glob("*.json")]):
        doc = json.loads(path.read_text())
        request = doc.get("request") if isinstance(doc, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("object"), dict) \
                or request.get("operation") not in ("CREATE", "UPDATE") or request.get("subResource"):
            continue
        kind = request["kind"]
        where = POD_TEMPLATES.get((kind.get("group", ""), kind["kind"]))
        if where is None:
            continue
        holder = request["object"]
        for key in where:
            holder = holder.get(key) if isinstance(holder, dict) else None
        spec = holder.get("spec") if isinstance(holder, dict) else None
        if not isinstance(spec, dict):
            continue
        first = next((f"{section}[0]" for section in ("initContainers", "containers", "ephemeralContainers")
                      if spec.get(section)), None)
        if first is None:
            continue
        spec["runtimeClassName"] = "wasmtime"
        doc["apiVersion"] = "admission.k8s.io/v1"
        request["namespace"] = "team-a"
        if not isinstance(request.get("uid"), str):
            request["uid"] = f"sample-{path.stem}"  # a broken sample's workload, made a valid review
        if not isinstance(request.get("oldObject"), dict):
            request["oldObject"] = None  # one sample has "oldObject": "" (refused as not a review, above)
        resp = post_raw(client, json.dumps(doc).encode())
        container = ".".join((*where, "spec", first))  # its image, or its command (refused on a wasm runtime)
        message = resp["status"]["message"]
        assert resp["allowed"] is False, (path.name, resp)
        assert f"{container}.image: " in message or f"{container}.command: a wasm container" in message, message
        judged.add(kind["kind"])
    assert judged == {"Pod", "PodTemplate", "ReplicationController", "Deployment", "ReplicaSet", "StatefulSet",
                      "DaemonSet", "Job", "CronJob"}


def test_bad_input_is_refused_clearly(server: tuple[str, httpx.Client],
                                      world: tuple[Signed, dict[str, str], Path]) -> None:
    _, client = server
    _, refs, _ = world
    for body, needle in ((b"{not json", "not JSON"), (b"[]", "not a JSON object"),
                         (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
                          "request: missing"),
                         (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                                      "request": {"uid": "u"}}).encode(), "expected admission.k8s.io/v1"),
                         (json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), "expected admission.k8s.io/v1"),
                         (b"[" * 100_000, "nested too deeply")):
        resp = ask(client, body)
        assert resp["allowed"] is False and resp["status"]["code"] == 400 and needle in resp["status"]["message"]
    huge = ask(client, b" " * (256 * 1024 + 1))
    assert huge["status"]["code"] == 413 and "maxRequestBytes" in huge["status"]["message"]
    many = ask(client, review(wasm_pod(*[refs["wordstats"]] * 65)))
    assert not many["allowed"] and "more than 64 agent references" in many["status"]["message"]
    lots = ask(client, review(wasm_pod(*[refs["wordstats"]] * 60)))
    assert lots["allowed"] is True  # sixty references to one digest: one verification, cached
    no_image = ask(client, review({"kind": "Pod", "metadata": {}, "spec": {"runtimeClassName": "wasmtime",
                                                                          "containers": [{"name": "x"}]}}))
    assert not no_image["allowed"] and "spec.containers[0].image: missing" in no_image["status"]["message"]
    assert client.get("/healthz").text == "ok\n" and client.get("/readyz").status_code == 200


def test_the_review_routes_take_posts_in_pieces_and_nothing_else(server: tuple[str, httpx.Client],
                                                                 world: tuple[Signed, dict[str, str], Path]) -> None:
    """The review routes are served straight from ASGI, not by the framework: a body that arrives in several
    pieces is read whole, and refused (413, denied) once past maxRequestBytes though no length was declared;
    another method is a 405 that says POST, and the other routes are the framework's."""
    _, client = server
    _, refs, _ = world
    body = json.dumps(review(wasm_agent(refs["wordstats"]), group="agentfactory.dev", version="v1alpha1",
                             kind="WasmAgent")).encode()

    def pieces() -> Iterator[bytes]:
        for k in range(0, len(body), 97):
            yield body[k:k + 97]

    for path in ("/validate", "/validate/warn"):
        streamed = client.post(path, content=pieces(), headers={"content-type": "application/json"})
        assert streamed.status_code == 200 and streamed.json()["response"]["allowed"] is True
        for method in ("GET", "PUT", "DELETE"):
            refused = client.request(method, path)
            assert refused.status_code == 405 and refused.headers["allow"] == "POST", (method, path)
        too_big = client.post(path, content=(b" " * 4096 for _ in range(65)),  # 260 KiB in pieces, no length
                              headers={"content-type": "application/json"})
        assert too_big.status_code == 200 and too_big.json()["response"]["allowed"] is False
        assert too_big.json()["response"]["status"]["code"] == 413
    assert client.post("/validate/other", content=body).status_code == 404
    assert client.get("/metrics").status_code == 200


def test_a_slow_client_is_cut_off_and_others_are_served(server: tuple[str, httpx.Client], tmp_path: Path,
                                                       world: tuple[Signed, dict[str, str], Path]) -> None:
    url, client = server
    _, refs, _ = world
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.crt"))
    with socket.create_connection((host, int(port))) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 5000\r\n\r\n{\"apiVersion\"")
        started = time.monotonic()
        good = ask(client, review(wasm_agent(refs["wordstats"]), group="agentfactory.dev", version="v1alpha1",
                                  kind="WasmAgent"))
        assert good["allowed"] and time.monotonic() - started < 2  # not held up by the slow one
        tls.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["response"]["allowed"] is False and body["response"]["status"]["code"] == 408


def test_metrics_count_decisions(server: tuple[str, httpx.Client], world: tuple[Signed, dict[str, str], Path]) -> None:
    _, client = server
    _, refs, _ = world
    ask(client, review(wasm_agent(refs["plain"]), group="agentfactory.dev", version="v1alpha1", kind="WasmAgent"))
    ask(client, review(wasm_agent(refs["plain"]), group="agentfactory.dev", version="v1alpha1", kind="WasmAgent"))
    text = client.get("/metrics").text
    assert 'agent_factory_control_plane_requests_total{decision="denied"}' in text
    assert 'agent_factory_control_plane_verdict_cache_total{result="negative-hit"}' in text  # the second one
    assert "agent_factory_control_plane_request_duration_seconds_bucket" in text
    assert "agent_factory_security_validations_total" in text


class _Recording:
    """A policy engine or store that records which thread evaluated each policy or resolved each agent."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def decide(self, policy: str, document: dict[str, Any]) -> Any:
        self.calls.append((policy, threading.current_thread().name))
        return self._inner.decide(policy, document)

    def resolve(self, ref: str) -> Any:
        self.calls.append(("resolve", threading.current_thread().name))
        return self._inner.resolve(ref)


WORKER = "AnyIO worker thread"  # run_in_threadpool's threads; the event loop runs on the server's own thread


def test_only_what_needs_no_io_is_judged_on_the_event_loop(world: tuple[Signed, dict[str, str], Path],
                                                          tmp_path: Path) -> None:
    """Verification reads the store, so it always runs in a worker thread under the deadline. With inline
    decisions (`admission serve` on one CPU), admission.rego is evaluated on the event loop when the verdict is
    cached, unless its input is large, alone or across a review's references: then a worker thread evaluates it, so
    no review holds the loop long."""
    s, refs, _ = world

    def agent_in(namespace: str) -> dict[str, Any]:
        return review(wasm_agent(refs["wordstats"]), group="agentfactory.dev", version="v1alpha1",
                      kind="WasmAgent", namespace=namespace)

    for inline in (False, True):
        engine, store = _Recording(s.engine), _Recording(s.store)
        admitter = Admitter(AdmissionConfig(deadline_ms=5000), store, s.trust, engine)  # type: ignore[arg-type]
        with webhook(admitter, tmp_path / f"tls-{inline}", inline_decisions=inline) as (_, client):
            assert ask(client, agent_in("inline-one"))["allowed"]  # first sight: verified, then the decision
            first = list(engine.calls)
            engine.calls.clear()
            assert ask(client, agent_in("inline-two"))["allowed"]  # the verdict cached, the decision not
            second = list(engine.calls)
            engine.calls.clear()
            assert ask(client, agent_in("n" * 5000))["allowed"]  # the same, with an input over 4 KiB
            large = list(engine.calls)
            engine.calls.clear()
            many = review(wasm_pod(*[refs["wordstats"]] * 16), namespace="inline-three")  # 16 small inputs
            assert ask(client, many)["allowed"]
            pod = list(engine.calls)
        assert store.calls and all(thread == WORKER for _, thread in store.calls), store.calls
        assert [p for p, _ in first] == ["artifact", "admission"] and all(t == WORKER for _, t in first), first
        assert [p for p, _ in second] == ["admission"], second
        assert (second[0][1] != WORKER) is inline, (inline, second)
        assert large == [("admission", WORKER)], large
        # the 4 KiB is for the whole review: a few references on the loop at most, the rest in a worker thread
        assert len(pod) == 16 and all(p == "admission" for p, _ in pod), pod
        on_loop = [t for _, t in pod if t != WORKER]
        assert len(on_loop) <= (3 if inline else 0) and pod[-1][1] == WORKER, pod


def test_a_verdict_too_large_to_judge_on_the_event_loop_goes_to_a_worker(
        world: tuple[Signed, dict[str, str], Path]) -> None:
    """The 4 KiB cap counts the verdict's part of the input too: a signed agent's evidence shapes it (reasons), so
    an agent whose verdict is large cannot make every new namespace's review hold the event loop."""
    s, refs, _ = world
    admitter = Admitter(AdmissionConfig(deadline_ms=5000), s.store, s.trust, s.engine)
    name, digest = refs["wordstats"].split("@")
    stage = admitter.stages.of("team-x")
    for reason, on_the_loop in (("short", True), ("x" * 5000, False)):
        admitter.verdicts = VerdictCache(600, 600, 100, positive=lambda j: j.verdict.allowed)
        judged = Judged.of(refuse(digest, "signature", reason))
        admitter.verdicts.get(admitter.verdict_key(name, digest, stage), lambda judged=judged: judged)
        body = review(wasm_agent(refs["wordstats"]), group="agentfactory.dev", version="v1alpha1", kind="WasmAgent",
                      namespace="team-x")
        if on_the_loop:
            answer = admitter.review(parse_review(json.dumps(body).encode()), reach=Reach.NO_IO)
            assert not answer.allowed and "short" in answer.message, answer
        else:
            with pytest.raises(NotCached):
                admitter.review(parse_review(json.dumps(body).encode()), reach=Reach.NO_IO)
            answer = admitter.review(parse_review(json.dumps(body).encode()))  # where a worker thread runs it
            assert not answer.allowed and "x" * 100 in answer.message, answer
