"""What an auditor asks the transparency log, and how every answer is checked before it is believed.

Three questions, each answered only from data verified against the log's pinned public key:

* search: the entries about an artifact, by a signer, of an agent or in an index range, each re-verified
  (SET, checkpoint signature, inclusion proof, and the signature itself where the bytes are at hand);
* monitor: does the current signed checkpoint extend the last one we verified? A failed consistency
  proof, a different root at the same size or a smaller tree means the log forked or rewrote history;
* keys: is every signature by our keys in the log one the pipeline made (an artifact signature or an
  attestation the store holds), and is every signature the store holds in the log? A logged signature
  with no counterpart is the trace a stolen key leaves.

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

from ..errors import AgentFactoryError, InputError
from ..evidence import collect, parse_artifact_signature, proposed_for_envelope
from ..fsutil import atomic_write
from ..jsonsafe import load_json_object
from ..keys.base import PublicKey
from ..store import ArtifactStore
from . import merkle, note
from .base import TransparencyLog
from .bundle import check_record, dsse_check, parse_record
from .entries import LogEntry, canonical_pem, load_public_key, parse_proposed_entry, verify_entry_signature
from .log import key_fingerprint

MAX_STATE_BYTES = 256 * 1024
ALARM = "ALARM: the log forked or rewrote its history"


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what the store says the pipeline signed ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSignature:
    """An artifact signature the store holds, with the agent it is attached to."""

    agent: str  # name:version@digest
    digest: str  # sha256:<hex>
    keyid: str
    sig: bytes


@dataclass
class StoreEvidence:
    """Every signature, attestation envelope and log record attached to the store's agents."""

    signatures: list[StoredSignature] = field(default_factory=list)
    envelopes: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # sha256 hex -> (agent, envelope JSON)
    digests: set[str] = field(default_factory=set)  # agents' artifact digests
    record_uuids: set[str] = field(default_factory=set)  # uuids of attached transparency-log records
    problems: list[str] = field(default_factory=list)


def gather_store(store: ArtifactStore, name: str | None = None) -> StoreEvidence:
    """The evidence of every agent (or every version of agent `name`); unreadable evidence becomes a problem."""
    found = StoreEvidence()
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
            found.signatures.append(StoredSignature(agent.ref, s.digest, s.keyid, s.sig))
        for _, envelope in ev.attestations:
            found.envelopes[_sha256_hex(envelope)] = (agent.ref, envelope)
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


def audit_entry(entry: LogEntry, log_key: ec.EllipticCurvePublicKey,
                envelopes: dict[str, tuple[str, bytes]] | None = None) -> AuditedEntry:
    """Verify `entry` against the pinned log key, and its signature where the signed bytes are known.

    hashedrekord bodies carry the digest, signature and key, so the signature is always checked. dsse bodies
    carry only hashes: the envelope is looked up in `envelopes` (the store's) by envelopeHash and, when found,
    its signatures are verified over DSSE PAE; when not found that is said in the reason, not failed.
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
            stored = (envelopes or {}).get(spec["envelopeHash"]["value"])
            if stored is None:
                result.reason = "envelope not in the store: its signature cannot be checked (entry verified)"
            else:
                problem = dsse_check(stored[1], pems[0])(body)
                if problem is not None:
                    raise InputError(where, problem)
                verify_entry_signature(parse_proposed_entry(proposed_for_envelope(stored[1], pems[0]), where), where)
        else:
            raise InputError(where, f"unknown kind {result.kind!r}")
    except InputError as exc:
        result.reason = str(exc)
        return result
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        result.reason = f"{where}: malformed body ({type(exc).__name__})"
        return result
    result.ok = True
    return result


def audit_uuids(log: TransparencyLog, uuids: Iterable[str], log_key: ec.EllipticCurvePublicKey,
                envelopes: dict[str, tuple[str, bytes]] | None = None) -> list[AuditedEntry]:
    """Fetch each entry afresh (with a fresh inclusion proof) and verify it; sorted by log index."""
    found = {u: audit_entry(log.entry(u), log_key, envelopes) for u in dict.fromkeys(uuids)}
    return sorted(found.values(), key=lambda e: e.index)


def audit_range(log: TransparencyLog, first: int, last: int, log_key: ec.EllipticCurvePublicKey,
                envelopes: dict[str, tuple[str, bytes]] | None = None) -> list[AuditedEntry]:
    """Entries first..last inclusive (clipped to the tree), each verified."""
    size = log.info().tree_size
    return [audit_entry(log.entry_at(i), log_key, envelopes) for i in range(max(first, 0), min(last + 1, size))]


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


def _load_state(path: Path, log_key: ec.EllipticCurvePublicKey) -> note.Checkpoint | None:
    """The last verified checkpoint; its signature is checked again, since the file is only a file."""
    if not path.is_file():
        return None
    doc = load_json_object(path.read_bytes(), str(path), max_bytes=MAX_STATE_BYTES, what="monitor state")
    text = doc.get("checkpoint")
    if not isinstance(text, str):
        raise InputError(str(path), "the monitor state has no checkpoint")
    return note.verify(text, log_key, None, f"{path}: checkpoint")


def monitor(log: TransparencyLog, log_key: ec.EllipticCurvePublicKey, state: Path) -> MonitorResult:
    """Prove the log's current checkpoint extends the last verified one; record it only when it does."""
    try:
        old = _load_state(state, log_key)
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
        if old.origin != new.origin:
            return MonitorResult(False, old.size, new.size,
                                 f"{ALARM}: the origin changed from {old.origin!r} to {new.origin!r}")
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
    atomic_write(state, json.dumps({"log": log.url, "logID": note.log_id_of(log_key), "size": new.size,
                                    "rootHash": new.root_hash.hex(), "checkpoint": info.signed_tree_head,
                                    "verifiedAt": datetime.now(UTC).isoformat()}, indent=2).encode() + b"\n")
    if old is None:
        return MonitorResult(True, None, new.size, f"first run: trusting the current checkpoint (size {new.size}, "
                                                   f"root {new.root_hash.hex()[:16]}…) on first use", first_use=True)
    return MonitorResult(True, old.size, new.size, f"consistent: size {old.size} → {new.size} "
                                                   f"({new.size - old.size} entries added)")


# -- keys -----------------------------------------------------------------------------------------------------


@dataclass
class KeysReport:
    """Log entries by our keys the store cannot account for, and store signatures the log lacks."""

    entries: list[AuditedEntry] = field(default_factory=list)
    unaccounted: list[str] = field(default_factory=list)
    unlogged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unaccounted or self.unlogged or self.failed or self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": [e.to_json() for e in self.entries], "unaccounted": self.unaccounted,
                "unlogged": self.unlogged, "failed": self.failed, "problems": self.problems}


def audit_keys(log: TransparencyLog, log_key: ec.EllipticCurvePublicKey, keys: list[PublicKey],
               store: ArtifactStore) -> KeysReport:
    """Match every log entry by one of `keys` with the store's evidence, and every store signature with the log."""
    report = KeysReport()
    found = gather_store(store)
    report.problems.extend(found.problems)
    ours = {k.key_id: k for k in keys}
    logged_sigs: set[tuple[str, str, bytes]] = set()  # (digest, key id, signature)
    logged_envelopes: set[str] = set()
    for key in keys:
        fingerprint = key_fingerprint(key.pem)
        for e in audit_uuids(log, log.search(public_key_pem=key.pem), log_key, found.envelopes):
            report.entries.append(e)
            if not e.ok:
                report.failed.append(f"log entry {e.index} ({e.uuid[:12]}): {e.reason}")
                continue
            if e.kind == "hashedrekord":
                logged_sigs.add((e.subject, e.key_id, e.signature))
                accounted = any(s.digest == e.subject and s.keyid == fingerprint and s.sig == e.signature
                                for s in found.signatures)
            else:
                logged_envelopes.add(e.subject.removeprefix("sha256:"))
                accounted = e.subject.removeprefix("sha256:") in found.envelopes
            if not accounted:
                report.unaccounted.append(
                    f"UNACCOUNTED: a signature by our key {key.key_id[:16]} that the pipeline has no record of "
                    f"(a stolen key at work?): log entry {e.index} ({e.kind} {e.subject}, uuid {e.uuid[:16]}…, "
                    f"{e.time_iso})")
    for s in found.signatures:
        if s.keyid in ours and (s.digest, s.keyid, s.sig) not in logged_sigs:
            report.unlogged.append(f"UNLOGGED: the signature of {s.agent} by key {s.keyid[:16]} is not in the log")
    for envelope_hash, (agent, envelope) in sorted(found.envelopes.items()):
        if envelope_hash not in logged_envelopes and _signed_by(envelope, ours):
            report.unlogged.append(f"UNLOGGED: an attestation of {agent} (envelope sha256:{envelope_hash[:16]}…) "
                                   "is not in the log")
    return report


def _signed_by(envelope: bytes, ours: dict[str, PublicKey]) -> bool:
    try:
        doc = json.loads(envelope)
        return any(isinstance(s, dict) and s.get("keyid") in ours for s in doc.get("signatures", []))
    except (ValueError, AttributeError):
        return False


def key_id_of_pem(pem: bytes) -> str:
    """The key id our providers use (hex sha256 of DER SPKI), for a PEM given on the command line."""
    return key_fingerprint(canonical_pem(load_public_key(pem, "--key-file")))


__all__ = ["ALARM", "AuditedEntry", "KeysReport", "MonitorResult", "StoreEvidence", "audit_entry", "audit_keys",
           "audit_range", "audit_uuids", "gather_store", "key_id_of_pem", "monitor"]
