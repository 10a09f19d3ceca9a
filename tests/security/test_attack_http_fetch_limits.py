"""http.fetch attacks on the caps: a response over the size cap (declared or streamed), more requests than
the contract allows (redirect loops included), a server slower than the invocation's deadline, and a guest
calling in a loop to flood the audit trail. Caps are the smaller of the template's limit and the node's
ceiling; a contract over the ceilings is refused before it runs."""

from __future__ import annotations

import re
import time
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

from sandbox_runtime.http_fetch import FetchError, FetchRequest, HttpNode, HttpSettings


def session_for(ca: Ca, https: Server, tmp_path: Path, limits: dict[str, int], **ceilings: int) -> object:
    node = HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True, **ceilings),
                    audit=audit_sink(tmp_path / "audit.jsonl"))
    grant = grant_of([{"url": f"https://localhost:{https.port}/v1/*", "methods": ["GET", "POST"]}], limits=limits)
    return node.session("triage", grant)


def call(session: object, url: str, method: str = "GET", body: bytes | None = None, seconds: float = 10.0) -> object:
    with invocation(seconds):
        return session.fetch(FetchRequest(method, url, body=body))  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", ["big", "stream"])
def test_a_response_over_the_cap_is_withheld(route: str, ca: Ca, https: Server, tmp_path: Path) -> None:
    session = session_for(ca, https, tmp_path, {"maxResponseKiB": 4})
    body = call(session, https.url("localhost", f"/v1/{route}?n=4096")).body  # type: ignore[attr-defined]
    assert body == (b"y" if route == "stream" else b"x") * 4096
    with pytest.raises(FetchError) as info:
        call(session, https.url("localhost", f"/v1/{route}?n=4097"))
    assert info.value.reason == "too-large" and "4 KiB cap (spec.http.limits.maxResponseKiB" in str(info.value)
    assert audit_records(tmp_path / "audit.jsonl")[-1]["code"] == "too-large"


def test_the_node_ceiling_caps_a_contract_that_asks_for_more(ca: Ca, https: Server, tmp_path: Path) -> None:
    session = session_for(ca, https, tmp_path, {"maxResponseKiB": 1024}, max_response_kib=2)
    with pytest.raises(FetchError) as info:
        call(session, https.url("localhost", "/v1/big?n=3000"))
    assert info.value.reason == "too-large" and "2 KiB cap" in str(info.value)
    grant = grant_of([{"url": "https://api.example.com/*"}], limits={"maxResponseKiB": 1024, "maxRequests": 50})
    assert HttpNode(HttpSettings(max_response_kib=2)).check_grant(grant) == [
        "spec.http.limits.maxRequests is 50, above this node's ceiling of 32 (runtime --http-max-requests)",
        "spec.http.limits.maxResponseKiB is 1024, above this node's ceiling of 2 (runtime --http-max-response-kib)"]
    template = load_http_template(tmp_path, "  http:\n    allow:\n      - url: https://api.example.com/*\n"
                                            "    limits: {maxResponseKiB: 1024}\n")
    assert policy_denials(template.raw, HttpSettings(max_response_kib=2)) == (
        "spec.http.limits.maxResponseKiB is 1024, above the node ceiling of 2 (config node.http.max_response_kib, the "
        "runtime's --http-max-response-kib); lower it to at most 2",)


def test_a_request_body_over_the_cap_is_refused_before_sending(ca: Ca, https: Server, tmp_path: Path) -> None:
    session = session_for(ca, https, tmp_path, {"maxRequestKiB": 1})
    before = len(https.seen)
    with pytest.raises(FetchError) as info:
        call(session, https.url("localhost", "/v1/json"), "POST", b"z" * 1025)
    assert info.value.reason == "too-large" and "1025-byte request body" in str(info.value)
    assert len(https.seen) == before


def test_redirects_count_against_the_request_limit(ca: Ca, https: Server, tmp_path: Path) -> None:
    session = session_for(ca, https, tmp_path, {"maxRequests": 3})
    loop = https.url("localhost", "/v1/redirect?to=/v1/redirect%3Fto%3D/v1/redirect%253Fto%253D/v1/json")
    with pytest.raises(FetchError) as info:
        call(session, loop)
    assert info.value.reason == "request-limit" and "(redirect 3)" in str(info.value)
    with pytest.raises(FetchError) as info:
        call(session, https.url("localhost", "/v1/json"))
    assert info.value.reason == "request-limit"


def test_a_guest_calling_in_a_loop_cannot_flood_the_audit_trail(ca: Ca, https: Server, tmp_path: Path) -> None:
    session = session_for(ca, https, tmp_path, {"maxRequests": 2})
    outcomes = []
    for _ in range(200):
        try:
            call(session, https.url("localhost", "/v1/json"))
            outcomes.append("ok")
        except FetchError as exc:
            outcomes.append(exc.reason)
    assert outcomes[:2] == ["ok", "ok"] and set(outcomes[2:]) == {"request-limit"}
    assert [r["code"] for r in audit_records(tmp_path / "audit.jsonl")] == ["200", "200", "request-limit"]


def test_the_invocation_deadline_bounds_a_slow_server(ca: Ca, https: Server, tmp_path: Path) -> None:
    session = session_for(ca, https, tmp_path, {"timeoutMs": 30000})
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        call(session, https.url("localhost", "/v1/slow?ms=4000"), seconds=0.5)
    took = time.monotonic() - started
    assert info.value.reason == "timeout" and re.search(r"did not answer within 0\.[45][0-9]* s", str(info.value))
    assert took < 3.0  # the server answers after 4 s; the deadline (0.5 s) cut the request
    short = session_for(ca, https, tmp_path, {"timeoutMs": 300})
    with pytest.raises(FetchError) as info:
        call(short, https.url("localhost", "/v1/slow?ms=4000"), seconds=10)
    assert info.value.reason == "timeout" and "within 0.3 s" in str(info.value)
    with pytest.raises(FetchError) as info:
        call(short, https.url("localhost", "/v1/json"), seconds=-1)  # the deadline has passed: nothing is sent
    assert info.value.reason == "deadline"
