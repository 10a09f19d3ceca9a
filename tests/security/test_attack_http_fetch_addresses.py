"""http.fetch attacks on addresses: loopback, private, link-local and metadata addresses reached by name,
by redirect, or by a DNS answer that changes between the check and the connection (rebinding). The node
judges every address a name resolves to, connects to the address it judged, and judges every redirect
hop again; the template policy refuses such hosts by name and literal at build."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from http_fetch_helpers import (
    Ca,
    Server,
    audit_records,
    audit_sink,
    dns_serving,
    grant_of,
    invocation,
    load_http_template,
    policy_denials,
)

from agentfactory.httpgrant import HttpGrant
from sandbox_runtime.http_fetch import FetchError, FetchRequest, HttpNode, HttpSettings
from sandbox_runtime.http_resolve import DnsServerResolver, SystemResolver, classify, literal


def grant(port: int) -> HttpGrant:
    return grant_of([{"url": f"https://api.test:{port}/v1/*"}, {"url": f"https://other.test:{port}/v1/*"},
                     {"url": f"https://localhost:{port}/v1/*"}, {"url": "https://169.254.169.254/latest/*"},
                     {"url": "https://meta.test/latest/*"}])


def test_loopback_is_refused_by_default_even_when_allowlisted(ca: Ca, https: Server, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    session = HttpNode(HttpSettings(ca_file=ca.ca_file), resolver=SystemResolver(),
                       audit=audit_sink(audit)).session("triage", grant(https.port))
    before = len(https.seen)
    with invocation(), pytest.raises(FetchError) as info:
        session.fetch(FetchRequest("GET", https.url("localhost", "/v1/json")))
    assert info.value.reason == "address"
    assert "localhost resolves to 127.0.0.1 is a loopback address; this node does not let agents reach it " \
           "(runtime --http-allow-loopback)" in str(info.value)
    assert len(https.seen) == before
    assert audit_records(audit)[-1]["code"] == "address"
    allowing = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True)).session("triage", grant(https.port))
    with invocation():
        assert allowing.fetch(FetchRequest("GET", https.url("localhost", "/v1/json"))).status == 200


@pytest.mark.parametrize(("target", "kind"), [
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://meta.test/latest/api-token", "metadata"),
    ("https://other.test:{port}/v1/json", "private"),
])
def test_a_redirect_to_a_refused_address_is_refused(target: str, kind: str, ca: Ca, https: Server,
                                                    tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    answers = {"api.test": [["127.0.0.1"]], "other.test": [["10.0.0.7"]], "meta.test": [["169.254.169.254"]]}
    with dns_serving(answers) as dns:
        node = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True, allow_private=False),
                        resolver=DnsServerResolver("127.0.0.1", dns.port), audit=audit_sink(audit))
        session = node.session("triage", grant(https.port))
        location = quote(target.format(port=https.port), safe="")
        with invocation(), pytest.raises(FetchError) as info:
            session.fetch(FetchRequest("GET", https.url("api.test", f"/v1/redirect?code=307&to={location}")))
    assert info.value.reason == "address"
    assert "(redirect 1)" in str(info.value) and f"is a {kind} address" in str(info.value)
    hops = audit_records(audit)
    assert [h["code"] for h in hops] == ["307", "address"]
    assert hops[1]["address"] is None and "redirect 1" in hops[1]["message"]


def test_a_redirect_out_of_the_allowlist_is_refused(ca: Ca, https: Server, tmp_path: Path) -> None:
    with dns_serving({"api.test": [["127.0.0.1"]]}) as dns:
        node = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True),
                        resolver=DnsServerResolver("127.0.0.1", dns.port))
        session = node.session("triage", grant(https.port))
        for to, reason in ((f"https://api.test:{https.port}/admin", "not-allowed"),
                           ("https://evil.example/x", "not-allowed"),
                           (f"http://api.test:{https.port}/v1/json", "not-allowed"),
                           ("https://user@api.test/v1/", "redirect")):
            with invocation(), pytest.raises(FetchError) as info:
                session.fetch(FetchRequest("GET", https.url("api.test", f"/v1/redirect?to={quote(to, safe='')}")))
            assert info.value.reason == reason, (to, info.value)
        with invocation():  # a redirect inside the allowlist is followed, and checked like the first hop
            fresh = node.session("triage", grant(https.port))
            ok = fresh.fetch(FetchRequest("GET", https.url("api.test", "/v1/redirect?to=/v1/json")))
        assert ok.status == 200 and b'"path": "/v1/json"' in ok.body


def test_dns_rebinding_cannot_move_a_request(ca: Ca, https: Server, tmp_path: Path) -> None:
    """The answer changes from loopback (allowed here) to the metadata address after the first lookup: the
    request that was judged goes to the judged address (one lookup per request, none at connect time), and
    the next request, which sees the new answer, is refused naming it."""
    audit = tmp_path / "audit.jsonl"
    with dns_serving({"api.test": [["127.0.0.1"], ["169.254.169.254"]]}) as dns:
        node = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True),
                        resolver=DnsServerResolver("127.0.0.1", dns.port), audit=audit_sink(audit))
        session = node.session("triage", grant(https.port))
        before = len(https.seen)
        with invocation():
            first = session.fetch(FetchRequest("GET", https.url("api.test", "/v1/json")))
        assert first.status == 200 and len(https.seen) == before + 1
        assert [q for q in dns.queries if q[1] == 1] == [("api.test", 1)]  # resolved once: the check's lookup
        with invocation(), pytest.raises(FetchError) as info:
            session.fetch(FetchRequest("GET", https.url("api.test", "/v1/json")))
    assert info.value.reason == "address"
    assert "api.test resolves to 169.254.169.254 is a metadata address; agents may never reach it" in str(info.value)
    assert len(https.seen) == before + 1
    assert [(r["code"], r["address"]) for r in audit_records(audit)] == [("200", "127.0.0.1"), ("address", None)]


def test_an_answer_mixing_allowed_and_refused_addresses_is_refused(ca: Ca, https: Server) -> None:
    with dns_serving({"api.test": [["127.0.0.1", "10.1.2.3"]]}) as dns:
        node = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True),
                        resolver=DnsServerResolver("127.0.0.1", dns.port))
        with invocation(), pytest.raises(FetchError) as info:
            node.session("triage", grant(https.port)).fetch(FetchRequest("GET", https.url("api.test", "/v1/json")))
    assert "10.1.2.3 is a private address" in str(info.value) and "--http-allow-private" in str(info.value)


def test_tls_is_verified_for_the_name_not_the_address(ca: Ca, https: Server, tmp_path: Path) -> None:
    """The connection goes to the judged address, but the certificate must still be the host name's: a name
    the certificate does not cover is refused even though the address is the same server."""
    with dns_serving({"api.test": [["127.0.0.1"]], "nocert.test": [["127.0.0.1"]]}) as dns:
        node = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True),
                        resolver=DnsServerResolver("127.0.0.1", dns.port))
        session = node.session("triage", grant_of([{"url": f"https://nocert.test:{https.port}/v1/*"}]))
        with invocation(), pytest.raises(FetchError) as info:
            session.fetch(FetchRequest("GET", https.url("nocert.test", "/v1/json")))
        assert info.value.reason == "tls" and "not trusted for nocert.test" in str(info.value)
        untrusting = HttpNode(HttpSettings(allow_loopback=True), resolver=DnsServerResolver("127.0.0.1", dns.port))
        with invocation(), pytest.raises(FetchError) as info:
            untrusting.session("triage", grant(https.port)).fetch(FetchRequest("GET", https.url("api.test", "/v1/j")))
        assert info.value.reason == "tls"  # the system's roots do not hold the test CA


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.0.1", "private"), ("100.64.1.1", "private"),
    ("fd12::1", "private"), ("fd00:ec2::254", "metadata"), ("169.254.169.254", "metadata"),
    ("::ffff:169.254.169.254", "metadata"), ("64:ff9b::a9fe:a9fe", "metadata"), ("2002:a9fe:a9fe::1", "metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("203.0.113.5", "reserved"), ("240.0.0.1", "reserved"),
    ("93.184.216.34", "global"), ("2606:4700::1111", "global"),
])
def test_address_classes(address: str, kind: str) -> None:
    found = literal(address)
    assert found is not None and classify(found) == kind


def test_loopback_private_and_metadata_hosts_refused_at_build(tmp_path: Path) -> None:
    for url, expected in (
            ("https://localhost:8443/v1/*", "host localhost is a loopback host, which the node refuses "
                                            "(config node.http.allow_loopback, the runtime's --http-allow-loopback)"),
            ("https://10.0.0.8/v1/*", "host 10.0.0.8 is a private host, which the node refuses"),
            ("https://vault.internal/v1/*", "host vault.internal is a private host"),
            ("https://169.254.169.254/latest/*", "host 169.254.169.254 is a metadata host, which the node refuses "
                                                 "(agents may never reach it)"),
            ("https://metadata.google.internal/*", "is a metadata host")):
        template = load_http_template(tmp_path, f"  http:\n    allow:\n      - url: {url}\n")
        denials = policy_denials(template.raw, HttpSettings())
        assert len(denials) == 1 and expected in denials[0], (url, denials)
    template = load_http_template(tmp_path, "  http:\n    allow:\n      - url: https://127.0.0.1:8443/v1/*\n")
    assert policy_denials(template.raw, HttpSettings(allow_loopback=True)) == ()
    assert HttpNode(HttpSettings()).check_grant(template.http) == [
        "spec.http.allow[0].url: 'https://127.0.0.1:8443/v1/*': 127.0.0.1 is a loopback address; this node does not "
        "let agents reach it (runtime --http-allow-loopback)"]
