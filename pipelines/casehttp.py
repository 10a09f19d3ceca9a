"""`http.fetch` in the pipeline's test stage: answers a case declares, judged by the agent's grant, no network.

A build machine must not depend on (or leak to) the APIs an agent calls, so a test case lists the
exchanges it expects (`http:` in tests/cases.yaml) and the test stage answers from them:

    http:
      - method: POST                                  # default GET
        url: https://models.example.com/v1/classify   # exact, query included
        status: 200                                   # default 200
        json: {"category": "billing"}                 # or body: "text" (and headers: [[name, value]])

Each request is judged as the node judges it, by the signed grant's own model (agentfactory.httpgrant):
the strict URL grammar, an allow pattern with the method, the request cap, headers the node reserves or
fills from a secret, and the response cap. No secret is read here: the stage injects none, which is
what the agent sees on a node too. A request with no answer left is an error string to the agent, as a
refused request is on a node; an answer the agent never asked for fails the case, so a case cannot
silently stop exercising the API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentfactory.errors import InputError
from agentfactory.httpgrant import RESERVED_HEADERS, HttpGrant, UrlError, parse_url

FIXTURE_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": 100,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]},
            "url": {"type": "string", "minLength": 8, "maxLength": 2048},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "headers": {"type": "array", "maxItems": 64, "items": {
                "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string"}}},
            "body": {"type": "string"},
            "json": {},
        },
        "not": {"required": ["body", "json"]},
    },
}


def check_fixtures(grant: HttpGrant | None, fixtures: list[dict[str, Any]], where: str) -> None:
    """InputError naming the fixture whose request the agent could never make (its grant does not allow it)."""
    for i, fixture in enumerate(fixtures):
        here = f"{where}: http[{i}]"
        if grant is None:
            raise InputError(here, "the template has no spec.http, so its agent can make no request")
        try:
            url = parse_url(fixture["url"])
        except UrlError as exc:
            raise InputError(here, f"url {fixture['url']!r}: {exc}") from None
        rule = grant.rule_for(url)
        method = fixture.get("method", "GET")
        if rule is None or method not in rule.methods:
            raise InputError(here, f"{method} {fixture['url']} is not allowed by spec.http.allow, so the agent "
                             "could never get this answer")


@dataclass
class CaseHttp:
    """One case's `http.fetch`: its answers, consumed in order per (method, URL)."""

    grant: HttpGrant
    fixtures: list[dict[str, Any]]
    used: list[bool] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.used = [False] * len(self.fixtures)

    def fetch(self, method: str, url_text: str, headers: list[tuple[str, str]],
              body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) of the answer; ValueError with the message the agent gets."""
        self.requests += 1
        limits = self.grant.limits
        if self.requests > limits.max_requests:
            raise ValueError(f"http.fetch: the agent already made {limits.max_requests} requests in this "
                             "invocation, its limit (spec.http.limits.maxRequests)")
        try:
            url = parse_url(url_text)
        except UrlError as exc:
            raise ValueError(f"http.fetch: URL {url_text[:200]!r}: {exc}") from None
        rule = self.grant.rule_for(url)
        if rule is None:
            raise ValueError(f"http.fetch: {url.shown()} matches none of the agent's allowed URL patterns "
                             "(spec.http.allow)")
        if method not in rule.methods:
            raise ValueError(f"http.fetch: {method} {url.shown()}: the pattern {rule.pattern.text!r} allows only "
                             f"{', '.join(rule.methods)}")
        bound = {b.header.lower(): b.name for b in self.grant.secrets_for(url)}
        for name, _ in headers:
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"http.fetch: header {name} is set by the host; remove it from the request")
            if name.lower() in bound:
                raise ValueError(f"http.fetch: header {name} is set by the node from secret {bound[name.lower()]!r} "
                                 f"for {url.host}; remove it from the request")
        if body is not None and len(body) > limits.max_request_kib * 1024:
            raise ValueError(f"http.fetch: the request body is {len(body)} bytes, over spec.http.limits."
                             f"maxRequestKiB ({limits.max_request_kib})")
        for i, fixture in enumerate(self.fixtures):
            if not self.used[i] and fixture.get("method", "GET") == method and fixture["url"] == url_text:
                self.used[i] = True
                return _answer(fixture, limits.max_response_kib * 1024)
        raise ValueError(f"http.fetch (test stage): tests/cases.yaml gives no answer (left) for {method} "
                         f"{url.shown()}; the test stage never reaches the network")

    def unused(self) -> list[str]:
        """The answers the agent never asked for, as `METHOD URL`."""
        return [f"{f.get('method', 'GET')} {f['url']}" for f, used in zip(self.fixtures, self.used, strict=True)
                if not used]


def _answer(fixture: dict[str, Any], cap: int) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(str(n), str(v)) for n, v in fixture.get("headers", [])]
    if "json" in fixture:
        body = json.dumps(fixture["json"]).encode()
        if not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", "application/json"))
    else:
        body = str(fixture.get("body", "")).encode()
    if len(body) > cap:
        raise ValueError(f"http.fetch: the response body is over spec.http.limits.maxResponseKiB ({cap // 1024})")
    return int(fixture.get("status", 200)), headers, body
