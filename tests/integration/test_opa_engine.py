"""The OPA engine against a real `opa run --server` on loopback: same decisions as regopy, and closed failures.

The server runs the bundle built from policies/ (agentfactory/policy_bundle.py). Whatever goes wrong
between the engine and the server must deny with a reason: the server stopped or never there, a
server that accepts and never answers, an answer trickled one byte at a time, garbage, answers of
another shape, another bundle revision, another config, a server without the bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from opa_server import Answer, OPAServer, free_port, lying_opa, running_opa, silent_server
from peer_tools import require
from policy_corpus import corpus, difference

from agentfactory.errors import ConfigError
from agentfactory.policy import RegoEngine
from agentfactory.policy_bundle import build_bundle, policy_revision
from agentfactory.policy_opa import OPAEngine
from agentfactory.policy_select import open_engine

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
ALLOWED = json.loads((ROOT / "examples/inputs/policy/admission.json").read_text())
DENIED = json.loads((ROOT / "examples/inputs/policy/admission-denied.json").read_text())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "bundle.tar.gz"
    build_bundle(POLICIES, path)
    return path


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAServer]:
    with running_opa(require("opa"), bundle, tmp_path_factory.mktemp("opa")) as s:
        yield s


@pytest.fixture
def engine(server: OPAServer) -> Iterator[OPAEngine]:
    e = OPAEngine(server.url, POLICIES)
    yield e
    e.close()


def test_the_bundle_is_what_opa_reads(bundle: Path) -> None:
    """`opa inspect` reads the archive: its revision names the policies, its root is agentfactory."""
    proc = subprocess.run([str(require("opa")), "inspect", "--format", "json", str(bundle)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["manifest"]
    assert manifest["revision"] == policy_revision(POLICIES)
    assert manifest["roots"] == ["agentfactory"]
    again = bundle.with_name("again.tar.gz")
    build_bundle(POLICIES, again)
    assert again.read_bytes() == bundle.read_bytes(), "the same folder gives the same bytes"


def test_same_decisions_as_regopy_on_the_corpus(engine: OPAEngine) -> None:
    rego = RegoEngine(POLICIES)
    cases = corpus(hostile_stride=30, shapes=False)
    assert len(cases) >= 500
    differences = []
    for case in cases:
        ours = engine.decide(case.policy, case.document)
        if why := difference(case, rego.decide(case.policy, case.document), ours):
            differences.append(f"{case.policy}/{case.name}: {why}")
    assert not differences, f"{len(differences)} of {len(cases)} differ:\n" + "\n".join(differences[:20])
    decisions = [engine.decide(c.policy, c.document) for c in cases[:40]]
    assert any(d.allow for d in decisions) and any(not d.allow and not d.refused for d in decisions)


def test_admission_warnings_come_through(engine: OPAEngine) -> None:
    document = json.loads(json.dumps(ALLOWED))
    document["verdict"]["score"] = 9.0
    decision = engine.decide("admission", document)
    assert decision.allow and decision.warn == RegoEngine(POLICIES).decide("admission", document).warn != ()


def test_one_engine_serves_many_threads(engine: OPAEngine) -> None:
    def run(i: int) -> bool:
        return engine.decide("admission", ALLOWED if i % 2 else DENIED).allow is bool(i % 2)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(run, range(200)))


# --- the server is not there, or does not answer ---------------------------------------------------

def test_a_stopped_server_fails_closed(bundle: Path, tmp_path: Path) -> None:
    with running_opa(require("opa"), bundle, tmp_path) as s:
        e = OPAEngine(s.url, POLICIES)
        assert e.decide("admission", ALLOWED).allow
    decision = e.decide("admission", ALLOWED)  # the keep-alive connection is gone, and so is the server
    assert not decision.allow and decision.refused
    assert "cannot be reached" in decision.deny[0] and s.url in decision.deny[0]


def test_nothing_listening_fails_closed() -> None:
    e = OPAEngine(f"http://127.0.0.1:{free_port()}", POLICIES)
    e.warm_up()  # never raises: each decision says why
    decision = e.decide("template", {"template": {}})
    assert decision.refused and not decision.allow
    assert "ConnectionRefusedError" in decision.deny[0]


def test_a_server_that_never_answers_times_out() -> None:
    with silent_server() as url:
        decision = OPAEngine(url, POLICIES, timeout=0.3).decide("admission", ALLOWED)
    assert decision.refused and not decision.allow
    assert "no answer within 0.3 s" in decision.deny[0]


def test_an_answer_trickled_byte_by_byte_times_out_as_a_whole(server: OPAServer) -> None:
    """Each byte arrives well within the timeout: only a deadline for the whole request stops it."""
    with lying_opa(server.url) as proxy:
        proxy.lies.append(lambda method, path, a: Answer(a.status, a.headers, a.body, byte_delay_s=0.05)
                          if "/decision" in path else a)
        decision = OPAEngine(proxy.url, POLICIES, timeout=0.5).decide("admission", ALLOWED)
    assert decision.refused and not decision.allow
    assert "no answer within 0.5 s" in decision.deny[0]


# --- the server answers, but not a decision this engine can trust -------------------------------

def _rewrite(change: Callable[[dict[str, Any]], Any]) -> Callable[[str, str, Answer], Answer]:
    """A lie on the decision answer: its JSON document changed by `change` (which may return bytes)."""
    def lie(method: str, path: str, answer: Answer) -> Answer:
        if "/decision" not in path:
            return answer
        doc = json.loads(answer.body)
        changed = change(doc)
        body = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
        return Answer(answer.status, answer.headers, body)
    return lie


def _result(**fields: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda doc: {**doc, "result": {**doc["result"], **fields}}


def _without(*keys: str) -> Callable[[dict[str, Any]], Any]:
    return lambda doc: {**doc, "result": {k: v for k, v in doc["result"].items() if k not in keys}}


def _text(text: str) -> Callable[[dict[str, Any]], Any]:
    return lambda doc: text.replace("PROVENANCE", json.dumps(doc["provenance"])).encode()


def _status(status: int, body: bytes) -> Callable[[str, str, Answer], Answer]:
    return lambda method, path, a: Answer(status, a.headers, body) if "/decision" in path else a


LIES: dict[str, tuple[Callable[[str, str, Answer], Answer], str]] = {
    "not JSON": (_rewrite(lambda doc: b"<html>allow</html>"), "the answer is not JSON"),
    "allow twice, the last true": (_rewrite(_text('{"provenance": PROVENANCE, "result": {"allow": false, '
                                                  '"deny": [], "warn": [], "allow": true}}')),
                                   "names 'allow' twice"),
    "allow as a string": (_rewrite(_result(allow="true")), "allow is a JSON str"),
    "allow as a number": (_rewrite(_result(allow=1)), "allow is a JSON int"),
    "no allow": (_rewrite(_without("allow")), "the decision has no allow"),
    "deny as an object": (_rewrite(_result(deny={})), "deny is a JSON dict"),
    "deny with a number": (_rewrite(_result(deny=[1])), "deny[0] is a JSON int"),
    "no deny": (_rewrite(_without("deny")), "the decision has no deny"),
    "warn as a string": (_rewrite(_result(warn="w")), "warn is a JSON str"),
    "an extra key": (_rewrite(_result(admin=True)), "unexpected 'admin'"),
    "result null": (_rewrite(lambda doc: {**doc, "result": None}), "the decision is a JSON NoneType"),
    "result a list": (_rewrite(lambda doc: {**doc, "result": [True]}), "the decision is a JSON list"),
    "undefined": (_rewrite(lambda doc: {"provenance": doc["provenance"]}), "is undefined on the server"),
    "NaN": (_rewrite(_text('{"provenance": PROVENANCE, "result": {"allow": NaN, "deny": [], "warn": []}}')),
            "holds NaN"),
    "a JSON array": (_rewrite(lambda doc: [doc]), "the answer is a JSON list"),
    "another revision": (_rewrite(lambda doc: {**doc, "provenance": {"bundles": {
        name: {"revision": "sha256:" + "0" * 64} for name in doc["provenance"]["bundles"]}}}),
        "the answer comes from bundle revision 'sha256:0000"),
    "no provenance": (_rewrite(lambda doc: {"result": doc["result"]}), "reports no provenance"),
    "HTTP 500": (_status(500, b'{"code": "internal_error", "message": "error(s) occurred"}'),
                 "HTTP 500 (internal_error: error(s) occurred)"),
    "HTTP 404": (_status(404, b"not found"), "HTTP 404"),
    "gzip": (lambda m, p, a: Answer(a.status, {**a.headers, "Content-Encoding": "gzip"}, a.body)
             if "/decision" in p else a, "gzip-encoded"),
    "not HTTP": (lambda m, p, a: Answer(0, {}, b"", raw=b"allow: true\r\n\r\n") if "/decision" in p else a,
                 "answered something that is not HTTP (BadStatusLine"),
    "a Content-Length over the limit": (lambda m, p, a: Answer(0, {}, b"", raw=b"HTTP/1.1 200 OK\r\n"
                                                               b"Content-Length: 999999999\r\n\r\n{}")
                                        if "/decision" in p else a, "the answer is 999999999 bytes"),
    "a body over the limit": (_rewrite(lambda doc: {**doc, "padding": "x" * 70_000}), "more than the limit of 65536"),
}


@pytest.mark.parametrize("name", sorted(LIES))
def test_an_answer_that_is_not_a_decision_denies(server: OPAServer, name: str) -> None:
    lie, reason = LIES[name]
    with lying_opa(server.url) as proxy:
        e = OPAEngine(proxy.url, POLICIES, max_answer_bytes=65536)
        assert e.decide("admission", ALLOWED).allow, "the honest answer allows: a lie that allows is seen"
        proxy.lies.append(lie)
        decision = e.decide("admission", ALLOWED)
        assert decision.refused and not decision.allow
        assert reason in decision.deny[0], decision.deny[0]
        assert decision.deny[0].startswith(f"OPA at {proxy.url}")
        proxy.lies.clear()
        assert e.decide("admission", ALLOWED).allow, "the next honest answer is read (on a new connection)"


def test_allow_true_beside_a_deny_message_is_not_allowed(server: OPAServer) -> None:
    with lying_opa(server.url) as proxy:
        proxy.lies.append(_rewrite(_result(allow=True)))
        decision = OPAEngine(proxy.url, POLICIES).decide("admission", DENIED)
    assert not decision.allow and not decision.refused and decision.deny


# --- the server runs other policies, other data, or none ---------------------------------------

def test_another_bundle_revision_is_refused(tmp_path: Path) -> None:
    other = shutil.copytree(POLICIES, tmp_path / "policies")
    data = json.loads((other / "data.json").read_text())
    data["agentfactory"]["config"]["max_memory_mib"] = 4096  # a laxer policy
    (other / "data.json").write_text(json.dumps(data))
    build_bundle(other, tmp_path / "other.tar.gz")
    with running_opa(require("opa"), tmp_path / "other.tar.gz", tmp_path / "opa") as s:
        decision = OPAEngine(s.url, POLICIES).decide("admission", ALLOWED)
        assert decision.refused and not decision.allow
        assert f"is revision '{policy_revision(other)}', not {policy_revision(POLICIES)}" in decision.deny[0]
        assert OPAEngine(s.url, other).decide("admission", ALLOWED).allow, "the engine of those policies accepts it"


def test_a_server_without_the_bundle_is_refused(tmp_path: Path) -> None:
    """Policies loaded as plain files (no bundle, no revision) cannot be checked: refused."""
    with running_opa(require("opa"), POLICIES, tmp_path) as s:
        decision = OPAEngine(s.url, POLICIES).decide("admission", ALLOWED)
    assert decision.refused and "the server runs no bundle" in decision.deny[0]


def test_the_policy_answering_another_shape_on_a_real_server_is_refused(tmp_path: Path) -> None:
    """A real OPA serving a decision of the wrong shape, or one that errors (strict builtin errors: HTTP 500)."""
    evil = tmp_path / "policies"
    evil.mkdir()
    (evil / "data.json").write_text((POLICIES / "data.json").read_text())
    (evil / "admission.rego").write_text('package agentfactory.admission\n\nimport rego.v1\n\n'
                                         'decision := {"allow": "true", "deny": [], "warn": []}\n')
    (evil / "template.rego").write_text('package agentfactory.template\n\nimport rego.v1\n\n'
                                        'decision := {"allow": true, "deny": [to_number(input.x)]}\n')
    build_bundle(evil, tmp_path / "evil.tar.gz")
    with running_opa(require("opa"), tmp_path / "evil.tar.gz", tmp_path / "opa") as s:
        e = OPAEngine(s.url, evil)
        shape = e.decide("admission", ALLOWED)
        error = e.decide("template", {"x": "not a number"})
        undefined = e.decide("artifact", {})
    assert shape.refused and "allow is a JSON str" in shape.deny[0]
    assert error.refused and "HTTP 500" in error.deny[0] and "to_number" in error.deny[0]
    assert undefined.refused and "data.agentfactory.artifact.decision is undefined" in undefined.deny[0]


def test_config_overrides_must_be_what_the_server_evaluates_with(server: OPAServer) -> None:
    data = json.loads((POLICIES / "data.json").read_text())["agentfactory"]["config"]
    same = OPAEngine(server.url, POLICIES, config={"blocking_severities": data["blocking_severities"],
                                                   "node": data["node"]})
    assert same.decide("admission", ALLOWED).allow
    laxer = OPAEngine(server.url, POLICIES, config={"blocking_severities": ["critical"]})
    decision = laxer.decide("admission", ALLOWED)
    assert decision.refused and not decision.allow
    assert "blocking_severities differ (set by this command: blocking_severities)" in decision.deny[0]
    assert laxer.data["agentfactory"]["config"]["blocking_severities"] == ["critical"], "as RegoEngine merges them"


def test_a_bearer_token_reaches_a_server_that_requires_one(bundle: Path, tmp_path: Path) -> None:
    authz = tmp_path / "authz.rego"
    authz.write_text('package system.authz\n\nimport rego.v1\n\ndefault allow := false\n\n'
                     'allow if input.identity == "s3cret-token"\n\nallow if input.path == ["health"]\n')
    with running_opa(require("opa"), bundle, tmp_path / "opa", "--authentication=token", "--authorization=basic",
                     str(authz)) as s:
        assert OPAEngine(s.url, POLICIES, token="s3cret-token").decide("admission", ALLOWED).allow
        refused = OPAEngine(s.url, POLICIES).decide("admission", ALLOWED)
    assert refused.refused and "HTTP 401" in refused.deny[0]


# --- choosing the engine -----------------------------------------------------------------------

def test_open_engine_chooses_by_argument_then_environment(server: OPAServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFACTORY_POLICY_ENGINE", raising=False)
    monkeypatch.delenv("AGENTFACTORY_OPA_URL", raising=False)
    assert isinstance(open_engine(POLICIES), RegoEngine)
    chosen = open_engine(POLICIES, engine="opa", opa_url=server.url)
    assert isinstance(chosen, OPAEngine) and chosen.decide("admission", ALLOWED).allow
    assert isinstance(open_engine(POLICIES, engine="opa"), OPAEngine)  # http://localhost:8181, the seeds' OPA
    assert open_engine(POLICIES, engine="opa").url == "http://localhost:8181"  # type: ignore[attr-defined]
    monkeypatch.setenv("AGENTFACTORY_POLICY_ENGINE", "opa")
    monkeypatch.setenv("AGENTFACTORY_OPA_URL", server.url)
    from_env = open_engine(POLICIES, config={"max_timeout_ms": 30000})
    assert isinstance(from_env, OPAEngine) and from_env.decide("admission", ALLOWED).allow


@pytest.mark.parametrize(("env", "message"), [
    ({"AGENTFACTORY_POLICY_ENGINE": "opal"}, "policy engine 'opal'"),
    ({"AGENTFACTORY_OPA_URL": "http://127.0.0.1:8181"}, "but the policy engine is rego"),
    ({"AGENTFACTORY_POLICY_ENGINE": "opa", "AGENTFACTORY_OPA_URL": "ftp://opa"}, "must start with http://"),
    ({"AGENTFACTORY_POLICY_ENGINE": "opa", "AGENTFACTORY_OPA_URL": "http://u:p@opa:8181"}, "must not hold credentials"),
    ({"AGENTFACTORY_POLICY_ENGINE": "opa", "AGENTFACTORY_OPA_URL": "http://opa:8181/?x=1"}, "query or a fragment"),
    ({"AGENTFACTORY_POLICY_ENGINE": "opa", "AGENTFACTORY_OPA_TIMEOUT": "0"}, "AGENTFACTORY_OPA_TIMEOUT"),
])
def test_a_bad_engine_setting_is_a_config_error(env: dict[str, str], message: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTFACTORY_POLICY_ENGINE", "AGENTFACTORY_OPA_URL", "AGENTFACTORY_OPA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        open_engine(POLICIES)


def test_the_cli_judges_through_opa(server: OPAServer, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("agentfactory")

    def evaluate(sample: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "policy", "eval", "--policy-engine", "opa", "--input",
                               str(ROOT / "examples/inputs/policy" / sample), "--policy", "admission", "--json",
                               *extra], capture_output=True, text=True, check=False)

    allowed = evaluate("admission.json", "--opa-url", server.url)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert json.loads(allowed.stdout) == {"policy": "admission", "allow": True, "deny": [], "warn": []}
    denied = evaluate("admission-denied.json", "--opa-url", server.url)
    assert denied.returncode == 1 and json.loads(denied.stdout)["deny"] == list(
        RegoEngine(POLICIES).decide("admission", DENIED).deny)
    down = evaluate("admission.json", "--opa-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot be reached" in json.loads(down.stdout)["deny"][0]

