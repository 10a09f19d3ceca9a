"""The admission policy's input built once per verdict (admission/decide.py `Judged`) and the decision memo
keyed by it: every answer is the one its own review's input gives, never a neighbour's or a stale verdict's.

The webhook here is a real Admitter over a real store (a local OCI layout) with a real RegoEngine whose
admission policy echoes its whole input in a deny message, so an answer taken from the wrong memo entry, or
from a verdict that has since changed, shows the wrong field.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from admission.config import AdmissionConfig
from admission.decide import Admitter, Answer, Judged, _plain
from admission.review import parse_review
from agentfactory.artifact import build_agent_artifact
from agentfactory.policy import RegoEngine, plain_text
from agentfactory.store import open_store
from agentfactory.trust import from_public_keys
from agentfactory.verifier import Check, Verdict

# Every field of the input in one deny message, and one message per check of the verdict.
ECHO = """package agentfactory.admission
import rego.v1
default allow := false
deny contains sprintf("echo ns=%s op=%s kind=%s mode=%s dry=%v ref=%s field=%s stage=%s asked=%v pinned=%v", [
    input.request.namespace, input.request.operation, input.request.kind, input.request.mode,
    input.request.dryRun, input.agent.ref, input.agent.field, input.agent.stage, input.agent.requested_stage,
    input.agent.pinned])
deny contains sprintf("check %s ok=%v: %s", [c.name, c.ok, c.reason]) if some c in input.verdict.checks
warn := set()
"""
ARTIFACT = """package agentfactory.artifact
import rego.v1
default allow := false
deny := {"the test's artifact policy allows nothing"}
"""
DATA = {"agentfactory": {"config": {"admission": {"stages": ["dev", "prod"], "namespace_stages": {"prod-*": "prod"}}}}}
WASM = b"\0asm\x01\0\0\0"
DIGEST = "sha256:" + "ab" * 32


class Recording(RegoEngine):
    """The real engine, keeping every admission input it was asked to judge (a copy, as it was then)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.inputs: list[dict[str, Any]] = []
        self._seen = threading.Lock()

    def judge_checked(self, policy: str, document: dict[str, Any], checked: Any) -> Any:
        if policy == "admission":
            with self._seen:
                self.inputs.append(json.loads(json.dumps(document)))
        return super().judge_checked(policy, document, checked)


@pytest.fixture
def admitter(tmp_path: Path) -> Admitter:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "admission.rego").write_text(ECHO)
    (policies / "artifact.rego").write_text(ARTIFACT)
    (policies / "data.json").write_text(json.dumps(DATA))
    engine = Recording(policies)
    assert not engine.broken, engine.broken
    config = AdmissionConfig(negative_cache_ttl=0, deadline_ms=5000)  # a refusal is verified again every time
    return Admitter(config, open_store(f"oci-layout:{tmp_path / 'store'}"), from_public_keys([]), engine)


def ask(admitter: Admitter, ref: str, *, namespace: str = "team-a", operation: str = "CREATE",
        mode: str = "enforce", dry_run: bool = False, stage: str | None = None, uid: str = "u") -> Answer:
    spec: dict[str, Any] = {"agent": ref, **({"stage": stage} if stage else {})}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"},
        "name": "agent", "namespace": namespace, "operation": operation, "dryRun": dry_run,
        "object": {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": "agent"},
                   "spec": spec}}}
    return admitter.review(parse_review(json.dumps(body).encode()), mode)


def said(answer: Answer) -> str:
    """Everything the answer says (a refusal's message, or warn mode's warnings)."""
    return answer.message + " | ".join(answer.warnings)


def calls(admitter: Admitter) -> int:
    return len(admitter.engine.inputs)  # type: ignore[attr-defined]


def test_each_answer_is_judged_on_its_own_input_and_memoised_by_all_of_it(admitter: Admitter) -> None:
    ref = f"gone@{DIGEST}"
    first = ask(admitter, ref)
    assert not first.allowed and "echo ns=team-a op=CREATE kind=WasmAgent mode=enforce dry=false" in first.message
    assert calls(admitter) == 1
    for change, needle in (({"namespace": "team-b"}, "ns=team-b "), ({"operation": "UPDATE"}, "op=UPDATE "),
                           ({"mode": "warn"}, "mode=warn "), ({"dry_run": True}, "dry=true "),
                           ({"namespace": "prod-x"}, "stage=prod "), ({"stage": "dev"}, "asked=dev "),
                           ({"namespace": "prod-x", "stage": "dev"}, "asked=dev pinned")):
        before = calls(admitter)
        answer = ask(admitter, ref, **change)
        assert calls(admitter) == before + 1, f"{change}: answered from another input's memo entry"
        assert needle in said(answer), (change, said(answer))
    before = calls(admitter)
    again = ask(admitter, ref, uid="v")  # the same input: the memo answers, and it is the first answer
    assert calls(admitter) == before and again.message == first.message
    other = ask(admitter, f"gone@sha256:{'cd' * 32}")
    assert f"ref=gone@sha256:{'cd' * 32} " in other.message and f"ref={ref} " not in other.message


def test_the_input_is_the_whole_documented_input_and_is_never_changed_by_a_decision(admitter: Admitter) -> None:
    cached = Admitter(dataclasses.replace(admitter.config, negative_cache_ttl=60), admitter.store, admitter.trust,
                      admitter.engine)  # the refusal cached, to be looked at
    ref = f"gone@{DIGEST}"
    ask(cached, ref, namespace="prod-a", stage="dev", dry_run=True)
    judged = cached.verdicts.peek(f"{DIGEST}|gone|prod|{cached.trust_id}")
    assert judged is not None
    verdict = judged.verdict
    assert admitter.engine.inputs[-1] == {  # type: ignore[attr-defined]
        "request": {"operation": "CREATE", "namespace": "prod-a", "kind": "WasmAgent", "dryRun": True,
                    "mode": "enforce"},
        "agent": {"ref": ref, "field": "spec.agent", "pinned": True, "name": "gone", "digest": DIGEST,
                  "stage": "prod", "requested_stage": "dev", "requested_stage_field": "spec.stage"},
        "verdict": {"allowed": verdict.allowed, "score": verdict.score,
                    "checks": [{"name": c.name, "ok": c.ok, "reason": plain_text(c.reason)} for c in verdict.checks]}}
    assert judged.policy_input == Judged.of(verdict).policy_input  # shared by decisions, changed by none
    assert json.loads(judged.key) == judged.policy_input


def test_a_verdict_that_changes_reaches_the_policy_and_its_old_decision_is_not_reused(admitter: Admitter,
                                                                                      tmp_path: Path) -> None:
    artifact = build_agent_artifact(WASM, name="late", version="1.0.0", created_epoch=0)
    ref = f"late@{artifact.digest}"
    missing = ask(admitter, ref)
    assert "is not in" in missing.message  # not published yet: the verdict says so
    admitter.store.push_agent(artifact, name="late", version="1.0.0")  # published (unsigned) since
    present = ask(admitter, ref)  # the refusal was not cached (negativeCacheTtlSeconds 0): verified again
    assert "is not in" not in present.message and "check signature ok=false" in present.message
    assert "check digest ok=true" in present.message
    inputs = admitter.engine.inputs  # type: ignore[attr-defined]
    assert len(inputs) == 2 and inputs[0]["verdict"] != inputs[1]["verdict"]  # judged again, on the new verdict


def test_threads_never_get_each_others_answers(admitter: Admitter) -> None:
    ref = f"gone@{DIGEST}"
    wrong: list[str] = []

    def run(k: int) -> None:
        for i in range(40):
            namespace = f"t{k}-{i % 7}"  # some inputs repeat: memo hits and misses interleave
            answer = ask(admitter, ref, namespace=namespace, mode="warn" if i % 2 else "enforce", uid=f"{k}-{i}")
            if f"ns={namespace} " not in said(answer) or f"mode={'warn' if i % 2 else 'enforce'} " not in said(answer):
                wrong.append(f"{namespace}: {said(answer)[:200]}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_plain_is_plain_text_with_a_shortcut() -> None:
    samples = ["", "wordstats@sha256:" + "0" * 64, 'say "hi"', "back\\slash", "tab\there", "nl\nx", "\x00", "\x1f",
               "\x7f", "\u2028", "é\U0001f600", "'", '"CREATE"', "a" * 5000 + '"']
    samples += [chr(c) for c in range(0x40)]
    for text in samples:
        assert _plain(text) == plain_text(text), repr(text)


def test_one_judged_per_verdict_and_the_key_tells_verdicts_apart() -> None:
    a = Verdict(True, DIGEST, 10.0, (Check("digest", True, 'hash "ok"'), Check("signature", True, "by k\n1")))
    b = Verdict(True, DIGEST, 10.0, (Check("digest", True, 'hash "ok"'), Check("signature", True, "by k\n2")))
    ja, jb = Judged.of(a), Judged.of(b)
    assert ja.key != jb.key and ja.policy_input["checks"][0]["reason"] == "hash 'ok'"
    assert ja.policy_input["checks"][1]["reason"] == "by k 1" and jb.policy_input["checks"][1]["reason"] == "by k 2"
    assert ja.key == json.dumps(ja.policy_input, sort_keys=True)
    assert ja.needles == (("does not verify: digest: ", 0), ("does not verify: signature: ", 1))
