"""The one verifier: may artifact D run here?

The promotion gate, the admission webhook, the node runtime and the audit all call `verify`.
It never raises on bad evidence: every property is a check with a reason, a check that cannot
be decided fails (fail closed), and the artifact is allowed only when every check passes. Names and
versions are bound to the signed provenance (a re-tag does not make an old build new), and beyond the
entry stage a stage is proven by a promoter-signed, logged promotion attestation (the `promotion`
check), never claimed by a tag or a workload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils

from .dsse import INTOTO_PAYLOAD_TYPE, Envelope, parse_envelope
from .errors import AgentFactoryError, InputError
from .evidence import Evidence, parse_artifact_signature
from .intoto import CYCLONEDX_BOM, SCAN_V1, SLSA_PROVENANCE_V1, SLSA_VSA_V1, Statement, parse_statement
from .policy import Decision, PolicyEngine, plain_text
from .policy_input import times_input
from .promotion import DEFAULT_ENTRY_STAGE, Claim, parse_predicate
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
from .tlog.bundle import BodyCheck, check_record, describe, dsse_check, hashedrekord_check, statement_check
from .tlog.witness import WitnessState, check_witnessed, load_state
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
    promotion: PromotionState | None = field(default=None, compare=False)  # where the digest stands in the stage

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


def envelope_signer(envelope: Envelope, policy: TrustPolicy,
                    keys: dict[str, TrustedKey] | None = None) -> tuple[str | None, TrustedKey | None]:
    """(None, the key) when a trusted, non-revoked key's signature verifies; else (why not, None).

    `keys` (default: the policy's build keys) are the keys that count, e.g. the promoters."""
    reasons = []
    trusted = policy.keys if keys is None else keys
    for s in envelope.signatures:
        key = trusted.get(s.keyid)
        if key is None and keys is not None and s.keyid in policy.keys:
            reasons.append(f"envelope signed by build key {_short(s.keyid)}…, which is not a promoter "
                           "(spec.promoters): a build key alone cannot promote")
        elif key is None:
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


# -- promotions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromotionRecord:
    """A promotion attestation whose promoter signature and transparency-log record both verified."""

    claim: Claim
    sha256: str  # of the envelope bytes (what the log recorded and the next stage's attestation names)
    log_id: str
    log_index: int
    integrated_time: int  # the log's time, not the signer's
    signer: str  # key id
    payload_sha256: str = ""  # of the signed statement: its first entry in the log places the record

    @property
    def order(self) -> tuple[int, int]:
        """Newer is greater: the log's integrated time, then its index (one log's total order)."""
        return (self.integrated_time, self.log_index)


@dataclass(frozen=True)
class PromotionState:
    """Where a digest stands in one stage, from its verified promotion records."""

    stage: str
    promoted: bool
    reason: str
    current: PromotionRecord | None = None  # the newest record for `stage` (promote or withdraw)
    newest: dict[str, PromotionRecord] = field(default_factory=dict)  # stage -> its newest record

    @property
    def promoted_stages(self) -> list[str]:
        return [st for st, r in sorted(self.newest.items(), key=lambda kv: kv[1].order)
                if r.claim.action == "promote"]

    def to_input(self) -> dict[str, Any]:
        return {"stage": self.stage, "promoted": self.promoted, "reason": plain_text(self.reason)}


def promotion_records(digest: str, evidence: Evidence, policy: TrustPolicy) -> tuple[list[PromotionRecord], list[str]]:
    """Every promotion attestation about `digest` signed by a trusted promoter and logged in a trusted
    log, and why the others do not count."""
    records: list[PromotionRecord] = []
    problems: list[str] = []
    logged: list[tuple[Any, dict[str, Any]]] | None = None
    for where, doc in evidence.attestations:
        try:
            envelope = parse_envelope(doc, where)
            statement = parse_statement(envelope.payload, where)
        except InputError:
            continue  # reported by the attestation checks
        if statement.predicate_type != SLSA_VSA_V1:
            continue
        if not statement.is_about(digest):
            problems.append(f"{where}: a promotion about {', '.join(d for _, d in statement.subjects)}, "
                            f"not {digest}")
            continue
        problem, key = envelope_signer(envelope, policy, policy.promoters)
        if problem is not None or key is None:
            problems.append(f"{where}: a promotion attestation that does not count: {problem}")
            continue
        try:
            claim = parse_predicate(statement.predicate, where)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if logged is None:
            logged = []
            for rwhere, rdoc in evidence.tlog:
                try:
                    logged.append(check_record(rdoc, policy.logs, rwhere))
                except InputError:
                    continue
        matches, same = dsse_check(doc, _pem(key)), statement_check(envelope.payload, _pem(key))
        # placed at the statement's first entry: a re-encoded copy logged later (no key needed) moves nothing
        entry = min((e for e, body in logged if matches(body) is None or same(body) is None),
                    key=lambda e: (e.integrated_time, e.log_index), default=None)
        if entry is None:
            problems.append(f"{where}: the {claim.action} of {claim.stage} signed by promoter "
                            f"{_short(key.key_id)}… is not in a trusted transparency log, so it proves nothing")
            continue
        records.append(PromotionRecord(claim, hashlib.sha256(doc).hexdigest(), entry.log_id, entry.log_index,
                                       entry.integrated_time, key.key_id, hashlib.sha256(envelope.payload).hexdigest()))
    return records, problems


def environment_problem(record: PromotionRecord, policy: TrustPolicy | None) -> str | None:
    """Why `record` does not count under `policy`'s environment, or None. A stage is a stage of one environment:
    with `spec.environment` set, another environment's `prod` (or an unnamed one) proves nothing here."""
    if policy is None or not policy.environment or record.claim.environment == policy.environment:
        return None
    made = f"environment {record.claim.environment!r}" if record.claim.environment else "no environment"
    return (f"a {record.claim.action} of {record.claim.stage} (log index {record.log_index}) was made for {made}, "
            f"not for this trust policy's {policy.environment!r}")


def promotion_state(digest: str, stage: str, records: list[PromotionRecord], problems: list[str], *,
                    name: str = "", version: str = "", entry_stage: str = DEFAULT_ENTRY_STAGE,
                    policy: TrustPolicy | None = None) -> PromotionState:
    """Whether `digest` is promoted to `stage`: the newest (by the log) verified record for that stage
    promotes it. The entry stage needs no promotion (it is fed from the store). A record counts only for
    the agent name and version it names: identical bytes published as another agent or version (another
    run contract) are not promoted by it."""
    newest: dict[str, PromotionRecord] = {}
    problems = list(problems)
    for r in records:
        if (name and r.claim.name != name) or (version and r.claim.version != version):
            problems.append(f"a promotion to {r.claim.stage} (log index {r.log_index}) is of {r.claim.name} "
                            f"{r.claim.version}, not of {name} {version}".rstrip())
            continue
        elsewhere = environment_problem(r, policy)
        if elsewhere is not None:
            problems.append(elsewhere)
            continue
        if r.claim.stage not in newest or r.order > newest[r.claim.stage].order:
            newest[r.claim.stage] = r
    what = f"{name} {version} ({digest})" if name and version else f"{name} ({digest})" if name else digest
    if stage == entry_stage:
        return PromotionState(stage, True, f"{stage} is the entry stage: it needs no promotion", newest.get(stage),
                              newest)
    if policy is not None and not policy.promoters:
        return PromotionState(stage, False, f"the trust policy lists no promoters (spec.promoters), so nothing can "
                              f"be proven promoted to {stage}", None, newest)
    if policy is not None and not policy.logs:
        return PromotionState(stage, False, "the trust policy lists no transparency log (spec.transparencyLogs): a "
                              f"promotion to {stage} counts only when logged", None, newest)
    current = newest.get(stage)
    promoted = [st for st, r in sorted(newest.items(), key=lambda kv: kv[1].order) if r.claim.action == "promote"]
    withdrawn = [st for st, r in newest.items() if r.claim.action == "withdraw"]
    elsewhere = (f"promoted to {', '.join(promoted)} only" if promoted else "not promoted to any stage") \
        + (f" (withdrawn from {', '.join(withdrawn)})" if withdrawn and stage not in withdrawn else "")
    extra = "".join(f"; {p}" for p in problems)
    if current is None:
        return PromotionState(stage, False, f"{what} is {elsewhere}, not to {stage}{extra}", None, newest)
    at = f"log index {current.log_index}, integrated {_when(current.integrated_time)}"
    if current.claim.action == "withdraw":
        why = f": {current.claim.reason}" if current.claim.reason else ""
        return PromotionState(stage, False, f"{what} was withdrawn from {stage} ({at}){why}; it is {elsewhere}{extra}",
                              current, newest)
    by = f", approved by {current.claim.approved_by}" if current.claim.approved_by else ""
    return PromotionState(stage, True, f"promoted to {stage} by promoter {_short(current.signer)}… ({at}{by})",
                          current, newest)


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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

    def provenance_for(self, name: str, version: str, sbom: Statement | None,
                       valid: list[tuple[Statement, str, str | None]]) -> Callable[[Statement], str | None]:
        """A provenance holds when it is well formed and names the agent and version the reference used
        (docs/evidence.md, "Names and versions"); each that holds is appended to `valid`."""
        def holds(statement: Statement) -> str | None:
            problem = self.provenance_holds(statement)
            if problem is not None:
                return problem
            signed_name, signed_version = provenance_identity(statement, sbom)
            if name and signed_name != name:
                return (f"the signed provenance is for agent {signed_name!r}, not {name!r} (the name the reference "
                        "used): refusing a mislabelled artifact")
            if version and signed_version is None:
                return (f"the signed provenance records no version to bind {name or signed_name}:{version} to "
                        "(and no verified SBOM names one)")
            if version and signed_version != version:
                return (f"the signed provenance is for {signed_name} {signed_version}, not {version} (the version the "
                        "reference used): an older build re-tagged as a newer version?")
            valid.append((statement, signed_name, signed_version))
            return None
        return holds

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
        witnessed: dict[str, WitnessState] = {}  # the monitor's state, read once per log
        for where, doc in evidence.tlog:
            try:
                entry, body = check_record(doc, self.policy.logs, where)
                state_file = self.policy.witnesses.get(entry.log_id)
                if state_file is not None:
                    if entry.log_id not in witnessed:
                        witnessed[entry.log_id] = load_state(state_file, self.policy.logs[entry.log_id])
                    check_witnessed(entry, witnessed[entry.log_id], None, where)
            except AgentFactoryError as exc:
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

    def check_logged_scans(self, evidence: Evidence, scan: Statement | None) -> None:
        """When the trust policy gives a log's URL, a scan removed from the store is still found there
        (agentfactory/scan/logged.py): a newer logged attestation missing from the store fails `scan`."""
        if not self.policy.log_urls:
            return
        from .scan.logged import check_logged_scans
        from .tlog.client import RekorClient

        clients = [RekorClient(url) for url in self.policy.log_urls.values()]
        try:
            result = check_logged_scans(clients, self.digest, self.policy,
                                        [doc for _, doc in evidence.attestations], scan)
        finally:
            for client in clients:
                client.close()
        if not result.ok:
            failed = Check("scan", False, result.reason())
            if any(c.name == "scan" for c in self.checks):
                self.checks = [failed if c.name == "scan" else c for c in self.checks]
            else:
                self.checks.append(failed)

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
           name: str = "", version: str = "", promotion_stage: str | None = None,
           entry_stage: str = DEFAULT_ENTRY_STAGE, now: datetime | None = None) -> Verdict:
    """Judge `artifact` (named by `digest`) and its evidence against `policy`.

    `name` and `version` are those of the reference used: the signed provenance must name them. The
    `promotion` check proves the digest promoted to `promotion_stage` (default: `stage`); the entry
    stage needs no promotion. With a policy `engine`, the artifact policy for `stage` is one more
    check ("policy"), fed with the checks, the score and the verified evidence: the same decision in
    every plane.
    """
    judge = _Judge(digest, policy)
    sbom: Statement | None = None
    scan: Statement | None = None
    provenance: Statement | None = None
    promoted: PromotionState | None = None
    runspec: RunSpec | None = None
    runspec_problem = "no verified provenance"
    try:
        judge.check_digest(artifact, artifact_problem)
        judge.check_signature(evidence)
        sbom = judge.attestation(evidence, "sbom", CYCLONEDX_BOM, judge.sbom_matches)
        provenance, runspec, runspec_problem = _provenance(judge, evidence, name, version, sbom)
        scan = judge.attestation(evidence, "scan", SCAN_V1, judge.scan_of(sbom),
                                 newest=lambda st: finished_on(st.predicate))
        judge.check_builder_and_source(provenance)
        judge.check_tlog(evidence)
        judge.check_logged_scans(evidence, scan)
        records, problems = promotion_records(digest, evidence, policy)
        unlogged = None
        if (promotion_stage or stage) != entry_stage and policy.log_urls and policy.promoters:
            from .promotion_log import check_logged_promotions

            records, unlogged = check_logged_promotions(digest, policy, records, evidence, promotion_stage or stage)
        promoted = promotion_state(digest, promotion_stage or stage, records, problems, name=name, version=version,
                                   entry_stage=entry_stage, policy=policy)
        if unlogged is not None:
            promoted = dataclasses.replace(promoted, promoted=False, reason=unlogged)
        if promoted.stage != entry_stage:  # the entry stage is fed from the store: nothing to prove
            judge.add("promotion", promoted.promoted, promoted.reason)
    except (AgentFactoryError, ValueError, TypeError) as exc:  # fail closed on the unforeseen
        judge.add("verifier", False, f"verification failed: {type(exc).__name__}: {exc}")
    if engine is not None:
        score = _score(judge.checks)
        decision = engine.decide("artifact", artifact_input(
            name, version, digest, stage, judge.checks, score, sbom.predicate if sbom else None, runspec,
            scan_input(scan.predicate, "scan") if scan else None, now=now,
            provenance=provenance_input(provenance), trust=trust_input(policy),
            promotion=promoted.to_input() if promoted is not None else None))
        judge.add("policy", decision.allow, f"artifact policy ({stage}) allows it" if decision.allow
                  else "artifact policy: " + "; ".join(decision.deny))
        record_decision(decision)
    verdict = _verdict(judge.digest, judge.checks, name)
    return Verdict(verdict.allowed, verdict.digest, verdict.score, verdict.checks, runspec, runspec_problem,
                   sbom.predicate if sbom is not None else None, promoted)


def provenance_identity(statement: Statement, sbom: Statement | None) -> tuple[str, str | None]:
    """(agent name, version) that a verified provenance vouches for.

    The name: `externalParameters.name`, else the statement's subject name. The version:
    `externalParameters.version`, else the version the verified SBOM of the same digest gives its
    `metadata.component` (pipelines that do not yet record it in the provenance).
    """
    pred = statement.predicate if isinstance(statement.predicate, dict) else {}
    definition = pred.get("buildDefinition")
    params = definition.get("externalParameters") if isinstance(definition, dict) else None
    params = params if isinstance(params, dict) else {}
    name = params.get("name") if isinstance(params.get("name"), str) else (
        statement.subjects[0][0] if statement.subjects else "")
    version = params.get("version") if isinstance(params.get("version"), str) else None
    if version is None and sbom is not None and isinstance(sbom.predicate, dict):
        meta = sbom.predicate.get("metadata")
        component = meta.get("component") if isinstance(meta, dict) else None
        found = component.get("version") if isinstance(component, dict) else None
        version = found if isinstance(found, str) else None
    return str(name), version


def _provenance(judge: _Judge, evidence: Evidence, name: str, version: str,
                sbom: Statement | None) -> tuple[Statement | None, RunSpec | None, str]:
    """The provenance matching the reference, and its run contract. Several matching provenances that
    grant different contracts are ambiguous: refused, saying how to ask for one."""
    valid: list[tuple[Statement, str, str | None]] = []
    chosen = judge.attestation(evidence, "provenance", SLSA_PROVENANCE_V1,
                               judge.provenance_for(name, version, sbom, valid), newest=lambda _st: "")
    if chosen is None:
        return None, None, "no verified provenance"
    contracts: dict[str, list[str]] = {}
    for statement, signed_name, signed_version in valid:
        try:
            contract = json.dumps(from_provenance(statement.predicate).to_json(), sort_keys=True)
        except InputError as exc:
            contract = f"invalid: {exc}"
        contracts.setdefault(contract, []).append(f"{signed_name}:{signed_version or '?'}")
    if len(contracts) > 1:
        asked = f"{name}:{version}" if version else (name or judge.digest)
        options = sorted({v for vs in contracts.values() for v in vs})
        how = (f"ask for one version by name:version ({', '.join(options)})" if not version
               else "the evidence holds conflicting provenances for one name and version: rebuild and re-sign it")
        judge.checks[-1] = Check("provenance", False, f"ambiguous: {len(valid)} signed provenances for {asked} "
                                                      f"grant different run contracts; {how}")
        return None, None, "ambiguous provenance"
    try:
        return chosen, from_provenance(chosen.predicate), ""
    except InputError as exc:
        return chosen, None, str(exc)


def provenance_input(statement: Statement | None) -> dict[str, Any] | None:
    """`input.provenance`: the verified provenance's dirty flag, repository and builder (or null)."""
    if statement is None:
        return None
    pred = _obj(statement.predicate)
    definition = _obj(pred.get("buildDefinition"))
    internal, external = _obj(definition.get("internalParameters")), _obj(definition.get("externalParameters"))
    builder = _obj(_obj(pred.get("runDetails")).get("builder"))
    dirty = internal.get("dirty")
    repo, builder_id = external.get("repository"), builder.get("id")
    return {"dirty": dirty if isinstance(dirty, bool) else None,
            "repository": repo if isinstance(repo, str) else None,
            "builder": builder_id if isinstance(builder_id, str) else None}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def trust_input(policy: TrustPolicy) -> dict[str, Any]:
    """`input.trust`: the trusted repository patterns ("*" when it trusts any)."""
    return {"repositories": list(policy.repositories)}


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
                   scan: dict[str, Any] | None = None, *, now: datetime | None = None,
                   provenance: dict[str, Any] | None = None, trust: dict[str, Any] | None = None,
                   promotion: dict[str, Any] | None = None) -> dict[str, Any]:
    """The artifact policy's input (docs/policy-inputs.md): `now` is the decision time (RFC 3339 UTC); `times`
    maps it and the scan's finish time to nanoseconds since the epoch, parsed here once (policy_input.times_input:
    the policy looks each string up rather than parse it, which cost rego-cpp most of the decision)."""
    now_text = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"artifact": {"name": name, "version": version, "digest": digest}, "stage": stage, "now": now_text,
            "times": times_input(now_text, scan.get("scannedOn") if isinstance(scan, dict) else None),
            "verdict": {"score": score, "checks": [{**c.to_json(), "reason": plain_text(c.reason)} for c in checks]},
            "sbom": {"components": sbom_components(bom)} if bom is not None else None,
            "agent": runspec.to_json() if runspec is not None else None,
            "scan": scan, "provenance": provenance, "trust": trust or {"repositories": ["*"]},
            "promotion": promotion}


def _metrics() -> Any:
    """agentfactory.metrics when this process can expose it, else None.

    Every process that serves /metrics (admission/app.py, sandbox-runtime/server.py) imports
    agentfactory.metrics to do so; a one-shot command, whose registry nobody can scrape, does not pay
    prometheus_client's import (~35 ms of `agentfactory verify`) to count into it.
    """
    return sys.modules.get("agentfactory.metrics")


def record_decision(decision: Decision) -> None:
    metrics = _metrics()
    if metrics is not None and not decision.allow:
        metrics.OPA_BLOCKS.labels(policy=decision.policy).inc()
        metrics.VIOLATIONS.labels(policy=decision.policy).inc(len(decision.deny))


def refuse(digest: str, name: str, reason: str) -> Verdict:
    """A verdict that denies before any evidence is read (e.g. the trust policy does not load)."""
    return _verdict(digest, [Check(name, False, reason)])


def _score(checks: list[Check]) -> float:
    return round(sum(SCORE_WEIGHTS.get(c.name, 0.0) for c in checks if c.ok), 1)


def _verdict(digest: str, checks: list[Check], name: str = "") -> Verdict:
    allowed = bool(checks) and all(c.ok for c in checks)
    score = _score(checks)
    metrics = _metrics()
    if metrics is not None:
        metrics.VALIDATIONS.labels(result="allowed" if allowed else "denied").inc()
        if name:
            metrics.SCORE.labels(agent=name).set(score)
    return Verdict(allowed, digest, score, tuple(checks))
