"""The pipeline's own record of what it signed: when, with which key, about which artifact, for which store.

Why: `audit keys` must tell a signature the pipeline made from one a thief made with a stolen key. The store
alone cannot say: whoever can push to it can attach a stolen-key signature to any agent. This record is
evidence kept where the pipeline runs (not in the store, not in the log): one JSON line per signature,
written right after signing and before anything is logged or published, so every log entry the pipeline
causes has its line. The audit accounts a log entry by what was signed (the artifact digest for a
hashedrekord, the DSSE payload and its PAE for an attestation), never by the bytes of an envelope.

Lines are hash-chained (`prev` is the SHA-256 of the previous line), so an edited or deleted line breaks the
chain and the audit says where; appending is not prevented (whoever holds the pipeline's state folder and a
key can forge anything): keep the file on the pipeline's host, backed up, apart from the signing keys.

Every command that signs with the build keys writes it: `pipeline run` (for each store it publishes to),
`scan --attest` (a re-scan attestation) and `vex sign` (store `""`: a VEX document is for no store). `audit
keys` reads the store of each line to tell a signature made for another store, or one signed and logged by a
run that never published, from a stolen key's (which has no line at all).

Format (`agentfactory.signing-record/v1`), one object per line:
``{"v": 1, "at": ISO time, "store": URL, "agent": name, "version": v, "digest": "sha256:…",
"kind": "hashedrekord" | "dsse", "keyId": hex, "signed": "sha256:…" (the digest signed: the artifact digest,
or SHA-256 of the DSSE PAE), "payloadHash": hex (dsse), "predicateType": str (dsse), "prev": hex}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import home
from ..dsse import Envelope, pae
from ..errors import InputError, StoreError
from ..fsutil import file_lock
from ..intoto import parse_statement

RECORD_ENV = "AGENTFACTORY_SIGNING_RECORD"
VERSION = 1
MAX_LINE_BYTES = 64 * 1024
GENESIS = "0" * 64


def default_record_path() -> Path:
    """`$AGENTFACTORY_SIGNING_RECORD`, else `$AGENTFACTORY_HOME/signing-record.jsonl`."""
    configured = os.environ.get(RECORD_ENV)
    return Path(configured) if configured else home() / "signing-record.jsonl"


@dataclass(frozen=True)
class Signed:
    """One line: one signature the pipeline made."""

    line: int
    store: str
    agent: str
    version: str
    digest: str  # the artifact the signature is about
    kind: str  # hashedrekord | dsse
    key_id: str
    signed: str  # sha256:<hex> of what the key signed
    payload_hash: str = ""  # dsse: hex SHA-256 of the payload
    at: str = ""


@dataclass
class SigningRecord:
    """Every line of a record file, indexed by what was signed; unreadable or unchained lines are problems."""

    path: Path
    lines: list[Signed] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def signature(self, key_id: str, digest: str) -> list[Signed]:
        """Lines recording a signature by `key_id` over the artifact digest `digest` (sha256:<hex>)."""
        return [s for s in self.lines if s.kind == "hashedrekord" and s.key_id == key_id and s.signed == digest]

    def attestation(self, key_id: str, payload_hash: str) -> list[Signed]:
        """Lines recording a DSSE signature by `key_id` over a payload of SHA-256 `payload_hash` (hex)."""
        return [s for s in self.lines if s.kind == "dsse" and s.key_id == key_id and s.payload_hash == payload_hash]


def _line_hash(raw: bytes) -> str:
    return hashlib.sha256(raw.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The last complete line of `path` (read from the end: the file only grows)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            start = max(0, end - 2 * MAX_LINE_BYTES)
            f.seek(start)
            tail = f.read()
    except FileNotFoundError:
        return None
    lines = [line for line in tail.split(b"\n") if line.strip()]
    return lines[-1] if lines else None


def _lines_for(store_url: str, name: str, version: str, digest: str, signature_key_id: str | None,
               attestations: Sequence[Envelope]) -> Iterator[dict[str, Any]]:
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    common = {"v": VERSION, "at": at, "store": store_url, "agent": name, "version": version, "digest": digest}
    if signature_key_id is not None:
        yield {**common, "kind": "hashedrekord", "keyId": signature_key_id, "signed": digest}
    for env in attestations:
        try:
            predicate_type = parse_statement(env.payload, "attestation").predicate_type
        except InputError:
            predicate_type = ""
        signed = "sha256:" + hashlib.sha256(pae(env.payload_type, env.payload)).hexdigest()
        for s in env.signatures:
            yield {**common, "kind": "dsse", "keyId": s.keyid, "signed": signed,
                   "payloadHash": hashlib.sha256(env.payload).hexdigest(), "predicateType": predicate_type}


def record_signing(store_url: str, name: str, version: str, digest: str, signature_key_id: str | None,
                   attestations: Sequence[Envelope], path: Path | None = None) -> None:
    """Append what the pipeline just signed for agent `name`:`version` (artifact `digest`) bound for
    `store_url`: the artifact signature by `signature_key_id` (None: no artifact signature, e.g. a promotion
    attestation signed later) and each attestation envelope's signatures.

    Call it right after signing, before logging or publishing, so no log entry of the pipeline lacks its
    line. Durable (fsync) and safe across threads and processes (an advisory lock beside the file).
    """
    target = path or default_record_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.with_name(target.name + ".lock")):
            last = _last_line(target)
            prev = GENESIS if last is None else _line_hash(last)
            out = b""
            for doc in _lines_for(store_url, name, version, digest, signature_key_id, attestations):
                raw = json.dumps({**doc, "prev": prev}, sort_keys=True, separators=(",", ":")).encode()
                out += raw + b"\n"
                prev = _line_hash(raw)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, out)
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise StoreError(f"{target}: cannot append to the signing record ({exc.strerror})") from exc


def _str(doc: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = doc.get(key, None if required else "")
    if not isinstance(value, str):
        raise InputError(where, f"{key} must be a string")
    return value


def load_record(path: Path | None = None) -> SigningRecord:
    """Read the record; a missing file is InputError (the audit must not pass without the pipeline's word)."""
    target = path or default_record_path()
    record = SigningRecord(target)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        raise InputError(str(target), "no signing record: the pipeline records every signature it makes there "
                                      f"(set ${RECORD_ENV} or --signing-record if it lives elsewhere)") from None
    except OSError as exc:
        raise InputError(str(target), f"cannot read the signing record ({exc.strerror})") from None
    prev = GENESIS
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{target}:{n}"
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(where, f"the line is longer than {MAX_LINE_BYTES} bytes")
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("v") != VERSION:
                raise InputError(where, f"not a signing-record v{VERSION} line")
            if doc.get("prev") != prev:
                record.problems.append(f"{where}: the hash chain breaks here (a line before it was edited, removed "
                                       "or inserted)")
            kind = _str(doc, "kind", where)
            if kind not in ("hashedrekord", "dsse"):
                raise InputError(where, f"unknown kind {kind!r}")
            record.lines.append(Signed(n, _str(doc, "store", where), _str(doc, "agent", where),
                                       _str(doc, "version", where), _str(doc, "digest", where), kind,
                                       _str(doc, "keyId", where), _str(doc, "signed", where),
                                       _str(doc, "payloadHash", where, required=False), _str(doc, "at", where)))
        except (ValueError, InputError) as exc:
            record.problems.append(str(exc) if isinstance(exc, InputError) else f"{where}: not JSON")
        prev = _line_hash(raw)
    return record


__all__ = ["RECORD_ENV", "Signed", "SigningRecord", "default_record_path", "load_record", "record_signing"]
