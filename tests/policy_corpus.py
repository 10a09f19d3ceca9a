"""One corpus of policy inputs for comparing engines (regopy, `opa eval`, an OPA server).

Built the way the planes build inputs, deterministically (the same cases every run):
- the sample inputs of examples/inputs/policy/ (one allowed, one denied per policy);
- the template policy's input for every fixture of tests/fixtures/policy-templates/ and every demo
  template (templates/), before the build and after it with module imports of every kind (allowed,
  blocked, unlisted, a tool, an unknown module, an import without a name), against a base version;
- the artifact policy's input for the demo's SBOMs through the verifier's artifact_input, at every
  stage, clean and with a blocking advisory;
- the admission policy's input from the example AdmissionReviews (examples/inputs/admission/) and
  the security tests' reviews, taken apart by the webhook's own parse_review and find_references;
- shape mutations of those documents: every field removed, set to null, or to a value of another
  type (where OPA and rego-cpp differ most: `not f(x.y)` with x.y missing, docs/policy.md);
- the hostile-string cases of tests/security/policy_injection_cases.py (every string leaf replaced
  by each hostile string), every `stride`-th of them, so that every hostile string and every leaf
  occur.
Inputs the input boundary refuses (NUL, lone surrogates, strings over 64 KiB) are left out: no
engine sees them (PolicyEngine.decide refuses them first, whatever the engine).
"""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "security"))  # the hostile-string cases live with the security tests

from policy_injection_cases import HOSTILE, _bom, _scan, admission_bases, bases, leaves, replaced  # noqa: E402

from agentfactory.errors import ValidationFailed  # noqa: E402
from agentfactory.policy import Decision, template_input  # noqa: E402
from agentfactory.policy_input import PolicyInputError, check_input  # noqa: E402
from agentfactory.runspec import from_template  # noqa: E402
from agentfactory.sourcescan import scan_template  # noqa: E402
from agentfactory.template import load_template  # noqa: E402
from agentfactory.verifier import Check, artifact_input  # noqa: E402
from agentfactory.wasm import Import, ModuleInfo  # noqa: E402
from agentfactory.yamlsafe import load_yaml  # noqa: E402

HOSTILE_STRIDE = 6  # every 6th (leaf, hostile string) pair: ~1900 of the ~11 500 cases
WRONG_TYPES: tuple[Any, ...] = (7, "x", [], {}, True)


@dataclass(frozen=True)
class Case:
    policy: str
    name: str
    document: dict[str, Any]


def _imports(*pairs: tuple[str, str | None]) -> ModuleInfo:
    return ModuleInfo(imports=[Import(m, n or "", "func") for m, n in pairs])


WASI = "wasi_snapshot_preview1"
MODULES: dict[str, ModuleInfo] = {
    "allowed": _imports((WASI, "fd_read"), (WASI, "fd_write"), (WASI, "proc_exit")),
    "blocked": _imports((WASI, "fd_write"), ("wasix_32v1", "fd_dup")),
    "unlisted": _imports((WASI, "fd_write"), (WASI, "sock_accept"), (WASI, "path_unlink_file")),
    "tool": _imports((WASI, "fd_write"), ("agentfactory", "http.get")),
    "unknown": _imports((WASI, "fd_write"), ("env", "host_log")),
}


def template_cases() -> Iterator[Case]:
    fixtures = sorted(p for p in (ROOT / "tests/fixtures/policy-templates").iterdir() if (p / "agent.yaml").exists())
    demo = sorted(p for p in (ROOT / "templates").iterdir() if (p / "agent.yaml").exists())
    for folder in fixtures + demo:
        base_file = folder / "base.json"
        base = json.loads(base_file.read_text()) if base_file.exists() else None
        try:
            t = load_template(folder)
        except ValidationFailed:  # the schema refuses it first; the policy must refuse it too
            raw = load_yaml((folder / "agent.yaml").read_bytes(), str(folder / "agent.yaml")).data
            yield Case("template", f"{folder.name}/schema-invalid", {
                "template": raw, "path": f"templates/{folder.name}", "findings": [], "module": None, "base": base})
            continue
        findings = [f.to_json() for f in scan_template(t)]
        yield Case("template", f"{folder.name}/before-build", template_input(t, findings, None, base,
                                                                           path=f"templates/{folder.name}"))
        for kind, module in MODULES.items():
            yield Case("template", f"{folder.name}/module-{kind}",
                       template_input(t, findings, module, {"version": "0.0.1", "changed": True},
                                      path=f"templates/{folder.name}"))
    good = next(c for c in template_cases_base() if c.name == "good")
    doc = copy.deepcopy(good.document)
    doc["module"] = {"imports": [{"module": WASI, "kind": "func"}, {"name": "fd_read", "kind": "func"},
                                 {"module": "agentfactory", "kind": "func"}, "fd_read", 7],
                     "exports": [], "initialMemoryBytes": 65536}
    yield Case("template", "good/imports-without-name-or-module", doc)


def template_cases_base() -> Iterator[Case]:
    """The good fixture before the build: the document the shape mutations start from."""
    folder = ROOT / "tests/fixtures/policy-templates/good"
    t = load_template(folder)
    yield Case("template", "good", template_input(t, [f.to_json() for f in scan_template(t)], MODULES["tool"],
                                                  {"version": "0.0.1", "changed": True}, path="templates/good"))


def artifact_cases() -> Iterator[Case]:
    now = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    names = ("digest", "signature", "key-status", "sbom", "provenance", "scan", "promotion", "builder", "source")
    provenance = {"dirty": False, "repository": "https://github.com/acme/agents",
                  "builder": "https://github.com/acme/agents/.github/workflows/release.yml@refs/heads/main"}
    trust = {"repositories": ["https://github.com/acme/*"]}
    for agent in ("wordstats", "sha256sum", "base64", "jsonfmt"):
        runspec = from_template(load_template(ROOT / "templates" / agent))
        for stage in (("dev", "canary", "prod") if agent in ("wordstats", "sha256sum") else ("prod",)):
            for severity, failed in ((None, None), ("high", "source"), ("unknown", None)):
                checks = [Check(n, n != failed, f"{n} is fine" if n != failed else f"{n}: not trusted") for n in names]
                doc = artifact_input(agent, "1.0.0", "sha256:" + "ab" * 32, stage, checks,
                                     10.0 if failed is None else 7.5, _bom(agent), runspec, _scan(now, severity),
                                     now=now, provenance=provenance, trust=trust,
                                     promotion={"stage": stage, "promoted": True, "reason": "promoted"})
                yield Case("artifact", f"{agent}/{stage}/{severity or 'clean'}", doc)


def admission_cases() -> Iterator[Case]:
    from admission.refs import find_references, parse_reference
    from admission.review import parse_review

    verdicts: dict[str, dict[str, Any] | None] = {
        "none": None,
        "refused": {"allowed": False, "score": 6.0, "checks": [{"name": "signature", "ok": False,
                                                                "reason": "no signature by a trusted key"}]},
        "low-score": {"allowed": True, "score": 9.0, "checks": [{"name": "builder", "ok": False,
                                                                 "reason": "untrusted builder"}]},
        "clean": {"allowed": True, "score": 10.0, "checks": [{"name": "digest", "ok": True, "reason": "ok"}]},
    }
    for path in sorted((ROOT / "examples/inputs/admission").glob("*.json")):
        r = parse_review(path.read_bytes())
        if r.object is None:
            continue
        refs = find_references(r.group, r.kind, r.object, runtime_classes=("wasmtime",), max_references=8) or []
        for ref in refs:
            parsed = parse_reference(ref.ref, ref.field)
            for stage in ("dev", "prod"):
                for label, verdict in verdicts.items():
                    for namespace in (r.namespace, "prod-eu"):
                        yield Case("admission", f"{path.stem}/{stage}/{label}/{namespace}", {
                            "request": {"operation": r.operation, "namespace": namespace, "kind": r.kind,
                                        "dryRun": r.dry_run, "mode": "enforce"},
                            "agent": {"ref": ref.ref, "field": ref.field, "pinned": True, "name": parsed.name,
                                      "digest": "sha256:" + "0" * 64, "stage": stage,
                                      "requested_stage": ref.requested_stage or "canary",
                                      "requested_stage_field": ref.requested_stage_field or "spec.stage"},
                            "verdict": verdict})
    for base in admission_bases():
        yield Case("admission", f"security/{base.name}", base.document)


def paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value below the root, in document order: objects' members, and the first item of
    each array (the rules treat the items of an array alike; the others are covered by the first)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from paths(item, (*path, key))
    elif isinstance(value, list) and value:
        yield (*path, 0)
        yield from paths(value[0], (*path, 0))


def _set(document: Any, path: tuple[Any, ...], value: Any, *, remove: bool = False) -> Any:
    doc = copy.deepcopy(document)
    node = doc
    for part in path[:-1]:
        node = node[part]
    if remove:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def shape_cases(seeds: list[Case], *, types: bool) -> Iterator[Case]:
    """Every field of every seed removed and set to null; with `types`, also to a value of each other type."""
    for seed in seeds:
        for path in paths(seed.document):
            where = ".".join(map(str, path))
            yield Case(seed.policy, f"{seed.name}/{where}=removed", _set(seed.document, path, None, remove=True))
            yield Case(seed.policy, f"{seed.name}/{where}=null", _set(seed.document, path, None))
            if types:
                for value in WRONG_TYPES:
                    yield Case(seed.policy, f"{seed.name}/{where}={json.dumps(value)}",
                               _set(seed.document, path, value))


def quoted_cases(seeds: list[Case]) -> Iterator[Case]:
    """Every string leaf of every seed wrapped in quotes (`"x"`), and replaced by `""`: rego-cpp reads a
    string that starts and ends with `"` as the JSON text of the string inside (docs/policy.md)."""
    for seed in seeds:
        for leaf in leaves(seed.document):
            where = ".".join(map(str, leaf))
            original = seed.document
            for part in leaf:
                original = original[part]
            yield Case(seed.policy, f"{seed.name}/{where}=quoted", replaced(seed.document, leaf, f'"{original}"'))
            yield Case(seed.policy, f"{seed.name}/{where}=two-quotes", replaced(seed.document, leaf, '""'))


def hostile_cases(stride: int = HOSTILE_STRIDE) -> Iterator[Case]:
    """One in `stride` of the security test's (leaf, hostile string) pairs, over all its bases: the leaf
    shifts the choice, so that every hostile string occurs (at every `stride`-th leaf, at the least)."""
    n = 0
    for base in bases():
        for leaf in leaves(base.document):
            n += 1
            for j, text in enumerate(HOSTILE):
                if (n + j) % stride:
                    continue
                yield Case(base.policy, f"hostile/{base.name}/{'.'.join(map(str, leaf))}#{j}",
                           replaced(base.document, leaf, text))


def example_cases() -> Iterator[Case]:
    for path in sorted((ROOT / "examples/inputs/policy").glob("*.json")):
        yield Case(path.stem.split("-")[0], f"examples/{path.name}", json.loads(path.read_text()))


def judged(case: Case) -> bool:
    """Whether an engine sees this input at all (the input boundary refuses some, for every engine)."""
    try:
        check_input(case.document)
    except PolicyInputError:
        return False
    return True


def corpus(*, hostile_stride: int = HOSTILE_STRIDE, shapes: bool = True) -> list[Case]:
    """The whole corpus (see the module), boundary-refused inputs left out."""
    seeds = [*example_cases(), *template_cases_base(), *artifact_cases(), *admission_cases()]
    first = {p: next(c for c in seeds if c.policy == p and not c.name.startswith("examples/"))
             for p in ("template", "artifact", "admission")}
    cases = [*example_cases(), *template_cases(), *artifact_cases(), *admission_cases()]
    if shapes:
        cases += [*shape_cases(list(example_cases()), types=False), *shape_cases(list(first.values()), types=True),
                  *quoted_cases(list(example_cases()))]
    if hostile_stride:
        cases += list(hostile_cases(hostile_stride))
    named: dict[str, int] = {}
    out = []
    for c in cases:  # a review with two references gives two cases of one name: number them
        if not judged(c):
            continue
        named[c.name] = named.get(c.name, 0) + 1
        out.append(c if named[c.name] == 1 else Case(c.policy, f"{c.name}~{named[c.name]}", c.document))
    return out


QUOTED_REFUSAL = "is a JSON string literal, quotes included"


def strings(document: dict[str, Any]) -> Iterator[str]:
    for path in leaves(document):
        value: Any = document
        for part in path:
            value = value[part]
        yield value


def has_backslash(document: dict[str, Any]) -> bool:
    """Whether any string of the document holds a backslash (its echo may read differently in regopy)."""
    return any("\\" in s for s in strings(document))


def difference(case: Case, rego: Decision, other: Decision) -> str:
    """Why `other` (OPA's decision) differs from regopy's, or "" when they are the same.

    Three differences are known and pinned (tests/integration/test_opa_differential.py, docs/policy.md):
    regopy refuses an input holding a string that is a JSON string literal (`"CREATE"`), which OPA
    judges; a message echoing an input string that starts and ends with `"` shows it without those
    quotes in regopy; and one echoing an input string that holds a backslash may show an escape
    decoded in regopy (compared without backslashes then). Everything else must be equal: allow, the
    refusal, the deny and warn messages.
    """
    if other.refused:
        return "" if rego.refused else f"OPA refused ({other.deny[0][:200]}) where regopy decided allow={rego.allow}"
    if rego.refused:
        if any(QUOTED_REFUSAL in m for m in rego.deny):
            return ""
        return f"regopy refused ({rego.deny[0][:200]}) where OPA decided allow={other.allow}"
    if rego.allow != other.allow:
        return f"allow: regopy {rego.allow}, OPA {other.allow}"
    wrapped = sorted({s for s in strings(case.document) if len(s) >= 2 and s[0] == s[-1] == '"'}, key=len,
                     reverse=True)
    backslash = has_backslash(case.document)

    def shown(messages: tuple[str, ...], opa: bool) -> Counter[str]:
        out = []
        for m in messages:
            for s in wrapped if opa else ():
                m = m.replace(s, s[1:-1])
            out.append(m.replace("\\", "") if backslash else m)
        return Counter(out)

    for name, ours, theirs in (("deny", rego.deny, other.deny), ("warn", rego.warn, other.warn)):
        if shown(ours, False) != shown(theirs, True):
            return (f"{name}: regopy only {sorted(set(ours) - set(theirs))[:2]}, "
                    f"OPA only {sorted(set(theirs) - set(ours))[:2]}")
    return ""
