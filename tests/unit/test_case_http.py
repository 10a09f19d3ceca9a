"""http.fetch in the pipeline's test stage (pipelines/casehttp.py): answers from tests/cases.yaml, never the network,
each request judged by the agent's grant as a node judges it. A case cannot test what a node would refuse, and a
fixture the agent could never reach is a mistake in the case, refused when the cases are loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_fetch_helpers import grant_of

from agentfactory.errors import InputError
from agentfactory.template import load_template
from pipelines.casehttp import CaseHttp, check_fixtures
from pipelines.casetests import load_cases

GRANT = grant_of([{"url": "https://models.example.com/v1/*", "methods": ["POST"]}],
                 [{"name": "api-key", "header": "Authorization", "format": "Bearer {value}",
                   "hosts": ["models.example.com"]}],
                 {"maxRequests": 2, "maxResponseKiB": 1, "maxRequestKiB": 1})
URL = "https://models.example.com/v1/classify"


def test_answers_are_served_in_order_and_counted() -> None:
    http = CaseHttp(GRANT, [{"method": "POST", "url": URL, "json": {"a": 1}},
                            {"method": "POST", "url": URL, "status": 503, "body": "busy"}])
    assert http.fetch("POST", URL, [], b"{}") == (200, [("Content-Type", "application/json")], b'{"a": 1}')
    assert http.fetch("POST", URL, [], None) == (503, [], b"busy")
    assert http.unused() == []
    with pytest.raises(ValueError, match=r"already made 2 requests .*maxRequests"):
        http.fetch("POST", URL, [], None)


@pytest.mark.parametrize(("method", "url", "headers", "body", "says"), [
    ("POST", "https://evil.example.com/v1/x", [], None, "matches none of the agent's allowed URL patterns"),
    ("POST", "https://models.example.com/v2/x", [], None, "matches none"),
    ("GET", URL, [], None, "allows only POST"),
    ("POST", "https://models.example.com/v1/../admin", [], None, "URL"),
    ("POST", "http://models.example.com/v1/classify", [], None, "matches none"),
    ("POST", URL, [("Authorization", "Bearer stolen")], None, "set by the node from secret 'api-key'"),
    ("POST", URL, [("Host", "evil.example.com")], None, "set by the host"),
    ("POST", URL, [], b"x" * 1025, "over spec.http.limits.maxRequestKiB (1)"),
    ("POST", URL + "?other", [], None, "gives no answer (left) for POST"),
])
def test_a_request_a_node_would_refuse_is_refused(method: str, url: str, headers: list[tuple[str, str]],
                                                  body: bytes | None, says: str) -> None:
    http = CaseHttp(GRANT, [{"method": "POST", "url": URL, "json": {}}])
    with pytest.raises(ValueError) as info:
        http.fetch(method, url, headers, body)
    assert says in str(info.value), str(info.value)
    assert http.unused() == [f"POST {URL}"]


def test_an_answer_over_the_response_cap_is_refused() -> None:
    http = CaseHttp(GRANT, [{"method": "POST", "url": URL, "body": "x" * 1025}])
    with pytest.raises(ValueError, match=r"over spec.http.limits.maxResponseKiB \(1\)"):
        http.fetch("POST", URL, [], None)


@pytest.mark.parametrize(("fixture", "says"), [
    ({"method": "POST", "url": "https://elsewhere.example.com/v1/x"}, "not allowed by spec.http.allow"),
    ({"url": URL}, "GET https://models.example.com/v1/classify is not allowed"),
    ({"method": "POST", "url": "https://models.example.com/v1/%2e%2e/x"}, "url"),
])
def test_a_fixture_the_agent_could_never_reach_is_refused(fixture: dict[str, str], says: str) -> None:
    with pytest.raises(InputError) as info:
        check_fixtures(GRANT, [fixture], "t/tests/cases.yaml:3")
    assert says in str(info.value) and "http[0]" in str(info.value)
    with pytest.raises(InputError, match="no spec.http"):
        check_fixtures(None, [fixture], "t/tests/cases.yaml:3")


def test_cases_with_http_load_only_for_component_agents(tmp_path: Path) -> None:
    folder = tmp_path / "wordy"
    (folder / "src").mkdir(parents=True)
    (folder / "tests").mkdir()
    (folder / "src" / "main.wat").write_text('(module (func (export "_start")))')
    (folder / "agent.yaml").write_text("""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata: {name: wordy, version: 1.0.0, description: d, owners: ["@x/y"]}
spec:
  language: wat
  sources: [src/main.wat]
  tools: [http.fetch]
  http: {allow: [{url: "https://api.example.com/v1/*"}]}
  limits: {memoryMiB: 1, timeoutMs: 1000}
""")
    (folder / "tests" / "cases.yaml").write_text(
        "cases:\n  - name: a\n    http:\n      - url: https://api.example.com/v1/x\n")
    template = load_template(folder, "wordy/agent.yaml")
    with pytest.raises(InputError) as info:
        load_cases(template, "wordy")
    assert "wordy/tests/cases.yaml:3" in str(info.value) and "component agents" in str(info.value)
