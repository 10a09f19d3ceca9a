"""The one verifier: may artifact D run here?

The promotion gate, the admission webhook, the node runtime and the audit all call `verify`.
It never raises on bad evidence: every property is a check with a reason, a check that cannot
be decided fails (fail closed), and the artifact is allowed only when every check passes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils

from .dsse import INTOTO_PAYLOAD_TYPE, Envelope, parse_envelope
from .errors import AgentFactoryError, InputError
from .evidence import Evidence, parse_artifact_signature
from .intoto import CYCLONEDX_BOM, SCAN_V1, SLSA_PROVENANCE_V1, Statement, parse_statement
from .metrics import OPA_BLOCKS, SCORE, VALIDATIONS, VIOLATIONS
from .policy import Decision, PolicyEngine, plain_text
from .provenance import builder_and_source
from .runspec import RunSpec, from_provenance
from .sbom import sbom_subject
from .scan.attestation import finished_on, sbom_digest, sbom_digest_of, scan_input
from .sigstore_bundles import (
    KeylessAttestation,
    KeylessSignature,
    bundle_kind,
    unverified_dsse_payload,
    verify_artifact_bundle,
    verify_dsse_bundle,
)
from .tlog.bundle import BodyCheck, check_record, describe, dsse_check, hashedrekord_check
from .trust import TrustedKey, TrustPolicy


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason}


# The security score out of 10 (docs/evidence.md): what each verified property is worth. Checks not
# listed here (the policy decision itself, a trust policy that does not load, the transparency log)
# do not score; they only allow or deny.
SCORE_WEIGHTS = {"digest": 2.0, "signature": 2.0, "key-status": 1.0, "sbom": 1.5, "provenance": 1.5,
                 "builder": 1.0, "source": 1.0}


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    digest: str
    score: float  # out of 10
    checks: tuple[Check, ...]
    # The run contract from verified provenance (None, with the reason, when there is none): what
    # the node runtime may grant the agent. Never read from unverified evidence.
    runspec: RunSpec | None = field(default=None, compare=False)
    runspec_problem: str = field(default="no verified provenance", compare=False)
    sbom: Any = field(default=None, compare=False)  # the verified CycloneDX document, for re-scanning

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "digest": self.digest, "score": self.score,
                "checks": [c.to_json() for c in self.checks]}

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.reason}" for c in self.checks if not c.ok]


def _rsa_ok(key: TrustedKey, signature: bytes, digest32: bytes) -> bool:
    try:
        key.public_key.verify(signature, digest32, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def envelope_signer(envelope: Envelope, policy: TrustPolicy) -> tuple[str | None, TrustedKey | None]:
    """(None, the key) when a trusted, non-revoked key's signature verifies; else (why not, None)."""
    reasons = []
    for s in envelope.signatures:
        key = policy.keys.get(s.keyid)
        if key is None:
            reasons.append(f"envelope signed by key {_short(s.keyid)}…, which the trust policy does not list")
        elif key.revoked:
            reasons.append(f"envelope signed by revoked key {_short(s.keyid)}…")
        elif _rsa_ok(key, s.sig, hashlib.sha256(envelope.signed_bytes).digest()):
            return None, key
        else:
            reasons.append(f"the envelope signature by key {_short(s.keyid)}… does not verify "
                           "(the document was modified)")
    return "; ".join(reasons) or "the envelope has no signatures", None


def _short(key_id: str) -> str:
    return key_id[:16]


def _pem(key: TrustedKey) -> bytes:
    return key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class _Logged:
    """A verified signature or attestation that must be in a trusted transparency log."""

    what: str
    matches: BodyCheck


class _Judge:
    def __init__(self, digest: str, policy: TrustPolicy) -> None:
        self.digest = digest
        self.policy = policy
        self.checks: list[Check] = []
        self.signer: TrustedKey | None = None
        self.to_log: list[_Logged] = []  # what the tlog check looks for
        # Keyless bundles that verified: each carries its own Rekor inclusion proof, which sigstore-python
        # checked against the Sigstore trusted root, so the tlog check needs no record of ours for them.
        self.keyless_logged: list[str] = []
        self._bundle_kinds: list[tuple[str, bytes, str | None]] | None = None  # (where, bundle, kind)

    def add(self, name: str, ok: bool, reason: str) -> bool:
        self.checks.append(Check(name, ok, reason))
        return ok

    # -- artifact bytes -----------------------------------------------------------------------
    def check_digest(self, artifact: bytes | None, problem: str | None) -> None:
        if artifact is None:
            self.add("digest", False, problem or "the artifact bytes were not available to hash")
            return
        actual = "sha256:" + hashlib.sha256(artifact).hexdigest()
        self.add("digest", actual == self.digest,
                 f"bytes hash to {self.digest}" if actual == self.digest
                 else f"bytes hash to {actual}, not {self.digest}: the artifact was modified")

    # -- the signature over the digest ----------------------------------------------------------
    def check_signature(self, evidence: Evidence) -> None:
        keyless_on = bool(self.policy.keyless.identities)
        if not evidence.signatures and not (keyless_on and evidence.bundles):
            why = "; ".join(evidence.problems) or f"no signature for {self.digest} (unsigned, or a modified copy)"
            self.add("signature", False, why + self._keyless_hint(evidence, "signature"))
            self.add("key-status", False, "no signing key to check")
            return
        failures: list[str] = []
        valid: list[TrustedKey] = []
        digest32 = bytes.fromhex(self.digest.split(":", 1)[1])
        for where, doc in evidence.signatures:
            try:
                sig = parse_artifact_signature(doc, where)
            except InputError as exc:
                failures.append(str(exc))
                continue
            if sig.digest != self.digest:
                failures.append(f"a signature is for {sig.digest}, not this artifact")
                continue
            key = self.policy.keys.get(sig.keyid)
            if key is None:
                failures.append(f"signed by key {_short(sig.keyid)}…, which the trust policy does not list")
            elif not _rsa_ok(key, sig.sig, digest32):
                failures.append(f"the signature by key {_short(sig.keyid)}… does not verify")
            else:
                valid.append(key)
                self.to_log.append(_Logged(f"the artifact signature by key {_short(key.key_id)}…",
                                           hashedrekord_check(digest32.hex(), sig.sig, _pem(key))))
        live = [k for k in valid if not k.revoked]
        keyless = self._keyless_signatures(evidence, failures) if keyless_on and not live else []
        if not valid and not keyless:
            self.add("signature", False, "; ".join(failures) + self._keyless_hint(evidence, "signature"))
            self.add("key-status", False, "no valid signature by a trusted key")
            return
        if keyless and not live:
            self._keyless_signed(keyless[0])
            return
        self.signer = (live or valid)[0]
        self.add("signature", True, f"signed by trusted key {_short(self.signer.key_id)}…"
                 + (f" ({self.signer.name})" if self.signer.name else ""))
        if live:
            self.add("key-status", True, f"key {_short(live[0].key_id)}… is not revoked")
        else:
            self.add("key-status", False, "every key that signed it is revoked: "
                     + ", ".join(f"{_short(k.key_id)}…" + (f" ({k.name})" if k.name else "") for k in valid))

    def _keyless_signatures(self, evidence: Evidence, failures: list[str]) -> list[KeylessSignature]:
        """The keyless signatures over this digest that verify for an identity the policy allows."""
        found: list[KeylessSignature] = []
        checked = 0
        for where, doc, kind in self._bundles(evidence):
            if kind == "dsse":
                continue  # an attestation: judged by attestation()
            checked += 1
            result = verify_artifact_bundle(doc, self.digest, self.policy.keyless, where=where)
            if isinstance(result, str):
                failures.append(result)
            else:
                found.append(result)
        if not checked and not evidence.signatures:
            failures.append(f"no signature for {self.digest}: the Sigstore bundles attached are attestations")
        return found

    def _keyless_signed(self, k: KeylessSignature) -> None:
        log = f"Rekor log index {k.log_index}" if k.log_index is not None else "Rekor"
        self.add("signature", True, f"signed keylessly by {k.identity} (Sigstore {self.policy.keyless.instance}, "
                 f"{log})")
        # Nothing to revoke: the key lived minutes and signed once; trust ends by removing the identity.
        self.add("key-status", True, "keyless: a short-lived certificate (valid "
                 f"{k.not_before:%Y-%m-%d %H:%M:%S} to {k.not_after:%H:%M:%S} UTC), no key to revoke")
        self.keyless_logged.append(f"the keyless artifact signature ({log})")

    def _bundles(self, evidence: Evidence) -> list[tuple[str, bytes, str | None]]:
        if self._bundle_kinds is None:
            self._bundle_kinds = [(where, doc, bundle_kind(doc)) for where, doc in evidence.bundles]
        return self._bundle_kinds

    def _keyless_hint(self, evidence: Evidence, what: str, predicate_type: str | None = None) -> str:
        """Say so when keyless evidence is attached but the trust policy trusts no keyless identity."""
        if self.policy.keyless.identities or not evidence.bundles:
            return ""
        if predicate_type is None:
            if all(kind == "dsse" for _, _, kind in self._bundles(evidence)):
                return ""
        else:
            payloads = (unverified_dsse_payload(doc) for _, doc, kind in self._bundles(evidence) if kind == "dsse")
            if not any(p is not None and predicate_type.encode() in p[1] for p in payloads):
                return ""
        return (f"; a keyless {what} (Sigstore bundle) is attached, but the trust policy lists no keyless "
                "identities (spec.keyless)")

    # -- attestations ---------------------------------------------------------------------------
    def attestation(self, evidence: Evidence, name: str, predicate_type: str,
                    inspect: Callable[[Statement], str | None],
                    newest: Callable[[Statement], str] | None = None) -> Statement | None:
        """Check the attestation of `predicate_type`; return its statement when it holds.

        With `newest`, every valid one is considered and the greatest by that key wins (a re-scan
        supersedes the build's scan); otherwise the first valid one.
        """
        failures: list[str] = []
        seen_types: list[str] = []
        valid: list[tuple[Statement, bytes, TrustedKey | KeylessAttestation]] = []
        for where, doc in evidence.attestations:
            try:
                envelope = parse_envelope(doc, where)
                statement = parse_statement(envelope.payload, where)
            except InputError as exc:
                failures.append(str(exc))
                continue
            seen_types.append(statement.predicate_type)
            if statement.predicate_type != predicate_type:
                continue
            problem, signer = self._envelope_problem(envelope)
            if problem is None and not statement.is_about(self.digest):
                problem = (f"the attestation is about {', '.join(d for _, d in statement.subjects)}, "
                           f"not {self.digest}")
            if problem is None:
                problem = inspect(statement)
            if problem is None and signer is not None:
                valid.append((statement, doc, signer))
                if newest is None:
                    break
                continue
            failures.append(problem or "the envelope has no verifying signature")
        if self.policy.keyless.identities and (newest is not None or not valid):
            valid.extend(self._keyless_attestations(evidence, predicate_type, inspect, failures, seen_types))
        if valid:
            chosen, doc, by = max(valid, key=lambda v: newest(v[0])) if newest else valid[0]
            if isinstance(by, KeylessAttestation):
                log = f"Rekor log index {by.log_index}" if by.log_index is not None else "Rekor"
                self.add(name, True, f"{predicate_type} attestation signed keylessly by {by.identity}, "
                         "about this digest")
                self.keyless_logged.append(f"the keyless {name} attestation ({log})")
                return chosen
            self.add(name, True, f"{predicate_type} attestation signed by a trusted key, about this digest")
            self.to_log.append(_Logged(f"the {name} attestation", dsse_check(doc, _pem(by))))
            return chosen
        if not failures:
            found = f" (found: {', '.join(sorted(set(seen_types)))})" if seen_types else ""
            failures.append(f"no {predicate_type} attestation{found}")
        failures.extend(evidence.problems)
        self.add(name, False, "; ".join(failures) + self._keyless_hint(evidence, "attestation", predicate_type))
        return None

    def _keyless_attestations(self, evidence: Evidence, predicate_type: str,
                              inspect: Callable[[Statement], str | None], failures: list[str],
                              seen_types: list[str]) -> list[tuple[Statement, bytes, KeylessAttestation]]:
        """Keyless DSSE bundles of `predicate_type` that verify for an allowed identity and hold."""
        out: list[tuple[Statement, bytes, KeylessAttestation]] = []
        for where, doc, kind in self._bundles(evidence):
            if kind != "dsse":
                continue
            unverified = unverified_dsse_payload(doc)
            try:  # which statement it claims to be, read before verifying (as for envelopes)
                claimed = parse_statement(unverified[1], where) if unverified else None
            except InputError as exc:
                failures.append(str(exc))
                continue
            if claimed is None:
                failures.append(f"{where}: the Sigstore bundle's DSSE envelope is malformed")
                continue
            seen_types.append(claimed.predicate_type)
            if claimed.predicate_type != predicate_type:
                continue
            result = verify_dsse_bundle(doc, self.policy.keyless, where=where)
            if isinstance(result, str):
                failures.append(result)
                continue
            if result.payload_type != INTOTO_PAYLOAD_TYPE:
                failures.append(f"{where}: the keyless attestation's payload is {result.payload_type}, "
                                f"not {INTOTO_PAYLOAD_TYPE}")
                continue
            try:  # what was signed, not what was read above
                statement = parse_statement(result.payload, where)
            except InputError as exc:
                failures.append(str(exc))
                continue
            problem = None
            if statement.predicate_type != predicate_type:
                problem = f"{where}: the signed statement is of {statement.predicate_type}, not {predicate_type}"
            elif not statement.is_about(self.digest):
                problem = (f"the attestation is about {', '.join(d for _, d in statement.subjects)}, "
                           f"not {self.digest}")
            else:
                problem = inspect(statement)
            if problem is None:
                out.append((statement, doc, result))
            else:
                failures.append(problem)
        return out

    def _envelope_problem(self, envelope: Envelope) -> tuple[str | None, TrustedKey | None]:
        return envelope_signer(envelope, self.policy)

    def sbom_matches(self, statement: Statement) -> str | None:
        bom = statement.predicate
        if not isinstance(bom, dict) or bom.get("bomFormat") != "CycloneDX":
            return "the SBOM is not a CycloneDX document"
        try:
            _, _, described = sbom_subject(json.dumps(bom).encode(), "SBOM")
        except InputError as exc:
            return exc.message
        if described != self.digest:
            return f"the SBOM describes {described}, not this artifact"
        return None

    def scan_of(self, sbom: Statement | None) -> Callable[[Statement], str | None]:
        """A scan attestation holds when it is about the verified SBOM, byte for byte, and well formed."""
        def holds(statement: Statement) -> str | None:
            if sbom is None:
                return "no verified SBOM to bind the scan to"
            scanned = sbom_digest_of(statement.predicate)
            if scanned != sbom_digest(sbom.predicate):
                return f"the scan is of SBOM {scanned or '(none named)'}, not of this artifact's signed SBOM"
            try:
                scan_input(statement.predicate, "scan")
            except InputError as exc:
                return str(exc)
            return None
        return holds

    def provenance_holds(self, statement: Statement) -> str | None:
        try:
            builder_and_source(statement.predicate, "provenance")
        except InputError as exc:
            return exc.message
        return None

    # -- the transparency log -------------------------------------------------------------------
    def check_tlog(self, evidence: Evidence) -> None:
        """Only when the trust policy lists logs: every verified signature and attestation is in one,
        proven offline by its stored record (SET, inclusion proof, checkpoint) and matching it exactly."""
        if not self.policy.logs:
            return
        keyless = ("; keyless bundles carry their own Rekor inclusion proof, verified against the Sigstore "
                   f"trusted root: {', '.join(self.keyless_logged)}") if self.keyless_logged else ""
        if not self.to_log:
            if keyless:
                self.add("tlog", True, keyless[2:])
                return
            self.add("tlog", False, "no verified signature or attestation to look for in a transparency log")
            return
        problems: list[str] = []
        verified: list[tuple[str, int, dict[str, Any]]] = []  # (where, log index, canonical body)
        for where, doc in evidence.tlog:
            try:
                entry, body = check_record(doc, self.policy.logs, where)
            except InputError as exc:
                problems.append(str(exc))
                continue
            verified.append((where, entry.log_index, body))
        missing: list[str] = []
        used: dict[int, int] = {}  # position in `verified` -> log index
        for item in self.to_log:
            hit = next((i for i, (_, _, body) in enumerate(verified) if item.matches(body) is None), None)
            if hit is None:
                missing.append(item.what)
            else:
                used[hit] = verified[hit][1]
        if not missing:
            self.add("tlog", True, f"{len(self.to_log)} signatures and attestations are in a trusted transparency "
                     f"log (log indices {', '.join(str(i) for i in sorted(set(used.values())))})" + keyless)
            return
        problems.extend(f"{where}: it logs {describe(body)}, which is none of them"
                        for i, (where, _, body) in enumerate(verified) if i not in used)
        if not evidence.tlog:
            problems.append("the evidence holds no transparency-log records")
        self.add("tlog", False, f"not in a trusted transparency log: {', '.join(missing)}"
                 + "".join(f"; {p}" for p in problems))

    def check_builder_and_source(self, statement: Statement | None) -> None:
        if statement is None:
            self.add("builder", False, "no verified provenance to read the builder from")
            self.add("source", False, "no verified provenance to read the source repository from")
            return
        builder, repo = builder_and_source(statement.predicate, "provenance")
        self.add("builder", self.policy.trusts_builder(builder),
                 f"built by {builder}" if self.policy.trusts_builder(builder)
                 else f"built by {builder}, which the trust policy does not list ({', '.join(self.policy.builders)})")
        self.add("source", self.policy.trusts_repository(repo),
                 f"from {repo}" if self.policy.trusts_repository(repo)
                 else f"from {repo}, which matches none of the trusted repositories "
                      f"({', '.join(self.policy.repositories)})")


def verify(digest: str, artifact: bytes | None, evidence: Evidence, policy: TrustPolicy,
           *, artifact_problem: str | None = None, engine: PolicyEngine | None = None, stage: str = "dev",
           name: str = "", version: str = "") -> Verdict:
    """Judge `artifact` (named by `digest`) and its evidence against `policy`.

    With a policy `engine`, the artifact policy for `stage` is one more check ("policy"), fed with
    the checks, the score and the verified SBOM: the same decision in every plane.
    """
    judge = _Judge(digest, policy)
    sbom: Statement | None = None
    scan: Statement | None = None
    runspec: RunSpec | None = None
    runspec_problem = "no verified provenance"
    try:
        judge.check_digest(artifact, artifact_problem)
        judge.check_signature(evidence)
        sbom = judge.attestation(evidence, "sbom", CYCLONEDX_BOM, judge.sbom_matches)
        provenance = judge.attestation(evidence, "provenance", SLSA_PROVENANCE_V1, judge.provenance_holds)
        scan = judge.attestation(evidence, "scan", SCAN_V1, judge.scan_of(sbom),
                                 newest=lambda st: finished_on(st.predicate))
        judge.check_builder_and_source(provenance)
        judge.check_tlog(evidence)
        if provenance is not None:
            try:
                runspec = from_provenance(provenance.predicate)
            except InputError as exc:
                runspec_problem = str(exc)
    except (AgentFactoryError, ValueError, TypeError) as exc:  # fail closed on the unforeseen
        judge.add("verifier", False, f"verification failed: {type(exc).__name__}: {exc}")
    if engine is not None:
        score = _score(judge.checks)
        decision = engine.decide("artifact", artifact_input(name, version, digest, stage, judge.checks, score,
                                                            sbom.predicate if sbom else None, runspec,
                                                            scan_input(scan.predicate, "scan") if scan else None))
        judge.add("policy", decision.allow, f"artifact policy ({stage}) allows it" if decision.allow
                  else "artifact policy: " + "; ".join(decision.deny))
        record_decision(decision)
    verdict = _verdict(judge.digest, judge.checks, name)
    return Verdict(verdict.allowed, verdict.digest, verdict.score, verdict.checks, runspec, runspec_problem,
                   sbom.predicate if sbom is not None else None)


def sbom_components(bom: Any) -> list[dict[str, Any]]:
    """Components of a CycloneDX document with their licences as SPDX ids or expressions."""
    out = []
    for c in bom.get("components", []) if isinstance(bom, dict) else []:
        if not isinstance(c, dict):
            continue
        licenses = []
        for entry in c.get("licenses", []) or []:
            if not isinstance(entry, dict):
                continue
            if entry.get("expression"):
                licenses.append(str(entry["expression"]))
            elif isinstance(entry.get("license"), dict):
                lic = entry["license"]
                licenses.append(str(lic.get("id") or lic.get("name") or ""))
        out.append({"name": c.get("name"), "version": c.get("version"), "purl": c.get("purl"),
                    "licenses": licenses})
    return out


def artifact_input(name: str, version: str, digest: str, stage: str, checks: list[Check], score: float,
                   bom: Any, runspec: RunSpec | None = None,
                   scan: dict[str, Any] | None = None) -> dict[str, Any]:
    """The artifact policy's input (docs/policy-inputs.md)."""
    return {"artifact": {"name": name, "version": version, "digest": digest}, "stage": stage,
            "verdict": {"score": score, "checks": [{**c.to_json(), "reason": plain_text(c.reason)} for c in checks]},
            "sbom": {"components": sbom_components(bom)} if bom is not None else None,
            "agent": runspec.to_json() if runspec is not None else None,
            "scan": scan}


def record_decision(decision: Decision) -> None:
    if not decision.allow:
        OPA_BLOCKS.labels(policy=decision.policy).inc()
        VIOLATIONS.labels(policy=decision.policy).inc(len(decision.deny))


def refuse(digest: str, name: str, reason: str) -> Verdict:
    """A verdict that denies before any evidence is read (e.g. the trust policy does not load)."""
    return _verdict(digest, [Check(name, False, reason)])


def _score(checks: list[Check]) -> float:
    return round(sum(SCORE_WEIGHTS.get(c.name, 0.0) for c in checks if c.ok), 1)


def _verdict(digest: str, checks: list[Check], name: str = "") -> Verdict:
    allowed = bool(checks) and all(c.ok for c in checks)
    VALIDATIONS.labels(result="allowed" if allowed else "denied").inc()
    score = _score(checks)
    if name:
        SCORE.labels(agent=name).set(score)
    return Verdict(allowed, digest, score, tuple(checks))
