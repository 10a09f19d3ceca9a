"""Scan attestations the transparency log knows of: a removed referrer cannot hide a logged re-scan.

The verifier takes the newest scan attestation *present in the store*; whoever can write the store
can delete a newer, failing re-scan and fall back to an older clean one. Every trusted attestation is
logged, so the log is asked too: which attestations about this digest, verified by the log with a
trusted key, are logged after the chosen scan and missing from the store?

What a Rekor dsse v0.0.1 entry stores (and so what the log can tell): the SHA-256 of the envelope and
of its payload, and each signature with the public key it verified with (`tlog/entries.py`
`dsse_body`); never the payload. The log finds entries by the payload's in-toto subject digests (the
embedded log indexes them, as Rekor's dsse type does), so it can say "a trusted key attested something
about this digest at log index N", but not that it was a scan: its predicate type is inside the
payload the log does not keep. Hence the rule, fail closed: an attestation about this digest logged
after the chosen scan, by a trusted key, whose envelope is not in the store, may be the newer scan
that was removed, and the artifact is refused until the store holds it again (re-attach the referrer,
or re-scan with `agentfactory scan AGENT --attest`). Attestations whose envelope the store does hold
are accounted for: the verifier has judged them already.

Every entry used is checked offline against the pinned log key (signed entry timestamp, inclusion
proof, signed checkpoint) before it counts, so a log cannot invent one; a log can only omit entries,
which is what monitors and the log's own consistency proofs are for.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from ..dsse import parse_envelope
from ..errors import AgentFactoryError, InputError
from ..intoto import Statement, parse_statement
from ..tlog.base import TransparencyLog
from ..tlog.bundle import check_record
from ..tlog.entries import canonical, dsse_body, entry_uuid
from ..trust import TrustedKey, TrustPolicy
from .attestation import finished_on

# A bound on the entries fetched for one digest: a year of daily re-scans is a few hundred. Above
# it the answer is incomplete, so the look-up fails closed rather than judge part of the log.
MAX_LOGGED_ENTRIES = 2000


@dataclass(frozen=True)
class LoggedAttestation:
    """A dsse entry about the digest, genuine in a trusted log, verified by the log with a trusted key."""

    log_url: str
    log_index: int
    integrated_time: int  # seconds since the epoch, when the log took it
    envelope_sha256: str  # hex
    key_id: str  # the trusted key the log verified the envelope with
    payload_sha256: str = ""  # hex, of the signed statement: what says which attestation an entry is
    log_id: str = ""


@dataclass(frozen=True)
class LoggedScanCheck:
    """The outcome: `missing` is the newest logged attestation newer than the chosen scan that the store
    lacks (None: the store holds everything the log knows of); `problem` says why the log could not be
    asked (None: it answered)."""

    missing: LoggedAttestation | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.missing is None and self.problem is None

    def reason(self) -> str:
        """What the verifier's check says when not ok."""
        if self.problem is not None:
            return f"the transparency log could not be asked for newer scan attestations: {self.problem}"
        m = self.missing
        assert m is not None
        return (f"a newer scan (log index {m.log_index} in {m.log_url}, logged {_iso(m.integrated_time)} by key "
                f"{m.key_id[:16]}…) is missing from the store: an attestation about this digest was logged after "
                "the chosen scan and its envelope is not among the agent's referrers; restore the removed "
                "referrer, or re-scan with `agentfactory scan AGENT --attest`")


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _trusted_verifier(body: dict[str, Any], policy: TrustPolicy,
                      keys: Mapping[str, TrustedKey] | None = None) -> str | None:
    """The id of the trusted, non-revoked key every signature of a dsse body verified with; else None."""
    spec = body.get("spec")
    sigs = spec.get("signatures") if isinstance(spec, dict) else None
    if not isinstance(sigs, list) or not sigs:
        return None
    trusted = _trusted_pems(policy, keys)
    ids = set()
    for sig in sigs:
        verifier = sig.get("verifier") if isinstance(sig, dict) else None
        try:
            pem = base64.b64decode(verifier, validate=True) if isinstance(verifier, str) else b""
        except ValueError:
            return None
        if pem not in trusted:
            return None
        ids.add(trusted[pem])
    return ids.pop() if len(ids) == 1 else None


def _envelope_hash(body: dict[str, Any], field: str = "envelopeHash") -> str | None:
    spec = body.get("spec")
    h = spec.get(field) if isinstance(spec, dict) else None
    if not isinstance(h, dict) or h.get("algorithm") != "sha256" or not isinstance(h.get("value"), str):
        return None
    return str(h["value"])


def _trusted_pems(policy: TrustPolicy, keys: Mapping[str, TrustedKey] | None = None) -> dict[bytes, str]:
    """PEM -> key id of the keys that count (default: the policy's build keys), revoked ones left out."""
    return {k.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo):
            k.key_id for k in (policy.keys if keys is None else keys).values() if not k.revoked}


def payload_sha256(envelope: bytes) -> str | None:
    """The hex SHA-256 of the statement an envelope signs (Rekor's dsse `payloadHash`); None for no envelope.

    An attestation is its signed statement, not its envelope's bytes: anyone can re-encode a genuine envelope
    (list its signature twice, reorder keys) and log the copy, which then has a new envelope hash, a new entry
    and a later place in the log. So an attestation is identified by its payload, and placed at the earliest
    entry of that payload."""
    try:
        return hashlib.sha256(parse_envelope(envelope, "envelope").payload).hexdigest()
    except InputError:
        return None


def entry_uuids_of(envelopes: Iterable[bytes], policy: TrustPolicy,
                   keys: Mapping[str, TrustedKey] | None = None) -> set[str]:
    """The UUIDs the log gives these envelopes if a trusted key logged them: Rekor's dsse body is
    derived from the envelope bytes and the verifying key alone, so no look-up is needed for them."""
    out: set[str] = set()
    for doc in envelopes:
        for pem in _trusted_pems(policy, keys):
            try:
                out.add(entry_uuid(canonical(dsse_body(doc, pem))))
            except (InputError, ValueError):
                break  # not an envelope: no key makes it one
    return out


def logged_attestations(log: TransparencyLog, digest: str, policy: TrustPolicy, *,
                        skip: Set[str] = frozenset(),
                        keys: Mapping[str, TrustedKey] | None = None) -> list[LoggedAttestation]:
    """Every dsse entry the log indexes under `digest` that is a genuine entry of a log `policy` trusts
    and that the log verified with one of the trusted, non-revoked `keys` (default: the policy's build
    keys; the promoters for promotions), in log order.

    Entries whose UUID is in `skip` are not fetched (the caller knows them: envelopes the store holds,
    see `entry_uuids_of`), so the cost grows with what the store lacks, not with the agent's history.
    Raises AgentFactoryError (LogError, InputError) when the log cannot answer, or answers with an entry
    that does not check out against its pinned key: a caller must then fail closed.
    """
    url = getattr(log, "url", "") or "the transparency log"
    # Asked per trusted key (the hash AND the key): anyone can log entries about any digest with a key of their
    # own, and counted before that filter, 2,001 of them made every verification of the digest fail closed (and
    # below the cap cost one fetch each). Only what a trusted key logged is fetched and counted.
    uuids = list(dict.fromkeys(u for pem in _trusted_pems(policy, keys)
                               for u in log.search(sha256=digest, public_key_pem=pem) if u not in skip))
    if len(uuids) > MAX_LOGGED_ENTRIES:
        raise InputError(url, f"{len(uuids)} entries by trusted keys are logged about {digest} that the store does "
                              f"not hold; at most {MAX_LOGGED_ENTRIES} are checked, so the answer would be incomplete")
    out: list[LoggedAttestation] = []
    for uuid in uuids:
        entry = log.entry(uuid)
        where = f"{url}: entry {uuid[:16]}…"
        checked, body = check_record(entry.to_json(), policy.logs, where)  # SET, inclusion proof, checkpoint
        if body.get("kind") != "dsse":
            continue  # the signature over the digest (hashedrekord): not an attestation
        key_id = _trusted_verifier(body, policy, keys)
        envelope, payload = _envelope_hash(body), _envelope_hash(body, "payloadHash")
        if key_id is None or envelope is None or payload is None:
            continue  # signed by someone the policy does not trust: it says nothing about this artifact
        out.append(LoggedAttestation(url, checked.log_index, checked.integrated_time, envelope, key_id, payload,
                                     checked.log_id))
    return sorted(out, key=lambda a: (a.integrated_time, a.log_index))


def _seconds(rfc3339: str) -> float | None:
    try:
        return datetime.fromisoformat(rfc3339.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
    except ValueError:
        return None


def missing_newer_scan(logged: Sequence[LoggedAttestation], store_payloads: Set[str],
                       chosen_payload: str | None, chosen_finished: str | None) -> LoggedAttestation | None:
    """The newest logged attestation newer than the chosen scan whose statement the store does not hold.

    Attestations are their statements (`payload_sha256`): `store_payloads` are those the store holds,
    `chosen_payload` the chosen scan's (None when no scan was chosen: then every logged one is newer), and
    `chosen_finished` its scanFinishedOn. Newer: logged after the *first* entry of the chosen statement
    when this log holds it (a re-encoded copy logged later moves nothing), else logged after the chosen
    scan's finish time (a keyless scan, logged elsewhere).
    """
    own = [a for a in logged if chosen_payload is not None and a.payload_sha256 == chosen_payload]
    finished = _seconds(chosen_finished) if chosen_finished is not None else None

    def newer(a: LoggedAttestation) -> bool:
        if chosen_finished is None:
            return True
        mine = [o for o in own if o.log_url == a.log_url]
        if mine:
            return a.log_index > min(o.log_index for o in mine)
        return finished is None or a.integrated_time > finished  # an unreadable time cannot vouch: fail closed

    candidates = [a for a in logged if a.payload_sha256 not in store_payloads and a.payload_sha256 != chosen_payload
                  and newer(a)]
    return max(candidates, key=lambda a: (a.integrated_time, a.log_index)) if candidates else None


def envelopes_of(store_envelopes: Iterable[bytes], statement: Statement) -> list[bytes]:
    """Every stored envelope whose statement is `statement` (what the verifier chose): copies included."""
    out = []
    for doc in store_envelopes:
        try:
            if parse_statement(parse_envelope(doc, "envelope").payload, "statement") == statement:
                out.append(doc)
        except InputError:
            continue
    return out


def check_logged_scans(logs: Sequence[TransparencyLog], digest: str, policy: TrustPolicy,
                       store_envelopes: Sequence[bytes], chosen: Statement | None) -> LoggedScanCheck:
    """Ask every log for attestations about `digest` and judge them against the store (see the module).

    `store_envelopes`: the bytes of every attestation envelope attached to the agent (any type, valid
    or not: `[doc for _, doc in evidence.attestations]`); `chosen`: the scan statement the verifier
    chose (None when none holds). Never raises: a log that cannot answer is a problem, which denies.
    """
    chosen_envelopes = envelopes_of(store_envelopes, chosen) if chosen is not None else []
    try:
        mine = entry_uuids_of(chosen_envelopes, policy)
        skip = entry_uuids_of(store_envelopes, policy) - mine  # the chosen scan's entries are fetched: its place
    except (ValueError, TypeError) as exc:
        return LoggedScanCheck(None, f"{type(exc).__name__}: {exc}")
    found: list[LoggedAttestation] = []
    for log in logs:
        try:
            found.extend(logged_attestations(log, digest, policy, skip=skip))
        except AgentFactoryError as exc:
            return LoggedScanCheck(None, str(exc))
        except (ValueError, TypeError) as exc:  # fail closed on the unforeseen
            return LoggedScanCheck(None, f"{type(exc).__name__}: {exc}")
    held = {h for h in map(payload_sha256, store_envelopes) if h is not None}
    if chosen is None:
        return LoggedScanCheck(missing_newer_scan(found, held, None, None))
    chosen_payload = payload_sha256(chosen_envelopes[0]) if chosen_envelopes else None
    return LoggedScanCheck(missing_newer_scan(found, held, chosen_payload, finished_on(chosen.predicate)))


__all__ = ["MAX_LOGGED_ENTRIES", "LoggedAttestation", "LoggedScanCheck", "check_logged_scans", "entry_uuids_of",
           "envelopes_of", "logged_attestations", "missing_newer_scan", "payload_sha256"]
