"""What an auditor asks the transparency log, and how every answer is checked before it is believed.

Three questions, each answered only from data verified against the log's pinned public key (from the trust
policy, never from the log's folder):

* search: the entries about an artifact, by a signer, of an agent or in an index range, each re-verified
  (SET, checkpoint signature, inclusion proof, and the signature itself where the bytes are at hand);
* monitor: does the current signed checkpoint extend the last one we verified (`witness`: kept outside the
  log's folder, a missing one is an alarm unless `--init`)? A failed consistency proof, a different root at the
  same size or a smaller tree means the log forked or rewrote history;
* keys: is every signature by our keys in the log one the pipeline made — in its signing record
  (`signing_record`), and in the store attached to the agent it is about (or recorded for another store, or
  for a run that logged and never published) — and is every signature the store holds in the log? A logged
  signature with no record line is the trace a stolen key leaves.

Signatures are matched by what was signed (the artifact digest; the DSSE payload, its signatures verified over
the PAE), never by the bytes of an envelope, which anyone can re-encode and log again. The log's search index
is derived data that can be edited or incomplete, so `keys` also reads the entries themselves.

Agent search goes through the store, not the log: a dsse body keeps only hashes, so the log cannot say
which agent an entry is about. The agent's versions in the store give their artifact digests (searched in
the log: hashedrekord entries, and dsse entries the log indexes by in-toto subject) and their attached
transparency-log records give the uuids of every entry the pipeline logged for them (fetched afresh).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..dsse import b64decode_strict, pae, parse_envelope
from ..errors import AgentFactoryError, InputError
from ..evidence import collect, parse_artifact_signature
from ..intoto import parse_statement
from ..keys.base import PublicKey
from ..store import ArtifactStore
from . import merkle, note, witness
from .base import TransparencyLog
from .bundle import check_record, parse_record
from .entries import (
    LogEntry,
    canonical_pem,
    load_public_key,
    parse_proposed_entry,
    signature_verifies,
    verify_entry_signature,
)
from .log import EmbeddedLog, key_fingerprint
from .signing_record import Signed, SigningRecord

ALARM = "ALARM: the log forked or rewrote its history"


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what the store says the pipeline signed ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSignature:
    """An artifact signature the store holds, attached to an agent whose digest it signs."""

    agent: str  # name:version@digest
    digest: str  # sha256:<hex>
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class StoredEnvelope:
    """An attestation envelope the store holds, attached to an agent its statement is about."""

    agent: str  # name:version@digest
    envelope: bytes  # the JSON as stored
    payload_type: str
    payload: bytes
    keyids: tuple[str, ...]  # as the envelope names them (unsigned: for UNLOGGED only)

    @property
    def payload_hash(self) -> str:
        return _sha256_hex(self.payload)


@dataclass
class StoreEvidence:
    """Every signature, attestation envelope and log record attached to the store's agents.

    Only evidence about the agent it is attached to is kept: a signature over another digest, or a statement
    whose subjects do not include the agent's digest, is listed in `misattached` and accounts for nothing
    (whoever can push to the store can attach anything to any agent)."""

    signatures: list[StoredSignature] = field(default_factory=list)
    envelopes: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # sha256 hex -> (agent, envelope JSON)
    by_payload: dict[str, list[StoredEnvelope]] = field(default_factory=dict)  # payload sha256 hex -> envelopes
    digests: set[str] = field(default_factory=set)  # agents' artifact digests
    record_uuids: set[str] = field(default_factory=set)  # uuids of attached transparency-log records
    misattached: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    url: str = ""


def gather_store(store: ArtifactStore, name: str | None = None) -> StoreEvidence:
    """The evidence of every agent (or every version of agent `name`); unreadable evidence becomes a problem."""
    found = StoreEvidence(url=store.url)
    agents = [a for a in store.list_agents() if name is None or a.name == name]
    for agent in agents:
        found.digests.add(agent.digest)
        ev = collect(store, agent)
        found.problems.extend(ev.problems)
        for where, doc in ev.signatures:
            try:
                s = parse_artifact_signature(doc, where)
            except InputError as exc:
                found.problems.append(str(exc))
                continue
            if s.digest != agent.digest:
                found.misattached.append(f"MISATTACHED: a signature over {s.digest} by key {s.keyid[:16]} is "
                                         f"attached to {agent.ref}, whose digest it is not ({where})")
                continue
            found.signatures.append(StoredSignature(agent.ref, s.digest, s.keyid, s.sig))
        for where, envelope in ev.attestations:
            try:
                env = parse_envelope(envelope, where)
                statement = parse_statement(env.payload, f"{where}: payload")
            except InputError as exc:
                found.problems.append(str(exc))
                continue
            if not statement.is_about(agent.digest):
                subjects = ", ".join(d for _, d in statement.subjects)[:200]
                found.misattached.append(f"MISATTACHED: an attestation about {subjects} is attached to {agent.ref}, "
                                         f"which it is not about ({where})")
                continue
            stored = StoredEnvelope(agent.ref, envelope, env.payload_type, env.payload,
                                    tuple(s.keyid for s in env.signatures))
            found.envelopes[_sha256_hex(envelope)] = (agent.ref, envelope)
            found.by_payload.setdefault(stored.payload_hash, []).append(stored)
        for where, record in ev.tlog:
            try:
                found.record_uuids.add(parse_record(record, where).entry.uuid)
            except InputError as exc:
                found.problems.append(str(exc))
    return found


# -- verifying one entry --------------------------------------------------------------------------------------


@dataclass
class AuditedEntry:
    """One log entry as the audit reports it: what it logs, by whom, and whether it verified."""

    index: int
    uuid: str
    kind: str
    subject: str  # sha256:<hex> artifact digest, or the dsse envelope hash
    key_id: str  # fingerprint (hex sha256 of DER SPKI) of the signer's key
    integrated_time: int
    ok: bool
    reason: str = ""
    signature: bytes = b""  # hashedrekord: the logged signature (to match store signatures)
    payload_hash: str = ""  # dsse: hex SHA-256 of the payload the logged signatures sign (with its type)
    envelope: StoredEnvelope | None = None  # dsse: the store's envelope whose payload the logged signatures sign

    @property
    def time_iso(self) -> str:
        return datetime.fromtimestamp(self.integrated_time, UTC).isoformat().replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        return {"logIndex": self.index, "uuid": self.uuid, "kind": self.kind, "subject": self.subject,
                "keyId": self.key_id, "integratedTime": self.time_iso, "verified": self.ok, "reason": self.reason}


def _signer_pems(body: dict[str, Any]) -> list[bytes]:
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if body.get("kind") == "hashedrekord":
        return [base64.b64decode(spec["signature"]["publicKey"]["content"])]
    return [base64.b64decode(s["verifier"]) for s in spec.get("signatures", [])]


def _signs_payload(body: dict[str, Any], key_pem: bytes, candidates: list[StoredEnvelope]) -> StoredEnvelope | None:
    """The stored envelope whose payload every logged signature verifies over (DSSE PAE), or None.

    This is what "the same attestation" means: the same signed bytes, whatever the envelope's spelling
    (indentation, key order, the unsigned keyid), so a re-encoded copy of a genuine envelope is recognised."""
    key = load_public_key(key_pem, "dsse verifier")
    sigs = [b64decode_strict(s.get("signature"), "dsse signature") for s in body["spec"]["signatures"]]
    for stored in candidates:
        digest = hashlib.sha256(pae(stored.payload_type, stored.payload)).digest()
        if sigs and all(signature_verifies(key, sig, digest) for sig in sigs):
            return stored
    return None


def audit_entry(entry: LogEntry, log_key: ec.EllipticCurvePublicKey,
                store: StoreEvidence | None = None) -> AuditedEntry:
    """Verify `entry` against the pinned log key, and its signature where the signed bytes are known.

    hashedrekord bodies carry the digest, signature and key, so the signature is always checked. dsse bodies
    carry only hashes: the store's attestations with that payload hash are tried, and the logged signatures
    verified over their DSSE PAE; when none is found that is said in the reason, not failed.
    """
    where = f"log entry {entry.log_index}"
    result = AuditedEntry(entry.log_index, entry.uuid, "?", "", "", entry.integrated_time, False)
    try:
        _, body = check_record(entry.to_json(), {note.log_id_of(log_key): log_key}, where)
    except InputError as exc:
        result.reason = str(exc)
        return result
    result.kind = str(body.get("kind"))
    try:
        pems = _signer_pems(body)
        result.key_id = key_fingerprint(pems[0]) if pems else ""
        spec = body["spec"]
        if result.kind == "hashedrekord":
            result.subject = "sha256:" + spec["data"]["hash"]["value"]
            proposed = parse_proposed_entry(body, where)
            result.signature = proposed.signature
            verify_entry_signature(proposed, where)
        elif result.kind == "dsse":
            result.subject = "sha256:" + spec["envelopeHash"]["value"]
            result.payload_hash = str(spec["payloadHash"]["value"])
            if len(pems) != 1 or not pems[0]:
                raise InputError(where, "a dsse entry of this log names exactly one verifier")
            candidates = (store.by_payload.get(result.payload_hash, []) if store is not None else [])
            result.envelope = _signs_payload(body, pems[0], candidates)
            if result.envelope is None:
                result.reason = ("no attestation in the store has this payload with these signatures: the "
                                 "signature cannot be checked (entry verified)")
        else:
            raise InputError(where, f"unknown kind {result.kind!r}")
    except InputError as exc:
        result.reason = str(exc)
        return result
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        result.reason = f"{where}: malformed body ({type(exc).__name__})"
        return result
    result.ok = True
    return result


def audit_uuids(log: TransparencyLog, uuids: Iterable[str], log_key: ec.EllipticCurvePublicKey,
                store: StoreEvidence | None = None) -> list[AuditedEntry]:
    """Fetch each entry afresh (with a fresh inclusion proof) and verify it; sorted by log index."""
    found = {u: audit_entry(log.entry(u), log_key, store) for u in dict.fromkeys(uuids)}
    return sorted(found.values(), key=lambda e: e.index)


def audit_range(log: TransparencyLog, first: int, last: int, log_key: ec.EllipticCurvePublicKey,
                store: StoreEvidence | None = None) -> list[AuditedEntry]:
    """Entries first..last inclusive (clipped to the tree), each verified."""
    size = log.info().tree_size
    return [audit_entry(log.entry_at(i), log_key, store) for i in range(max(first, 0), min(last + 1, size))]


# -- monitor --------------------------------------------------------------------------------------------------


@dataclass
class MonitorResult:
    """What one monitor run found: ok (the state moved forward) or an alarm (the state was kept)."""

    ok: bool
    old_size: int | None
    new_size: int
    message: str
    first_use: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "oldSize": self.old_size, "newSize": self.new_size,
                "added": None if self.old_size is None else self.new_size - self.old_size,
                "firstUse": self.first_use, "message": self.message}


def monitor(log: TransparencyLog, log_key: ec.EllipticCurvePublicKey, state: Path, *,
            init: bool = False) -> MonitorResult:
    """Prove the log's current checkpoint extends the last verified one; record it only when it does.

    A missing state is an alarm (a deleted state must not restart the history unnoticed) unless `init`, which
    trusts the current checkpoint once. `init` never resets an existing state. For the embedded log, the state
    must live outside its folder and the search index rows of the new entries are compared with the leaves.
    """
    folder = getattr(log, "folder", None)
    witness.refuse_inside(state, folder)
    try:
        old = witness.load_state(state, log_key)
    except witness.MissingState as exc:
        if not init:
            return MonitorResult(False, None, log.info().tree_size, f"{ALARM}? {exc}")
        old = None
    except InputError as exc:  # the recorded checkpoint was signed by another key: a swapped log (or key)
        return MonitorResult(False, None, log.info().tree_size,
                             f"{ALARM}: the last verified checkpoint does not verify with the pinned log key "
                             f"(the log's key was replaced?): {exc}")
    info = log.info()
    old_size = None if old is None else old.size
    try:
        new = note.verify(info.signed_tree_head, log_key, None, "current checkpoint")
    except InputError as exc:
        return MonitorResult(False, old_size, info.tree_size, f"{ALARM}: {exc}")
    if new.size != info.tree_size or new.root_hash.hex() != info.root_hash:
        return MonitorResult(False, old_size, new.size, f"{ALARM}: the log reports size {info.tree_size} and root "
                                                        f"{info.root_hash[:16]}… but its checkpoint says otherwise")
    if old is not None:
        if old.checkpoint.origin != new.origin and not note.is_origin_upgrade(old.checkpoint.origin, new.origin,
                                                                              note.log_id_of(log_key)):
            return MonitorResult(False, old.size, new.size,
                                 f"{ALARM}: the origin changed from {old.checkpoint.origin!r} to {new.origin!r}")
        if new.size < old.size:
            return MonitorResult(False, old.size, new.size,
                                 f"{ALARM}: the tree shrank from {old.size} to {new.size} entries")
        if new.size == old.size and new.root_hash != old.root_hash:
            roots = f"{old.root_hash.hex()[:16]}… then {new.root_hash.hex()[:16]}…"
            return MonitorResult(False, old.size, new.size, f"{ALARM}: two different roots for size {new.size} "
                                                            f"({roots})")
        if 0 < old.size < new.size:
            try:
                proof = [bytes.fromhex(h) for h in log.consistency(old.size, new.size)]
                merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
            except (merkle.ProofError, ValueError, AgentFactoryError) as exc:
                return MonitorResult(False, old.size, new.size, f"{ALARM}: {exc}")
    check_range = getattr(log, "check_index_range", None)
    if check_range is not None:
        problems = check_range(old.size if old is not None else 0, new.size)
        if problems:
            return MonitorResult(False, old_size, new.size, "ALARM: the log's search index hides entries: "
                                 + "; ".join(problems[:5]))
    try:
        proven = _proven_roots(log, old.size if old is not None else 0, new)
    except (merkle.ProofError, ValueError, AgentFactoryError) as exc:
        return MonitorResult(False, old_size, new.size, f"{ALARM}: {exc}")
    witness.save_state(state, log.url, log_key, info.signed_tree_head, old, proven)
    if old is None:
        return MonitorResult(True, None, new.size, f"--init: trusting the current checkpoint (size {new.size}, "
                                                   f"root {new.root_hash.hex()[:16]}…) from now on; state in {state}",
                             first_use=True)
    return MonitorResult(True, old.size, new.size, f"consistent: size {old.size} → {new.size} "
                                                   f"({new.size - old.size} entries added)")


MAX_NEW_SIZES = 10_000  # intermediate roots one monitor run proves (the newest ones)


def _proven_roots(log: TransparencyLog, old_size: int, new: note.Checkpoint) -> dict[int, bytes]:
    """The root of every size between `old_size` and `new` (the newest MAX_NEW_SIZES), each proven consistent
    with the verified checkpoint `new`, so the witness can judge a record of any of these sizes offline.

    Only for a log that answers roots cheaply (the embedded one: `root_at`); a root that does not prove
    consistent is a rewritten history (ProofError)."""
    root_at = getattr(log, "root_at", None)
    if root_at is None:
        return {}
    proven: dict[int, bytes] = {}
    for size in range(max(old_size + 1, new.size - MAX_NEW_SIZES, 1), new.size):
        claimed = root_at(size)
        proof = [bytes.fromhex(h) for h in log.consistency(size, new.size)]
        merkle.verify_consistency(size, new.size, claimed, new.root_hash, proof)
        proven[size] = claimed
    return proven


# -- keys -----------------------------------------------------------------------------------------------------


@dataclass
class KeysReport:
    """Log entries by our keys the pipeline cannot account for, store signatures the log lacks, evidence
    attached to the wrong agent, and anything that stopped the audit from seeing the whole log."""

    entries: list[AuditedEntry] = field(default_factory=list)
    unaccounted: list[str] = field(default_factory=list)
    unlogged: list[str] = field(default_factory=list)
    misattached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # recorded for another store: audit that one too
    interrupted: list[str] = field(default_factory=list)  # recorded for this store, logged, never published

    @property
    def ok(self) -> bool:
        """The recorded signatures the store lacks (`elsewhere`, `interrupted`) are the pipeline's own: no alarm."""
        return not (self.unaccounted or self.unlogged or self.misattached or self.failed or self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": [e.to_json() for e in self.entries], "unaccounted": self.unaccounted,
                "unlogged": self.unlogged, "misattached": self.misattached, "failed": self.failed,
                "problems": self.problems, "signedElsewhere": self.elsewhere, "interrupted": self.interrupted,
                "notes": self.notes}


def _signer_fingerprints(body: bytes) -> set[str]:
    try:
        return {key_fingerprint(pem) for pem in _signer_pems(json.loads(body))}
    except (ValueError, KeyError, TypeError, AttributeError, InputError):
        return set()


def uuids_by_keys(log: TransparencyLog, pems: list[bytes], problems: list[str], notes: list[str], *,
                  scan: bool = True) -> list[str]:
    """The UUIDs of every entry signed by one of `pems`: the index's answer, checked against the entries.

    The search index is derived data (an edited `tree.db`, or a remote log's index documented as possibly
    incomplete), so it is never trusted alone: the embedded log's leaves are read directly, a remote log's
    entries one by one (unless `scan` is False, which `notes` says). An entry the index did not return is
    added to `problems`, and to the answer."""
    indexed: set[str] = set()
    for pem in pems:
        indexed |= set(log.search(public_key_pem=pem))
    fingerprints = {key_fingerprint(pem) for pem in pems}
    scanned: dict[int, str] | None = None
    if isinstance(log, EmbeddedLog):
        scanned = log.indices_signed_by(fingerprints)
    elif scan:
        scanned = {}
        for i in range(log.info().tree_size):
            entry = log.entry_at(i)
            if _signer_fingerprints(entry.body) & fingerprints:
                scanned[i] = entry.uuid
    else:
        notes.append("the log's search index was trusted alone (--index-only): entries it omits are not seen")
    for idx, uuid in sorted((scanned or {}).items()):
        if uuid not in indexed:
            problems.append(f"INDEX: log entry {idx}, signed by the key searched for, is missing from the log's "
                            "search index (the index was modified, or is incomplete): audited from the log itself")
            indexed.add(uuid)
    return sorted(indexed)


def _account_recorded(report: KeysReport, recorded: list[Signed], store_url: str, key: str, what: str) -> None:
    """A logged signature the pipeline recorded that the audited store does not hold: signed for another
    store (the pipeline signs for every store it publishes to, and one audit reads one store), or signed for
    this one and never published (a run interrupted, or refused by the artifact policy, after logging)."""
    here = [r for r in recorded if r.store == store_url]
    if not here:
        r = recorded[0]
        if not r.store:  # `vex sign`: a document, signed for whoever scans with it
            report.elsewhere.append(f"SIGNED FOR NO STORE: a signature by our key {key} over the VEX document "
                                    f"{r.agent} (signing record line {r.line}): {what}")
            return
        report.elsewhere.append(f"SIGNED FOR {r.store}: a signature by our key {key} for {r.agent}:{r.version} "
                                f"(signing record line {r.line}; audit that store with --store {r.store}): {what}")
        return
    r = here[0]
    report.interrupted.append(f"INTERRUPTED: a signature by our key {key} for {r.agent}:{r.version}, signed and "
                              f"logged at {r.at or 'an unrecorded time'} (signing record line {r.line}), never "
                              f"published to this store: a pipeline run stopped or refused after logging, not a "
                              f"stolen key: {what}")


def audit_keys(log: TransparencyLog, log_key: ec.EllipticCurvePublicKey, keys: list[PublicKey],
               store: ArtifactStore, record: SigningRecord | None, *, record_problem: str = "",
               scan: bool = True) -> KeysReport:
    """Account for every log entry by one of `keys` (what was signed, for which subject, by the pipeline's own
    record), and find every store signature the log lacks.

    A log entry is accounted for when the pipeline's signing record holds that signature (same key, same
    signed digest or DSSE payload); usually the store holds it too, attached to the agent it is about. A
    recorded signature the store lacks is reported, not alarmed: `elsewhere` when the record says it was for
    another store, `interrupted` when it was for this one (signed and logged, never published). A logged
    signature with no record line is always UNACCOUNTED. `record` None (with `record_problem` saying why) is a
    problem; the store alone is then the evidence."""
    report = KeysReport()
    found = gather_store(store)
    report.problems.extend(found.problems)
    report.misattached.extend(found.misattached)
    if record is None:
        report.problems.append(record_problem or "no signing record: the pipeline's own word is missing")
    else:
        report.problems.extend(record.problems)
    ours = {k.key_id: k for k in keys}
    logged_sigs: set[tuple[str, str]] = set()  # (digest, key id)
    logged_payloads: set[tuple[str, str]] = set()  # (payload hash, key id)
    uuids = uuids_by_keys(log, [k.pem for k in keys], report.problems, report.notes, scan=scan)
    for e in audit_uuids(log, uuids, log_key, found):
        report.entries.append(e)
        if not e.ok:
            report.failed.append(f"log entry {e.index} ({e.uuid[:12]}): {e.reason}")
            continue
        what = f"log entry {e.index} ({e.kind} {e.subject}, uuid {e.uuid[:16]}…, {e.time_iso})"
        if e.kind == "hashedrekord":
            logged_sigs.add((e.subject, e.key_id))
            in_store = any(s.digest == e.subject and s.keyid == e.key_id for s in found.signatures)
            recorded = record.signature(e.key_id, e.subject) if record is not None else None
            about = f"a signature over {e.subject}"
        else:
            if e.envelope is not None:
                logged_payloads.add((e.payload_hash, e.key_id))
            in_store = e.envelope is not None
            recorded = record.attestation(e.key_id, e.payload_hash) if record is not None else None
            if recorded and e.envelope is not None:  # the record names what was signed: the PAE digest
                signed = "sha256:" + _sha256_hex(pae(e.envelope.payload_type, e.envelope.payload))
                recorded = [r for r in recorded if r.signed == signed]
            about = f"an attestation (payload sha256:{e.payload_hash[:16]}…)"
        key = e.key_id[:16]
        if recorded is not None and not recorded:
            report.unaccounted.append(f"UNACCOUNTED: a signature by our key {key} that the pipeline has no record "
                                      f"of (a stolen key at work?): {what}")
        elif in_store:
            continue
        elif recorded is None:
            report.unaccounted.append(f"UNACCOUNTED: a signature by our key {key} with no counterpart in the store "
                                      f"({about}, attached to the agent it is about) (a stolen key at work?): "
                                      f"{what}")
        else:
            _account_recorded(report, recorded, found.url, key, what)
    for s in found.signatures:
        if s.keyid in ours and (s.digest, s.keyid) not in logged_sigs:
            report.unlogged.append(f"UNLOGGED: the signature of {s.agent} by key {s.keyid[:16]} is not in the log")
    for payload_hash, stored_list in sorted(found.by_payload.items()):
        for stored in stored_list:
            mine = [k for k in stored.keyids if k in ours]
            if mine and not any((payload_hash, k) in logged_payloads for k in mine):
                report.unlogged.append(f"UNLOGGED: an attestation of {stored.agent} (payload sha256:"
                                       f"{payload_hash[:16]}…) is not in the log")
    return report


def key_id_of_pem(pem: bytes) -> str:
    """The key id our providers use (hex sha256 of DER SPKI), for a PEM given on the command line."""
    return key_fingerprint(canonical_pem(load_public_key(pem, "--key-file")))


__all__ = ["ALARM", "AuditedEntry", "KeysReport", "MonitorResult", "StoreEvidence", "StoredEnvelope", "audit_entry",
           "audit_keys", "audit_range", "audit_uuids", "gather_store", "key_id_of_pem", "monitor",
           "uuids_by_keys"]
