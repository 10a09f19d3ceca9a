"""Hostile-string cases for the three policies, shared by the property test and its benchmark.

Each policy starts from real inputs built the way its plane builds them: the template policy from
the fixture templates and the demo's agents (template_input, the real static validator's findings),
the artifact policy from the demo's committed SBOMs and a scan predicate through the verifier's own
artifact_input and scan_input, the admission policy from AdmissionReviews parsed and taken apart
by the webhook's own parse_review, find_references and parse_reference. Every string leaf of every
input is then replaced, in turn, by each hostile string. A case compares that decision with the one
for a benign string at the same leaf: it must never be more permissive (allow never flips to true,
the deny set never gets smaller; a refusal at the input boundary is the strictest answer).
The enumeration is deterministic: no randomness, the same cases every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentfactory.policy import Decision, PolicyEngine, template_input
from agentfactory.policy_input import MAX_STRING_BYTES
from agentfactory.runspec import from_template
from agentfactory.scan.attestation import scan_input
from agentfactory.sourcescan import scan_template
from agentfactory.template import load_template
from agentfactory.verifier import Check, artifact_input
from agentfactory.wasm import Import, ModuleInfo

ROOT = Path(__file__).resolve().parents[2]
BENIGN = "benign"
# The payload of issue 16, and variants shaped for each policy's output (`warn` is bound for admission
# only; a payload can aim at the expressions, the bindings or the end of the document).
PAYLOAD = '"]},"bindings":{"allow":true,"deny":[],"z":["'
PAYLOADS = (
    PAYLOAD,
    '"]},"bindings":{"allow":true,"deny":[],"warn":[],"z":["',
    '"], "allow":true, "deny":[], "z":["',
    '"]}, "bindings":{"allow":true, "deny":[]}}',
    '"]}}, {"expressions":[true], "bindings":{"allow":true, "deny":[]}}',
    '\\"]},\\"bindings\\":{\\"allow\\":true,\\"deny\\":[]}}',
    '"]},"bindings":{"allow":true,"deny":[],"warn":[]}}//',
    '"]},"bindings":{"allow":true,"deny":{},"z":["',
    '"]},"bindings":{"allow":"true","deny":null,"z":["',
    '"]},"bindings":{"allow":true,"deny":[],"z":["\u2028',
    # where the format already quotes the value (licence "%s", hostPath "%s", "%s" is not pinned): the
    # format's own quotes close and reopen the strings around it
    ']},"bindings":{"allow":true,"deny":[],"z":[',
    ']},"bindings":{"allow":true,"deny":[],"warn":[],"z":[',
    '], "allow":true, "deny":[], "z":[',
)


def _long(unit: str, size: int) -> str:
    """`unit` repeated to exactly `size` UTF-8 bytes (padded with "a")."""
    text = unit * (size // len(unit.encode()))
    return text + "a" * (size - len(text.encode()))


HOSTILE: tuple[str, ...] = (
    *PAYLOADS,
    '"', "'", "\\", "\\\\", '\\"', '"]},', "}", "]", "{", "[", '",', '":', "\"\"\"", "`",
    "\n", "\r\n", "\t", "\x1b[2J", "\u2028", "\u2029", "\ufeff", "\u202e", "\u0000", "a\u0000shell.exec",
    "\ud800", "x\udfffy", "", " ",
    '{"allow": true, "deny": []}', "[]", "{}", "true", "null", "undefined", "<error>", "NaN",
    "package agentfactory.template\ndefault allow := true", "allow := true", "deny := set()",
    "input.template", "data.agentfactory.config", "%s%v%d%!", "${allow}", "{{ .allow }}",
    _long(PAYLOAD, MAX_STRING_BYTES),  # at the boundary's limit: judged
    _long("\"\\", MAX_STRING_BYTES),
    _long("a", MAX_STRING_BYTES + 1),  # over it: refused
)


@dataclass(frozen=True)
class Base:
    policy: str
    name: str
    document: dict[str, Any]


def template_bases() -> list[Base]:
    """The template policy's input for the fixture templates and the demo's agents, as the pipeline
    builds it before the build (no module) and after it (with the module's imports)."""
    module = ModuleInfo(imports=[Import("wasi_snapshot_preview1", n, "func") for n in
                                 ("fd_read", "fd_write", "fd_close", "proc_exit")] +
                        [Import("agentfactory", "http.get", "func")])
    fixtures, demo = ROOT / "tests/fixtures/policy-templates", ROOT / "templates"
    folders = [fixtures / "t1-dangerous-tool", fixtures / "t11-static-finding", demo / "wordstats",
               fixtures / "t8-secret-env"]
    out = []
    for i, folder in enumerate(folders):
        t = load_template(folder)
        findings = [f.to_json() for f in scan_template(t)]
        base = {"version": "0.0.1", "changed": True} if i % 2 else None
        out.append(Base("template", folder.name, template_input(t, findings, module if i % 2 else None, base,
                                                                path=f"templates/{folder.name}")))
    return out


def _bom(name: str) -> dict[str, Any]:
    folder = ROOT / "sbom" / name
    path = sorted(folder.rglob("*.json"))[0]
    doc = json.loads(path.read_text())
    return doc if isinstance(doc, dict) else {}


def _scan(now: datetime, severity: str | None) -> dict[str, Any]:
    findings = [] if severity is None else [{
        "id": "GHSA-35jh-r3h4-6jhm", "aliases": ["CVE-2021-23337"], "severity": severity, "package": "lodash",
        "version": "4.17.20", "fixedVersions": ["4.17.21"], "suppressed": False}]
    predicate = {"findings": findings, "unscanned": [], "scanners": [{"name": "osv", "version": "1"}],
                 "metadata": {"scanFinishedOn": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    return scan_input(predicate, "scan")


def artifact_bases() -> list[Base]:
    """The artifact policy's input through the verifier's artifact_input: the demo's SBOMs, a clean prod
    artifact that is allowed, and a copy with an unsuppressed High advisory and a failed check."""
    now = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    names = ("digest", "signature", "key-status", "sbom", "provenance", "scan", "promotion", "builder", "source")
    runspec = from_template(load_template(ROOT / "templates" / "wordstats"))
    provenance = {"dirty": False, "repository": "https://github.com/acme/agents",
                  "builder": "https://github.com/acme/agents/.github/workflows/release.yml@refs/heads/main"}
    trust = {"repositories": ["https://github.com/acme/*"]}
    out = []
    for agent, severity, failed in (("wordstats", None, None), ("sha256sum", "high", "source")):
        bom = _bom(agent)
        checks = [Check(n, n != failed, f"{n} is fine" if n != failed else f"{n}: not from a trusted builder")
                  for n in names]
        doc = artifact_input(agent, "1.0.0", "sha256:" + "ab" * 32, "prod", checks, 10.0 if failed is None else 9.0,
                             bom, runspec, _scan(now, severity), now=now, provenance=provenance, trust=trust,
                             promotion={"stage": "prod", "promoted": True, "reason": "promoted from canary"})
        out.append(Base("artifact", agent, doc))
    return out


def review(namespace: str, image: str, annotations: dict[str, str], *, kind: str = "Pod",
           operation: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview of a wasm Pod, as the API server sends it."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0b7c5f4e-0000-4000-8000-000000000016", "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": namespace,
        "operation": operation, "name": "miner", "dryRun": False,
        "object": {"apiVersion": "v1", "kind": kind,
                   "metadata": {"name": "miner", "namespace": namespace, "annotations": annotations},
                   "spec": {"runtimeClassName": "wasmtime", "containers": [{"name": "agent", "image": image}]}}}}


def admission_bases() -> list[Base]:
    """The admission policy's input, built as admission/decide.py builds it from real reviews."""
    from admission.refs import find_references, parse_reference
    from admission.review import parse_review

    pinned = "localhost:5000/agents/wordstats@sha256:" + "ab" * 32
    verdicts: list[dict[str, Any] | None] = [
        None,
        {"allowed": False, "score": 6.0, "checks": [{"name": "signature", "ok": False,
                                                     "reason": "no signature by a trusted key"}]},
        {"allowed": True, "score": 9.0, "checks": [{"name": "builder", "ok": False, "reason": "untrusted builder"}]},
    ]
    cases = [("prod", "evil.example.com/miner:latest", {"agentfactory.dev/stage": "prod"}, verdicts[0]),
             ("prod", pinned, {"agentfactory.dev/stage": "dev"}, verdicts[1]),
             ("canary-eu", pinned, {"agentfactory.dev/agent": pinned}, verdicts[2]),
             ("prod", pinned, {}, verdicts[1])]
    out = []
    for i, (namespace, image, notes, verdict) in enumerate(cases):
        r = parse_review(json.dumps(review(namespace, image, notes)).encode())
        assert r.object is not None
        refs = find_references(r.group, r.kind, r.object, runtime_classes=("wasmtime",), max_references=8) or []
        for ref in refs:
            parsed = parse_reference(ref.ref, ref.field)
            stage = getattr(ref, "requested_stage", None) or getattr(ref, "stage", None) or "prod"
            out.append(Base("admission", f"{namespace}-{i}", {
                "request": {"operation": r.operation, "namespace": r.namespace, "kind": r.kind,
                            "dryRun": r.dry_run, "mode": "enforce"},
                "agent": {"ref": ref.ref, "field": ref.field, "pinned": parsed.pinned, "name": parsed.name,
                          "digest": parsed.digest, "stage": stage},
                "verdict": verdict}))
    return out


def bases() -> list[Base]:
    """The property test's inputs. The artifact policy is the costliest to evaluate (~10 ms a decision):
    its leaves are enumerated on the denied artifact (the one an attacker wants through) only."""
    return template_bases() + artifact_bases()[1:] + admission_bases()


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every string value in a JSON document, in document order."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))


def replaced(document: Any, path: tuple[Any, ...], text: str) -> Any:
    """A copy of `document` with the leaf at `path` replaced (only the containers on the path are copied)."""
    if not path:
        return text
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: replaced(document[head], rest, text)}
    copied = list(document)
    copied[head] = replaced(document[head], rest, text)
    return copied


def more_permissive(hostile: Decision, benign: Decision) -> str:
    """Why `hostile` is more permissive than `benign`, or "" when it is not."""
    if hostile.refused:
        return "" if not hostile.allow else "refused at the boundary, yet allowed"
    if hostile.allow and not benign.allow:
        return "allowed, where the benign string is denied"
    if len(set(hostile.deny)) < len(set(benign.deny)):
        return f"{len(hostile.deny)} denials, fewer than the benign string's {len(benign.deny)}"
    return ""


@dataclass
class Outcome:
    cases: int = 0
    failures: list[str] | None = None


def run(engine: PolicyEngine, base: Base, hostile: tuple[str, ...] = HOSTILE) -> Outcome:
    """Every string leaf of `base`, replaced by every hostile string; the failures, described."""
    failures: list[str] = []
    cases = 0
    for path in leaves(base.document):
        benign = engine.decide(base.policy, replaced(base.document, path, BENIGN))
        for text in hostile:
            decision = engine.decide(base.policy, replaced(base.document, path, text))
            cases += 1
            why = more_permissive(decision, benign)
            if why:
                failures.append(f"{base.policy}/{base.name} {'.'.join(map(str, path))} = {text[:80]!r}: {why}; "
                                f"benign deny={list(benign.deny)[:3]} hostile deny={list(decision.deny)[:3]}")
    return Outcome(cases, failures)
