"""One admission decision: find the agents in the object, verify each, ask admission.rego, answer.

The order of the early answers is what operators expect from Kyverno and Gatekeeper: DELETE passes,
exempt namespaces pass, each subresource is decided as admission/subresources.py says (exec and
attach refused, other CONNECTs passed), objects that carry no agent pass untouched; everything else
is judged on the new object (UPDATE included), at the stage of its namespace (admission/stages.py),
never at one the object claims. In warn mode (namespaces labelled for it, through the webhook
configuration's namespaceSelector) a refusal becomes an admission with warnings. This module is
synchronous: the HTTP layer answers on its event loop what needs no I/O (`Reach`), and runs the rest in a
worker thread under the configured deadline.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from agentfactory.audit import AuditLog
from agentfactory.errors import AgentFactoryError, InputError, NotFoundError
from agentfactory.fetchverify import verify_stored
from agentfactory.policy import Decision, PolicyEngine, plain_text
from agentfactory.store import ArtifactStore
from agentfactory.trust import TrustPolicy
from agentfactory.verifier import Verdict, refuse

from .config import AdmissionConfig
from .refs import Parsed, Reference, find_references, parse_reference
from .review import Review
from .stages import stage_map
from .subresources import ALLOW, REFUSE, UNKNOWN_WHY, rule_for
from .verdicts import VerdictCache

MAX_POLICY_DECISIONS = 10_000
# Reach.NO_IO evaluates admission.rego on the caller's thread (the event loop) for at most this much input in one
# review, across all its references (canonical JSON: each request's part, and the verdict's, which a signed agent's
# evidence shapes; usually about 1.5 KiB per reference): a review past it, one large input or a Pod of 256
# containers, is evaluated in a worker thread, where the deadline bounds the wait, so no review holds the loop long.
MAX_INLINE_INPUT_BYTES = 4096
# What plain_text would change (a quote, a backslash, a control character): text without any is used as it is,
# so a reference that needs no rewriting costs one regular-expression search instead of a walk per character.
_NOT_PLAIN = re.compile(r'["\\\x00-\x1f]')
# The memo key's encoder, made once (json.dumps with options builds a new encoder per call).
_CANONICAL = json.JSONEncoder(sort_keys=True).encode


def _plain(text: str) -> str:
    """plain_text(text), without its per-character walk when there is nothing to rewrite."""
    return plain_text(text) if _NOT_PLAIN.search(text) else text


@dataclass(frozen=True)
class Judged:
    """A verdict with what every admission decision about it shares, built once when the verdict is computed and
    cached with it (not once per review): the admission policy input's `verdict` member (reasons as plain text),
    its canonical JSON (that member's part of the decision memo's key), and where each check's message goes.

    Everything here is a function of the verdict alone, so it can never be staler than the cached verdict it
    rides with; the policy input is shared by the decisions about that verdict and must not be mutated (the
    engines only read their input)."""

    verdict: Verdict
    policy_input: dict[str, Any]
    key: str
    needles: tuple[tuple[str, int], ...]  # ("does not verify: <check>: ", its rank), in the verdict's order

    @classmethod
    def of(cls, verdict: Verdict) -> Judged:
        part = {"allowed": verdict.allowed, "score": verdict.score,
                "checks": [{**c.to_json(), "reason": _plain(c.reason)} for c in verdict.checks]}
        rank = {c.name: i for i, c in enumerate(verdict.checks)}
        return cls(verdict, part, _CANONICAL(part),
                   tuple((f"does not verify: {name}: ", i) for name, i in rank.items()))


class NotCached(Exception):
    """The fast path met something beyond its `Reach`: take the slow path."""


class Reach(enum.Enum):
    """How far a review may go where it runs (the HTTP layer's choice); beyond it, NotCached.

    Verifying an agent reads the store (I/O, and seconds at worst), so only a worker thread under the deadline
    does it. Evaluating admission.rego is CPU only (0.2 ms with opa-wasm, about 1 ms with regopy): on an event
    loop whose threads share one CPU anyway, a hand-off to a worker buys no parallelism and costs a hop."""

    ALL = "all"  # verify and evaluate whatever is not cached: a worker thread
    NO_IO = "no-io"  # the verdict from its cache; admission.rego evaluated when its decision is not memoised
    MEMOISED = "memoised"  # only what is cached: the verdict and the admission decision


@dataclass
class _Inline:
    """What Reach.NO_IO may still evaluate in one review, in input bytes (MAX_INLINE_INPUT_BYTES across its
    references)."""

    left: int = MAX_INLINE_INPUT_BYTES

    def spend(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


@dataclass
class Answer:
    """What to send back, and what happened (for metrics and the audit trail)."""

    allowed: bool
    code: int
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    decision: str = "skipped"  # allowed | denied | warned | skipped | error
    agents: list[dict[str, Any]] = field(default_factory=list)


class Admitter:
    def __init__(self, config: AdmissionConfig, store: ArtifactStore, trust: TrustPolicy, engine: PolicyEngine,
                 audit: AuditLog | None = None) -> None:
        self.config = config
        self.store = store
        self.trust = trust
        self.engine = engine
        self.audit = audit
        self.trust_id = trust.fingerprint or hashlib.sha256(repr(sorted(trust.keys)).encode()).hexdigest()[:16]
        self.verdicts: VerdictCache[Judged] = VerdictCache(config.cache_ttl, config.negative_cache_ttl,
                                                           config.cache_max_entries,
                                                           positive=lambda j: j.verdict.allowed)
        # admission.rego answers, by input: (the canonical JSON of the input but its verdict, the verdict's)
        self._decisions: OrderedDict[tuple[str, str], Decision] = OrderedDict()
        self._decisions_lock = threading.Lock()
        self._store_prefix = _store_prefix(store.url)
        self.stages = stage_map(engine, config.default_stage)  # the policy's own namespace → stage map
        engine.warm_up("artifact", "admission")  # compile now: the first review must not pay for it

    def engine_broken(self) -> bool:
        """Whether the policies failed to load (then every review is denied; /readyz says so)."""
        return bool(getattr(self.engine, "broken", None))

    # -- the decision ----------------------------------------------------------------------------
    def review(self, review: Review, mode: str = "enforce", *, reach: Reach = Reach.ALL) -> Answer:
        """Judge `review` and record the answer (`judge`, then `record`)."""
        answer = self.judge(review, mode, reach=reach)
        self.record(review, mode, answer)
        return answer

    def judge(self, review: Review, mode: str = "enforce", *, reach: Reach = Reach.ALL) -> Answer:
        """Judge `review`, going no further than `reach` (else NotCached), recording nothing: the HTTP layer
        answers on its event loop what needs no I/O, sends the rest to a worker thread, and records the answer it
        actually sends (a judgement that outlives the deadline only fills the caches)."""
        return self._review(review, mode, reach)

    def record(self, review: Review, mode: str, answer: Answer, *, peer: str = "") -> None:
        """The audit record of the answer sent for `review` (AuditError when the trail cannot be written). `peer`:
        the address the review came from. Anyone who reaches the webhook's port can send a review, and it is
        judged and recorded like the API server's; the address tells them apart in an audit."""
        if self.audit is not None:
            meta = (review.object or {}).get("metadata") if isinstance(review.object, dict) else None
            meta = meta if isinstance(meta, dict) else {}
            # request.name is empty for an object named by generateName (every Pod a controller makes): the
            # object's own name, or the prefix it asked for, says which one it was
            given = meta.get("name") or meta.get("generateName")
            self.audit.record("admission", plane="admission", uid=review.uid, operation=review.operation,
                              namespace=review.namespace, kind=f"{review.group}/{review.kind}".lstrip("/"),
                              name=review.name or (given if isinstance(given, str) else ""),
                              subResource=review.sub_resource, dryRun=review.dry_run, mode=mode,
                              allowed=answer.allowed, decision=answer.decision, message=answer.message,
                              agents=answer.agents, code=answer.code, **({"peer": peer} if peer else {}))

    def _review(self, review: Review, mode: str, reach: Reach) -> Answer:
        if review.operation == "DELETE":
            return Answer(True, 200, "DELETE is not judged: a bad object can always be removed")
        if review.namespace in self.config.exempt_namespaces:
            return Answer(True, 200, f"namespace {review.namespace} is exempt (config exemptNamespaces)")
        sub = review.sub_resource
        rule = rule_for(sub)
        if rule is not None and rule.decision == REFUSE:
            return self._finish(mode, [f"request.subResource {sub!r}: refused: {rule.why}"], [], [])
        if sub == "ephemeralcontainers" and (review.group, review.kind) != ("", "Pod"):
            return self._finish(mode, [f"request.kind {review.kind!r} of subresource 'ephemeralcontainers': the API "
                                       "server sends the whole Pod (Kubernetes 1.22 and later); anything else "
                                       "cannot be judged, so it is refused"], [], [])
        if review.operation == "CONNECT":
            return Answer(True, 200, f"CONNECT to subresource {sub!r} opens a connection to what runs; it cannot "
                                     "change it")
        if review.object is None:
            return Answer(False, 400, "request.object is missing: nothing to judge", decision="denied")
        try:
            refs = self._references(review, review.object)
        except InputError as exc:
            return self._finish(mode, [f"{exc.where}: {exc.message}"], [], [])
        if refs is None:
            return Answer(True, 200, "not an agent workload")
        if rule is None:
            return self._finish(mode, [f"request.subResource {sub!r} of an agent workload: {UNKNOWN_WHY}"], [], [])
        if rule.decision == ALLOW and self._same_agents(review, refs):
            return Answer(True, 200, f"subresource {sub!r}: {rule.why}")
        if self.stages.problem:
            return self._finish(mode, [f"{refs[0].field}: cannot be judged: {self.stages.problem}"], [], [])
        stage = self.stages.of(review.namespace)
        unknown = self._unknown_stage(refs[0], stage)
        if unknown:
            return self._finish(mode, [unknown], [], [])
        denies: list[str] = []
        warnings: list[str] = []
        agents: list[dict[str, Any]] = []
        inline = _Inline()
        for ref in refs:
            d, w, record = self._judge(review, ref, stage, mode, reach, inline)
            denies.extend(d)
            warnings.extend(w)
            agents.append(record)
        return self._finish(mode, denies, warnings, agents)

    def _unknown_stage(self, ref: Reference, stage: str) -> str:
        """Why the stage the object asks for is not one at all ("" when it is known or not asked): checked
        here, so that only a known stage name reaches the policy, which compares it with the namespace's."""
        asked = ref.requested_stage
        if asked is None or self.stages.rank(asked) is not None:
            return ""
        shown = repr(asked) if len(asked) <= 64 else repr(asked[:64]) + "…"
        return (f"{ref.requested_stage_field}: {shown} is not a known stage (config admission.stages: "
                f"{', '.join(self.stages.stages)}); an object may ask for its namespace's stage ({stage}) or a "
                "lower one, or name none")

    def _references(self, review: Review, obj: dict[str, Any]) -> list[Reference] | None:
        return find_references(review.group, review.kind, obj, runtime_classes=self.config.runtime_classes,
                               max_references=self.config.max_references)

    def _same_agents(self, review: Review, refs: list[Reference]) -> bool:
        """Whether the old object carried exactly these agent references (then nothing new can run)."""
        if review.old_object is None:
            return False
        try:
            old = self._references(review, review.old_object)
        except InputError:
            return False
        return old is not None and [(r.ref, r.field) for r in old] == [(r.ref, r.field) for r in refs]

    def _finish(self, mode: str, denies: list[str], warnings: list[str], agents: list[dict[str, Any]]) -> Answer:
        if not denies:
            return Answer(True, 200, "", warnings, "allowed", agents)
        if mode == "warn":
            return Answer(True, 200, "", [f"would be denied: {m}" for m in denies] + warnings, "warned", agents)
        summary = f"{len(denies)} problem(s): " + " | ".join(denies)
        return Answer(False, 403, summary, warnings, "denied", agents)

    def _judge(self, review: Review, ref: Reference, stage: str, mode: str, reach: Reach,
               inline: _Inline) -> tuple[list[str], list[str], dict[str, Any]]:
        record: dict[str, Any] = {"ref": ref.ref, "field": ref.field, "stage": stage,
                                  "requestedStage": ref.requested_stage}
        try:
            parsed = parse_reference(ref.ref, ref.field)
        except InputError as exc:
            record["allowed"] = False
            return [f"{exc.where}: {exc.message}"], [], record
        judged: Judged | None = None
        denies: list[str] = []
        if parsed.pinned:
            foreign = self._foreign(parsed)
            if foreign:
                denies.append(f"{ref.field}: {ref.ref!r} {foreign}")
            else:
                judged = self._verdict(parsed, stage, reach)  # the namespace's stage, never the object's
                record["digest"], record["score"] = parsed.digest, judged.verdict.score
        decision = self._policy(review, ref, parsed, stage, judged, mode, reach, inline)
        denies.extend(_in_check_order(decision.deny, judged))
        record["allowed"] = not denies
        return denies, list(decision.warn), record

    def _foreign(self, parsed: Parsed) -> str:
        """Why a reference names another registry than this webhook's store ("" when it does not)."""
        if not parsed.prefix or self._store_prefix is None or parsed.prefix == self._store_prefix:
            return ""
        return (f"names the registry {parsed.prefix}; agents are admitted from {self._store_prefix} only "
                "(config store): copy it there with its evidence (agentfactory store copy)")

    def verdict_key(self, name: str, digest: str, stage: str) -> str:
        """The verdict cache's key for an agent at a stage under this webhook's trust policy."""
        return f"{digest}|{name}|{stage}|{self.trust_id}"

    def _verdict(self, parsed: Parsed, stage: str, reach: Reach) -> Judged:
        assert parsed.digest is not None
        key = self.verdict_key(parsed.name, parsed.digest, stage)
        if reach is not Reach.ALL:
            hit = self.verdicts.peek(key)
            if hit is None:
                raise NotCached(key)
            return hit

        def compute() -> Judged:
            return Judged.of(verify())

        def verify() -> Verdict:
            # Every error while resolving or verifying is a refusal with its reason, cached like any verdict:
            # never a 500 (a name the store's grammar refuses, two versions of identical bytes, a store down).
            try:
                agent = self.store.resolve(f"{parsed.name}@{parsed.digest}")
            except NotFoundError:
                return refuse(parsed.digest or "", "artifact",
                              f"{parsed.name}@{parsed.digest} is not in {self.store.url}: it was never "
                              "published there (or under another name)")
            except AgentFactoryError as exc:
                return refuse(parsed.digest or "", "artifact", f"{parsed.name}@{parsed.digest}: {exc}")
            try:
                return verify_stored(self.store, agent, self.trust, engine=self.engine, stage=stage)[0]
            except AgentFactoryError as exc:  # a store that cannot be read denies, with the reason
                return refuse(parsed.digest or "", "verifier", str(exc))

        return self.verdicts.get(key, compute, timeout=self.config.deadline_ms / 1000)

    def _policy(self, review: Review, ref: Reference, parsed: Parsed, stage: str, judged: Judged | None,
                mode: str, reach: Reach, inline: _Inline) -> Decision:
        head = {
            # no object name: the decision is about the agent in its namespace, and is memoised by its
            # input, so the Pods a ReplicaSet creates under new names reuse it (docs/policy-inputs.md)
            "request": {"operation": review.operation, "namespace": review.namespace, "kind": review.kind,
                        "dryRun": review.dry_run, "mode": mode},
            "agent": {"ref": _plain(ref.ref), "field": _plain(ref.field), "pinned": parsed.pinned,
                      "name": parsed.name,
                      "digest": parsed.digest, "stage": stage, "requested_stage": ref.requested_stage,
                      "requested_stage_field": ref.requested_stage_field},
        }
        # the whole input, keyed canonically: the verdict's part was encoded once, with the verdict
        key = (_CANONICAL(head), "null" if judged is None else judged.key)
        document = {**head, "verdict": None if judged is None else judged.policy_input}
        with self._decisions_lock:
            cached = self._decisions.get(key)
            if cached is not None:
                self._decisions.move_to_end(key)
                return cached
        if reach is Reach.MEMOISED or (reach is Reach.NO_IO and not inline.spend(len(key[0]) + len(key[1]))):
            raise NotCached("admission decision")
        decision = self.engine.decide("admission", document)
        with self._decisions_lock:
            self._decisions[key] = decision
            while len(self._decisions) > MAX_POLICY_DECISIONS:
                self._decisions.popitem(last=False)
        return decision


def _in_check_order(messages: tuple[str, ...], judged: Judged | None) -> list[str]:
    """The policy's messages (a set, so sorted by text) in the verifier's order: digest and signature
    first, as a reader needs them, not `builder` first because it sorts first."""
    if judged is None or not messages:
        return list(messages)
    needles = judged.needles

    def key(message: str) -> int:
        for needle, i in needles:
            if needle in message:
                return i
        return len(needles)

    return sorted(messages, key=key)


def _store_prefix(url: str) -> str | None:
    """`oci://host:5000/agents?plain-http=true` → `host:5000/agents`; a local layout accepts any prefix."""
    if not url.startswith("oci://"):
        return None
    return url.removeprefix("oci://").partition("?")[0].rstrip("/")
