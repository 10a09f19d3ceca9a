"""The node's --http-connect-to (as curl's): requests for HOST:PORT go to IP:PORT without resolving HOST. It must
not become a way around the address rules or TLS: the target address is judged like a resolved one (loopback and
private only where the node allows them, metadata and link-local never), and the certificate is still verified
for the URL's host. A malformed setting is refused naming it, before the node starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_fetch_helpers import Ca, Server, audit_records, audit_sink, grant_of, invocation

from agentfactory.errors import ConfigError
from sandbox_runtime.http_fetch import FetchError, FetchRequest, HttpNode, HttpSettings
from sandbox_runtime.http_node import parse_connect_to

GRANT = [{"url": "https://api.test/v1/*"}, {"url": "https://uncertified.test/v1/*"}]


def node(ca: Ca, target: tuple[str, int], *, host: str = "api.test", audit: Path | None = None,
         **allow: bool) -> HttpNode:
    settings = HttpSettings(ca_file=ca.ca_file, connect_to=((host, 443, *target),), **allow)
    return HttpNode(settings, audit=audit_sink(audit) if audit else None)


def test_a_request_goes_to_the_configured_address_with_tls_for_the_host(ca: Ca, https: Server) -> None:
    session = node(ca, ("127.0.0.1", https.port), allow_loopback=True).session("triage", grant_of(GRANT))
    before = len(https.seen)
    with invocation():
        answer = session.fetch(FetchRequest("GET", "https://api.test/v1/json"))
    assert answer.status == 200 and len(https.seen) == before + 1


@pytest.mark.parametrize(("target", "allow", "why"), [
    ("127.0.0.1", {}, "is a loopback address; this node does not let agents reach it (runtime --http-allow-loopback)"),
    ("10.1.2.3", {"allow_loopback": True}, "is a private address"),
    ("169.254.169.254", {"allow_loopback": True, "allow_private": True}, "metadata"),
    ("169.254.10.10", {"allow_loopback": True, "allow_private": True}, "link-local"),
    ("0.0.0.0", {"allow_loopback": True, "allow_private": True}, "unspecified"),
])
def test_the_target_address_is_judged_like_a_resolved_one(target: str, allow: dict[str, bool], why: str, ca: Ca,
                                                           https: Server, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    session = node(ca, (target, https.port), audit=audit, **allow).session("triage", grant_of(GRANT))
    before = len(https.seen)
    with invocation(), pytest.raises(FetchError) as info:
        session.fetch(FetchRequest("GET", "https://api.test/v1/json"))
    assert info.value.reason == "address" and why in str(info.value), str(info.value)
    assert len(https.seen) == before and audit_records(audit)[-1]["code"] == "address"


def test_tls_is_still_verified_for_the_urls_host(ca: Ca, https: Server) -> None:
    """The test server's certificate names api.test, other.test and localhost: sending uncertified.test there fails."""
    session = node(ca, ("127.0.0.1", https.port), host="uncertified.test", allow_loopback=True) \
        .session("triage", grant_of(GRANT))
    with invocation(), pytest.raises(FetchError) as info:
        session.fetch(FetchRequest("GET", "https://uncertified.test/v1/json"))
    assert info.value.reason == "tls" and "uncertified.test" in str(info.value)


def test_only_the_named_host_and_port_are_redirected(ca: Ca, https: Server) -> None:
    """api.test:8443 is not api.test:443: it is resolved (and api.test does not resolve here)."""
    session = node(ca, ("127.0.0.1", https.port), allow_loopback=True) \
        .session("triage", grant_of([{"url": "https://api.test:8443/v1/*"}]))
    with invocation(), pytest.raises(FetchError) as info:
        session.fetch(FetchRequest("GET", "https://api.test:8443/v1/json"))
    assert info.value.reason == "dns"


def test_the_setting_parses_strictly() -> None:
    assert parse_connect_to("models.example.com:443=127.0.0.1:8443") == ("models.example.com", 443, "127.0.0.1", 8443)
    assert parse_connect_to("api.test:443=[::1]:9000") == ("api.test", 443, "::1", 9000)
    for bad, says in [("models.example.com=127.0.0.1:8443", "HOST:PORT=IP:PORT"),
                      ("models.example.com:443", "HOST:PORT=IP:PORT"),
                      ("*.example.com:443=127.0.0.1:8443", "not a wildcard"),
                      ("models.example.com:443=localhost:8443", "is not an IP address"),
                      ("models.example.com:443=127.0.0.1:0", "port '0'"),
                      ("models.example.com:http=127.0.0.1:80", "port 'http'"),
                      ("Models..example.com:443=127.0.0.1:80", "host")]:
        with pytest.raises(ConfigError) as info:
            parse_connect_to(bad)
        assert says in str(info.value) and bad in str(info.value), (bad, str(info.value))
