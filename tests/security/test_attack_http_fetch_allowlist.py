"""http.fetch attacks on the allowlist: a host, path or method the template did not declare, plain http,
and URLs written to be read differently by the checker and the server. Each is refused with a reason
naming it at build (template loader and template policy) and again at the node (every request)."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_fetch_helpers import (
    Ca,
    Server,
    audit_records,
    audit_sink,
    grant_of,
    invocation,
    load_http_template,
    policy_denials,
)

from agentfactory.errors import ValidationFailed
from agentfactory.httpgrant import UrlError, parse_pattern, parse_url
from sandbox_runtime.http_fetch import FetchError, FetchRequest, HttpNode, HttpSettings
from sandbox_runtime.http_resolve import DnsServerResolver


def node(ca: Ca, dns: int, tmp_path: Path, **settings: bool) -> HttpNode:
    return HttpNode(HttpSettings(allow_loopback=True, ca_file=ca.ca_file, **settings),
                    resolver=DnsServerResolver("127.0.0.1", dns), audit=audit_sink(tmp_path / "audit.jsonl"))


def refused(session: object, url: str, method: str = "GET") -> FetchError:
    with invocation(), pytest.raises(FetchError) as info:
        session.fetch(FetchRequest(method, url))  # type: ignore[attr-defined]
    return info.value


def test_host_outside_the_allowlist_refused_at_the_node(ca: Ca, dns: int, https: Server, tmp_path: Path) -> None:
    grant = grant_of([{"url": f"https://api.test:{https.port}/v1/*"}])
    session = node(ca, dns, tmp_path).session("triage", grant)
    before = len(https.seen)
    err = refused(session, https.url("other.test", "/v1/json"))
    assert err.reason == "not-allowed"
    assert f"https://other.test:{https.port}/v1/json matches none of the agent's allowed URL patterns" in str(err)
    err = refused(session, https.url("api.test", "/v2/json"))
    assert err.reason == "not-allowed" and "/v2/json" in str(err)
    err = refused(session, https.url("api.test", "/v1/json"), method="DELETE")
    assert err.reason == "method" and "allows only GET" in str(err)
    assert len(https.seen) == before  # nothing reached the server
    codes = [r["code"] for r in audit_records(tmp_path / "audit.jsonl")]
    assert codes == ["not-allowed", "not-allowed", "method"]
    with invocation():  # and what is allowed goes through
        assert session.fetch(FetchRequest("GET", https.url("api.test", "/v1/json"))).status == 200


def test_plain_http_refused_unless_the_node_allows_it(ca: Ca, dns: int, plain: Server, tmp_path: Path) -> None:
    grant = grant_of([{"url": f"http://api.test:{plain.port}/v1/*"}])
    err = refused(node(ca, dns, tmp_path).session("triage", grant), plain.url("api.test", "/v1/json"))
    assert err.reason == "plain-http" and "--http-allow-plain-http" in str(err)
    assert node(ca, dns, tmp_path).check_grant(grant) == [
        f"spec.http.allow[0].url: 'http://api.test:{plain.port}/v1/*' is plain http, which this node refuses "
        "(runtime --http-allow-plain-http)"]
    allowing = node(ca, dns, tmp_path, allow_plain_http=True)
    assert allowing.check_grant(grant) == []
    with invocation():
        assert allowing.session("triage", grant).fetch(FetchRequest("GET", plain.url("api.test", "/v1/json"))).status \
            == 200


def test_plain_http_and_unlisted_hosts_refused_at_build(tmp_path: Path) -> None:
    fields = """  http:
    allow:
      - url: http://api.example.com/v1/*
  secrets:
    - {name: api-key, header: Authorization, format: "Bearer {value}", hosts: [api.example.com, evil.example.org]}
"""
    failed = load_http_template(tmp_path, fields)
    assert isinstance(failed, ValidationFailed)
    text = str(failed)
    assert "secret 'api-key' is bound to host 'evil.example.org', which no spec.http.allow pattern names" in text
    assert "secret 'api-key' is bound to host 'api.example.com', which an allow pattern reaches over plain http" in text
    assert "agent.yaml:18: spec.secrets[0].hosts[1]" in text  # file, line and field
    ok = load_http_template(tmp_path, "  http:\n    allow:\n      - url: http://api.example.com/v1/*\n")
    denials = policy_denials(ok.raw, HttpSettings())
    assert denials == ('spec.http.allow[0].url "http://api.example.com/v1/*" is plain http, which the node refuses '
                       "(config node.http.allow_plain_http, the runtime's --http-allow-plain-http); use https",)
    assert policy_denials(ok.raw, HttpSettings(allow_plain_http=True)) == ()


@pytest.mark.parametrize(("url", "why"), [
    ("https://api.test@evil.test/v1/x", "user info"),
    ("https://api.test/v1/../admin", "'.' or '..' segment"),
    ("https://api.test/v1/%2e%2e/admin", "'.' or '..' segment"),
    ("https://api.test/v1%2fadmin", "encoded '/'"),
    ("https://api.test/v1/a%5cb", "encoded '\\'"),
    ("https://api.test\\@evil.test/v1/", "outside RFC 3986"),
    ("https://api.test/v1/\u0430", "outside RFC 3986"),
    ("https://api.te st/v1/", "outside RFC 3986"),
    ("https://2130706433/v1/", "non-canonical form"),
    ("https://127.1/v1/", "non-canonical form"),
    ("https://0x7f.0.0.1/v1/", "non-canonical form"),
    ("https://[::1]/v1/", "IPv6 literals"),
    ("https://api.test:99999/v1/", "port"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("//api.test/v1/", "not scheme://host/path"),
    ("gopher://api.test/v1/", "scheme 'gopher'"),
])
def test_urls_read_two_ways_are_refused(url: str, why: str, ca: Ca, dns: int, https: Server,
                                        tmp_path: Path) -> None:
    with pytest.raises(UrlError, match=None) as info:
        parse_url(url)
    assert why in str(info.value)
    session = node(ca, dns, tmp_path).session("triage", grant_of([{"url": "https://api.test/v1/*"}]))
    err = refused(session, url)
    assert err.reason == "bad-url" and why in str(err)


def test_patterns_match_exactly_what_they_say() -> None:
    p = parse_pattern("https://*.example.com/v1/*")
    assert p.matches(parse_url("https://a.b.example.com/v1/x?q=1"))
    assert not p.matches(parse_url("https://example.com/v1/x"))  # the wildcard is below the domain
    assert not p.matches(parse_url("https://evil-example.com/v1/x"))
    assert not p.matches(parse_url("https://a.example.com.evil.test/v1/x"))
    assert not p.matches(parse_url("https://a.example.com:8443/v1/x"))  # another port
    assert not p.matches(parse_url("http://a.example.com/v1/x"))
    assert not p.matches(parse_url("https://a.example.com/v10"))
    exact = parse_pattern("https://API.Example.com./v1/chat")
    assert exact.host == "api.example.com" and exact.matches(parse_url("https://api.example.com/v1/chat?x=1"))
    assert not exact.matches(parse_url("https://api.example.com/v1/chat/more"))
    for bad in ("https://api.*.com/", "https://api.example.com/v1/*/x", "https://api.example.com/v1?x=*"):
        with pytest.raises(UrlError):
            parse_pattern(bad)


def test_a_secret_in_a_header_the_host_owns_refused_at_build(tmp_path: Path) -> None:
    fields = """  http:
    allow:
      - url: https://api.example.com/v1/*
        methods: [GET]
  secrets:
    - {name: api-key, header: Host, format: "{value}", hosts: [api.example.com]}
"""
    failed = load_http_template(tmp_path, fields)
    assert isinstance(failed, ValidationFailed)
    assert "header 'Host' is set by the host only" in str(failed)
