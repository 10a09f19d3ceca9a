"""The webhook's parts on their own: references, reviews, the config file, the verdict cache, the certificates."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from pathlib import Path

import pytest
from admission_helpers import in_template, review, wasm_pod

from admission.certs import make_certs
from admission.config import load_config
from admission.refs import find_references, parse_reference
from admission.review import parse_review, response
from admission.verdicts import VerdictCache
from agentfactory.errors import InputError, ValidationFailed

D = "sha256:" + "ab" * 32
FIND = {"runtime_classes": ("wasmtime",), "max_references": 8}


def test_reference_forms() -> None:
    for ref, prefix, tag in ((f"wordstats@{D}", "", None), (f"reg.example.com:5000/agents/wordstats@{D}",
                             "reg.example.com:5000/agents", None), (f"oci://reg/agents/wordstats@{D}", "reg/agents",
                             None), ("wordstats:1.0.0", "", "1.0.0"), ("reg/wordstats", "reg", None)):
        p = parse_reference(ref, "f")
        assert (p.prefix, p.name, p.tag) == (prefix, "wordstats", tag)
        assert p.pinned == ("@" in ref)
    for bad, needle in ((f"WordStats@{D}", "is not an agent name"), ("x@sha256:12", "64 lower-case hex"),
                        ("x@md5:" + "0" * 32, "must be sha256:"), ("", "is not an agent name"),
                        # `$` took a trailing newline; a tag was never checked (1,900 characters went into the audit)
                        (f"x\n@{D}", "is not an agent name"),
                        (f"x:{'t' * 129}@{D}", "the tag is not a tag"), (f"x:a b@{D}", "the tag is not a tag"),
                        (f"x:.v1@{D}", "the tag is not a tag"), ("x" * 5000, "more than any image reference")):
        with pytest.raises(InputError, match=needle):
            parse_reference(bad, "f")


def test_where_agents_are_found() -> None:
    pod = wasm_pod(f"a@{D}", f"b@{D}")
    pod["spec"]["initContainers"] = [{"name": "i", "image": f"c@{D}"}]
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": f"d@{D}"}]
    refs = find_references("", "Pod", pod, **FIND)
    assert [r.field for r in refs] == ["spec.initContainers[0].image", "spec.containers[0].image",
                                       "spec.containers[1].image", "spec.ephemeralContainers[0].image"]
    assert all(r.requested_stage is None for r in refs)
    annotations = {"agentfactory.dev/agent": f"a@{D},b@{D}", "agentfactory.dev/stage": "prod"}
    job = in_template(wasm_pod("nginx", runtime_class="runc", annotations=annotations), "CronJob")
    refs = find_references("batch", "CronJob", job, **FIND)
    assert [(r.ref, r.requested_stage) for r in refs] == [(f"a@{D}", "prod"), (f"b@{D}", "prod")]
    assert refs[0].requested_stage_field == (
        "spec.jobTemplate.spec.template.metadata.annotations['agentfactory.dev/stage']")
    assert refs[0].field == "spec.jobTemplate.spec.template.metadata.annotations['agentfactory.dev/agent']"
    assert find_references("", "Pod", wasm_pod("nginx", runtime_class="runc"), **FIND) is None
    assert find_references("", "ConfigMap", {"data": {}}, **FIND) is None
    assert find_references("apps", "Deployment", {"spec": "garbage"}, **FIND) is None
    with pytest.raises(InputError, match="more than 8 agent references"):
        find_references("", "Pod", wasm_pod(*[f"a@{D}"] * 9), **FIND)
    with pytest.raises(InputError, match="spec.agent"):
        find_references("agentfactory.dev", "WasmAgent", {"spec": {}}, **FIND)


def test_review_parsing_and_response() -> None:
    body = review(wasm_pod(f"a@{D}"), operation="UPDATE", dry_run=True)
    r = parse_review(json.dumps(body).encode())
    assert (r.operation, r.kind, r.dry_run, r.uid) == ("UPDATE", "Pod", True, body["request"]["uid"])
    for doc, needle in (({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 1}},
                         "request.uid"),
                        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                          "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "PATCH"}}, "PATCH")):
        with pytest.raises(InputError, match=needle):
            parse_review(json.dumps(doc).encode())
    out = response("u", False, code=403, message="m" * 10_000, warnings=["w" * 1000] * 50)
    assert out["response"]["status"]["code"] == 403 and len(out["response"]["status"]["message"]) <= 4097
    assert len(out["response"]["warnings"]) == 20 and all(len(w) <= 512 for w in out["response"]["warnings"])


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: oci-layout:/s\ndeadlineMs: 1000\nexemptNamespaces: [kube-system]\nauditLog: '-'\n")
    c = load_config(path)
    assert c.deadline_ms == 1000 and c.exempt_namespaces == ("kube-system",) and str(c.audit_log) == "-"
    path.write_text("store: x\ndeadlinems: 5\ndeadlineMs: 1\n")
    with pytest.raises(ValidationFailed) as exc:
        load_config(path)
    text = str(exc.value)
    assert "deadlinems" in text and "c.yaml:3" in text and "deadlineMs: 1 is less than the minimum of 10" in text


def test_verdict_cache_ttl_negative_and_coalescing() -> None:
    cache: VerdictCache[str] = VerdictCache(ttl=60, negative_ttl=0.05, max_entries=2, positive=lambda v: v == "ok")
    calls: list[str] = []

    def slow() -> str:
        calls.append("x")
        time.sleep(0.2)
        return "ok"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 8 and len(calls) == 1  # eight identical requests, one verification
    assert cache.get("k", lambda: "other") == "ok"
    assert cache.get("bad", lambda: "denied") == "denied"
    assert cache.get("bad", lambda: "still denied") == "denied"  # negative cache, within its TTL
    time.sleep(0.06)
    assert cache.get("bad", lambda: "ok") == "ok"  # negative TTL expired: judged again
    cache.get("k3", lambda: "ok")
    assert len(cache) == 2  # bounded
    with pytest.raises(RuntimeError):
        cache.get("boom", lambda: (_ for _ in ()).throw(RuntimeError("x")))
    assert cache.get("boom", lambda: "ok") == "ok"  # a failure is not cached


def test_dev_certificates_verify_for_the_service_names(tmp_path: Path) -> None:
    bundle = make_certs(tmp_path, service="agentfactory-admission", namespace="agentfactory-system")
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600 and bundle
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "agentfactory-admission.agentfactory-system.svc" in names and "localhost" in names
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")  # the key matches the certificate


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    import shutil
    import socket

    from admission.cli import _reload_certificate

    make_certs(tmp_path / "old", service="s", namespace="n")
    make_certs(tmp_path / "new", service="s", namespace="n")  # another CA: only the new pair verifies under it
    live = tmp_path / "live"
    shutil.copytree(tmp_path / "old", live)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(live / "tls.crt", live / "tls.key")
    threading.Thread(target=_reload_certificate, args=([context], live / "tls.crt", live / "tls.key", 0.05),
                     daemon=True).start()

    def handshake(ca: Path) -> bool:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)

            def serve() -> None:
                conn, _ = listener.accept()
                with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(conn, server_side=True):
                    pass

            thread = threading.Thread(target=serve)
            thread.start()
            client = ssl.create_default_context(cafile=str(ca))
            try:
                with socket.create_connection(listener.getsockname()) as raw, \
                        client.wrap_socket(raw, server_hostname="localhost"):
                    return True
            except ssl.SSLError:
                return False
            finally:
                thread.join()

    assert handshake(tmp_path / "old" / "ca.crt") and not handshake(tmp_path / "new" / "ca.crt")
    time.sleep(0.1)
    for name in ("tls.crt", "tls.key"):
        shutil.copy(tmp_path / "new" / name, live / name)
    deadline = time.monotonic() + 5
    while not handshake(tmp_path / "new" / "ca.crt"):
        assert time.monotonic() < deadline, "the renewed certificate was never loaded"
        time.sleep(0.05)


def test_review_reads_the_subresource() -> None:
    body = review(wasm_pod(f"a@{D}"), operation="UPDATE", sub_resource="ephemeralcontainers")
    assert parse_review(json.dumps(body).encode()).sub_resource == "ephemeralcontainers"
    body["request"]["subResource"] = None
    assert parse_review(json.dumps(body).encode()).sub_resource == ""
    for bad in (3, {"x": 1}, "s" * 65):
        body["request"]["subResource"] = bad
        with pytest.raises(InputError, match="request.subResource"):
            parse_review(json.dumps(body).encode())


class _Engine:
    def __init__(self, admission: object) -> None:
        self.data = {"agentfactory": {"config": {"admission": admission}}}


def test_stage_map_reads_the_policy_data_as_admission_rego_does() -> None:
    from admission.stages import stage_map

    rules = {"prod-eu": "canary", "prod-*": "prod", "prod-eu-*": "dev", "*": "canary"}
    m = stage_map(_Engine({"stages": ["dev", "canary", "prod"], "namespace_stages": rules}), "dev")
    assert m.problem is None
    assert [m.of(ns) for ns in ("prod-eu", "prod-us", "prod-eu-2", "team-a", "")] == [
        "canary", "prod", "dev", "canary", "canary"]
    assert m.of("prod-eu") == "canary"  # remembered, same answer
    assert (m.rank("dev"), m.rank("prod"), m.rank("qa")) == (0, 2, None)
    plain = stage_map(_Engine({"stages": ["dev", "prod"]}), "prod")
    assert plain.problem is None and plain.of("anything") == "prod"  # no namespace_stages: the default


@pytest.mark.parametrize("admission, default, needle", [
    (None, "dev", "has no data.agentfactory.config.admission"),
    ({"stages": "dev"}, "dev", "must be a list of distinct stage names"),
    ({"stages": []}, "dev", "must be a list of distinct stage names"),
    ({"stages": ["dev", 3]}, "dev", "must be a list of distinct stage names"),
    ({"stages": ["dev"]}, "qa", "defaultStage 'qa'"),
    ({"stages": ["dev"], "namespace_stages": ["prod"]}, "dev", "must be an object"),
    ({"stages": ["dev"], "namespace_stages": {"prod": "prod"}}, "dev", "namespace_stages['prod'] is 'prod'"),
    ({"stages": ["dev"], "namespace_stages": {"prod-*-eu": "dev"}}, "dev", "has a * elsewhere than at its end"),
])
def test_a_stage_map_that_cannot_be_trusted_says_why(admission: object, default: str, needle: str) -> None:
    from admission.stages import stage_map

    m = stage_map(_Engine(admission), default)
    assert m.problem and needle in m.problem
    assert stage_map(object(), "dev").problem  # an engine without data
