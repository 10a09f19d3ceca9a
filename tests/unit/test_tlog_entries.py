"""Rekor entry kinds, canonical bodies and SETs: real signatures from our keyring accepted, tampered
ones refused, every malformed proposal named, and sigstore-python checking our entries end to end."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, Envelope, EnvelopeSignature, sign_envelope
from agentfactory.errors import InputError
from agentfactory.intoto import make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog.entries import (
    MAX_ENTRY_BYTES,
    InclusionProof,
    LogEntry,
    ProposedEntry,
    canonical,
    dsse_body,
    entry_uuid,
    hashedrekord_body,
    load_proposed_entry,
    parse_log_entry,
    parse_proposed_entry,
    set_payload,
    sign_set,
    verify_entry_signature,
    verify_set,
)
from agentfactory.tlog.note import Checkpoint, LogKey

DIGEST = hashlib.sha256(b"an agent's wasm bytes").digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def log_key() -> LogKey:
    return LogKey.generate()


def hashedrekord_request(digest: bytes, sig: bytes, pem: bytes) -> dict[str, Any]:
    return {"kind": "hashedrekord", "apiVersion": "0.0.1", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
        "signature": {"content": b64(sig), "publicKey": {"content": b64(pem)}}}}


def dsse_request(envelope_json: bytes, pem: bytes) -> dict[str, Any]:
    return {"kind": "dsse", "apiVersion": "0.0.1", "spec": {
        "proposedContent": {"envelope": envelope_json.decode(), "verifiers": [b64(pem)]}}}


def envelope(ring: LocalKeyring) -> Envelope:
    statement = make_statement("agent", "sha256:" + DIGEST.hex(), "https://slsa.dev/provenance/v1", {"x": 1})
    return sign_envelope(INTOTO_PAYLOAD_TYPE, statement, ring)


# --- canonical JSON and uuids ---------------------------------------------------------------------------


def test_canonical_matches_rfc8785() -> None:
    rfc8785 = pytest.importorskip("rfc8785")
    doc = {"b": [1, "é\u2028", {"z": None, "a": True}], "a": "\"\\\n\x01", "\u20ac": 0, "\U0001f600": 2, "é": -5}
    assert canonical(doc) == rfc8785.dumps(doc)
    assert canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    with pytest.raises(ValueError, match="cannot canonicalise float"):
        canonical({"a": 1.5})


def test_entry_uuid_is_rfc6962_leaf_hash() -> None:
    assert entry_uuid(b"body") == hashlib.sha256(b"\x00body").hexdigest()


# --- hashedrekord --------------------------------------------------------------------------------------


def test_hashedrekord_from_local_keyring_is_accepted(ring: LocalKeyring, pem: bytes) -> None:
    sig = ring.sign_digest(DIGEST).signature
    entry = parse_proposed_entry(hashedrekord_request(DIGEST, sig, pem), "req")
    verify_entry_signature(entry)
    assert entry.body() == {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": DIGEST.hex()}},
        "signature": {"content": b64(sig), "publicKey": {"content": b64(pem)}}}}
    body = canonical(entry.body())
    assert body.startswith(b'{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":')


def test_hashedrekord_with_flipped_signature_bit_is_refused(ring: LocalKeyring, pem: bytes) -> None:
    sig = bytearray(ring.sign_digest(DIGEST).signature)
    sig[10] ^= 0x01
    entry = parse_proposed_entry(hashedrekord_request(DIGEST, bytes(sig), pem), "req")
    with pytest.raises(InputError, match="entry: signature does not verify"):
        verify_entry_signature(entry)


def test_hashedrekord_for_another_digest_is_refused(ring: LocalKeyring, pem: bytes) -> None:
    sig = ring.sign_digest(DIGEST).signature
    entry = parse_proposed_entry(hashedrekord_request(hashlib.sha256(b"x").digest(), sig, pem), "req")
    with pytest.raises(InputError, match="signature does not verify"):
        verify_entry_signature(entry)


def test_hashedrekord_ecdsa_p256_is_accepted() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    pem = priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = priv.sign(DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    verify_entry_signature(parse_proposed_entry(hashedrekord_request(DIGEST, sig, pem), "req"))


def test_hashedrekord_body_reencodes_the_key_as_rekor_does(pem: bytes) -> None:
    body = hashedrekord_body(DIGEST.hex(), b"sig", pem.replace(b"\n", b"\r\n"))
    assert base64.b64decode(body["spec"]["signature"]["publicKey"]["content"]) == pem


# --- dsse ----------------------------------------------------------------------------------------------


def test_dsse_from_sign_envelope_is_accepted(ring: LocalKeyring, pem: bytes) -> None:
    env = envelope(ring)
    raw = env.to_json()
    entry = parse_proposed_entry(dsse_request(raw, pem), "req")
    verify_entry_signature(entry)
    assert entry.body() == {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(raw).hexdigest()},
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(env.payload).hexdigest()},
        "signatures": [{"signature": b64(env.signatures[0].sig), "verifier": b64(pem)}]}}


def test_dsse_signatures_are_sorted_and_kept_verbatim(ring: LocalKeyring, pem: bytes) -> None:
    env = envelope(ring)
    second = sign_envelope(env.payload_type, env.payload, ring).signatures[0]
    two = Envelope(env.payload_type, env.payload, (EnvelopeSignature("k", b"\xff" * 256), second))
    sigs = [s["signature"] for s in dsse_body(two.to_json(), pem)["spec"]["signatures"]]
    assert sigs == sorted(sigs) and len(sigs) == 2


def test_tampered_dsse_envelope_is_refused(ring: LocalKeyring, pem: bytes) -> None:
    env = envelope(ring)
    tampered = Envelope(env.payload_type, env.payload.replace(b"agent", b"agenT"), env.signatures)
    entry = parse_proposed_entry(dsse_request(tampered.to_json(), pem), "req")
    with pytest.raises(InputError, match="signature does not verify"):
        verify_entry_signature(entry)


def test_dsse_with_one_bad_signature_among_good_is_refused(ring: LocalKeyring, pem: bytes) -> None:
    env = envelope(ring)
    mixed = Envelope(env.payload_type, env.payload, (*env.signatures, EnvelopeSignature("", b"\x00" * 256)))
    with pytest.raises(InputError, match="signature does not verify"):
        verify_entry_signature(parse_proposed_entry(dsse_request(mixed.to_json(), pem), "req"))


def test_dsse_by_another_key_is_refused(ring: LocalKeyring, tmp_path: Path) -> None:
    other = LocalKeyring(tmp_path)
    other.create()
    raw = envelope(ring).to_json()
    entry = parse_proposed_entry(dsse_request(raw, other.public_keys()[0].pem), "req")
    with pytest.raises(InputError, match="signature does not verify"):
        verify_entry_signature(entry)


# --- malformed proposals -------------------------------------------------------------------------------


def _bad_requests(pem: bytes) -> list[tuple[Any, str]]:
    good = hashedrekord_request(DIGEST, b"s" * 256, pem)
    small_rsa = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def hr(**changes: Any) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(good))
        for path, value in changes.items():
            node = doc
            keys = path.split("__")
            for k in keys[:-1]:
                node = node[k]
            if value is ...:
                del node[keys[-1]]
            else:
                node[keys[-1]] = value
        return doc

    dsse_good = dsse_request(b'{"payload":"","payloadType":"t","signatures":[{"sig":"AA=="}]}', pem)
    return [
        ([], "proposed entry is not a JSON object"),
        (hr(kind="rekord"), "unknown kind 'rekord'; this log accepts hashedrekord, dsse"),
        (hr(apiVersion="0.0.2"), "unsupported apiVersion '0.0.2' for hashedrekord; use 0.0.1"),
        (hr(spec=...), "missing object spec"),
        (hr(spec__signature=...), "missing object signature"),
        (hr(spec__data=...), "missing object data"),
        (hr(spec__data__hash=...), "missing object hash"),
        (hr(spec__data__hash__algorithm="sha512"), "algorithm must be sha256"),
        (hr(spec__data__hash__value="ab" * 31), "value must be 64 lowercase hex digits"),
        (hr(spec__data__hash__value="AB" * 32), "value must be 64 lowercase hex digits"),
        (hr(spec__data__hash__value="zz" * 32), "value must be 64 lowercase hex digits"),
        (hr(spec__signature__content="not base64!"), "signature.content: is not valid base64"),
        (hr(spec__signature__content=""), "signature must be 1-2048 bytes"),
        (hr(spec__signature__content=b64(b"s" * 2049)), "signature must be 1-2048 bytes"),
        (hr(spec__signature__publicKey=...), "missing object publicKey"),
        (hr(spec__signature__publicKey__content=5), "publicKey.content: must be a base64 string"),
        (hr(spec__signature__publicKey__content=b64(b"junk")), "public key is not a PEM public key"),
        (hr(spec__signature__publicKey__content=b64(small_rsa)), "RSA public key has 1024 bits"),
        (hr(spec__signature__publicKey__content=b64(p521)), "must be RSA \\(>= 2048 bits\\) or ECDSA P-256/P-384"),
        (hr(spec__signature__publicKey__content=b64(b"x" * 17000)), "public key is 17000 bytes"),
        ({**dsse_good, "spec": {**dsse_good["spec"], "payloadHash": {}}}, "are computed by the log"),
        ({**dsse_good, "spec": {}}, "missing object proposedContent"),
        ({**dsse_good, "spec": {"proposedContent": {"verifiers": [b64(pem)]}}}, "missing string envelope"),
        ({**dsse_good, "spec": {"proposedContent": {"envelope": "{", "verifiers": [b64(pem)]}}},
         "envelope is not JSON"),
        ({**dsse_good, "spec": {"proposedContent": {"envelope": '{"payloadType":"t","payload":"%","signatures":[]}',
                                                    "verifiers": [b64(pem)]}}}, "payload: is not valid base64"),
        ({**dsse_good, "spec": {"proposedContent": {**dsse_good["spec"]["proposedContent"], "verifiers": []}}},
         "verifiers must list exactly one public key"),
        ({**dsse_good, "spec": {"proposedContent": {**dsse_good["spec"]["proposedContent"],
                                                    "verifiers": [b64(pem), b64(pem)]}}},
         "verifiers must list exactly one public key"),
        ({**dsse_good, "spec": {"proposedContent": {**dsse_good["spec"]["proposedContent"], "verifiers": ["#"]}}},
         "verifiers\\[0\\]: is not valid base64"),
    ]


def test_malformed_proposals_are_refused(pem: bytes) -> None:
    for doc, message in _bad_requests(pem):
        with pytest.raises(InputError, match=message):
            parse_proposed_entry(doc, "req")


def test_oversized_request_is_refused_before_parsing() -> None:
    with pytest.raises(InputError, match=f"proposed entry is {MAX_ENTRY_BYTES + 1} bytes"):
        load_proposed_entry(b" " * (MAX_ENTRY_BYTES + 1), "req")


def test_requests_built_by_sigstore_python_parse(ring: LocalKeyring, pem: bytes) -> None:
    """sigstore-python's own request models (rekor_types), dumped as it POSTs them, parse here."""
    rekor_types = pytest.importorskip("rekor_types")
    sig = ring.sign_digest(DIGEST).signature
    hr = rekor_types.Hashedrekord(spec=rekor_types.hashedrekord.HashedrekordV001Schema(
        signature=rekor_types.hashedrekord.Signature(
            content=b64(sig), public_key=rekor_types.hashedrekord.PublicKey(content=b64(pem))),
        data=rekor_types.hashedrekord.Data(hash=rekor_types.hashedrekord.Hash(
            algorithm="sha256", value=DIGEST.hex())))).model_dump(mode="json", by_alias=True)
    verify_entry_signature(parse_proposed_entry(hr, "req"))
    raw = envelope(ring).to_json()
    ds = rekor_types.Dsse(spec=rekor_types.dsse.DsseSchema(
        proposed_content=rekor_types.dsse.ProposedContent(envelope=raw.decode(), verifiers=[b64(pem)]),
    )).model_dump(mode="json", by_alias=True)
    entry = parse_proposed_entry(ds, "req")
    verify_entry_signature(entry)
    assert entry.envelope_json == raw


# --- signed entry timestamps and log entries -----------------------------------------------------------


def test_set_payload_is_canonical() -> None:
    assert set_payload("Ym9keQ==", 1700000000, "ab" * 32, 3) == (
        b'{"body":"Ym9keQ==","integratedTime":1700000000,"logID":"' + b"ab" * 32 + b'","logIndex":3}')


def test_set_round_trip_and_tamper(log_key: LogKey) -> None:
    sig = sign_set(log_key, "Ym9keQ==", 1700000000, log_key.log_id, 3)
    verify_set(log_key.public_key, sig, "Ym9keQ==", 1700000000, log_key.log_id, 3)
    with pytest.raises(InputError, match="signed entry timestamp does not verify"):
        verify_set(log_key.public_key, sig, "Ym9keQ==", 1700000001, log_key.log_id, 3)
    with pytest.raises(InputError, match="signed entry timestamp does not verify"):
        verify_set(LogKey.generate().public_key, sig, "Ym9keQ==", 1700000000, log_key.log_id, 3)


def _leaf(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def make_entry(log_key: LogKey, bodies: list[bytes], index: int, integrated_time: int = 1700000000) -> LogEntry:
    """A two-leaf tree (RFC 6962): the proof for leaf `index` is the other leaf's hash."""
    assert len(bodies) == 2
    leaves = [_leaf(b) for b in bodies]
    root = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    checkpoint = Checkpoint(log_key.origin, 2, root).sign(log_key)
    body = bodies[index]
    sig = sign_set(log_key, b64(body), integrated_time, log_key.log_id, index)
    proof = InclusionProof(index, root.hex(), 2, (leaves[1 - index].hex(),), checkpoint)
    return LogEntry(body, integrated_time, log_key.log_id, index, sig, proof)


@pytest.fixture(scope="module")
def bodies(ring: LocalKeyring, pem: bytes) -> list[bytes]:
    sig = ring.sign_digest(DIGEST).signature
    return [canonical(hashedrekord_body(DIGEST.hex(), sig, pem)),
            canonical(dsse_body(envelope(ring).to_json(), pem))]


def test_log_entry_round_trip(log_key: LogKey, bodies: list[bytes]) -> None:
    entry = make_entry(log_key, bodies, 1)
    doc = json.loads(entry.to_json())
    assert list(doc) == [entry_uuid(bodies[1])]
    inner = doc[entry.uuid]
    assert set(inner) == {"body", "integratedTime", "logID", "logIndex", "verification"}
    assert set(inner["verification"]) == {"inclusionProof", "signedEntryTimestamp"}
    assert set(inner["verification"]["inclusionProof"]) == {"checkpoint", "hashes", "logIndex", "rootHash",
                                                             "treeSize"}
    assert parse_log_entry(doc, "resp") == entry
    bare = LogEntry(entry.body, entry.integrated_time, entry.log_id, entry.log_index, entry.signed_entry_timestamp)
    assert parse_log_entry(bare.to_dict(), "resp") == bare


def test_malformed_log_entries_are_refused(log_key: LogKey, bodies: list[bytes]) -> None:
    good = make_entry(log_key, bodies, 0).to_dict()
    (uuid, inner), = good.items()

    def variant(**changes: Any) -> dict[str, Any]:
        doc = json.loads(json.dumps(inner))
        for key, value in changes.items():
            if key.startswith("proof_"):
                doc["verification"]["inclusionProof"][key[6:]] = value
            elif key == "set":
                doc["verification"]["signedEntryTimestamp"] = value
            else:
                doc[key] = value
        return {uuid: doc}

    cases: list[tuple[Any, str]] = [
        ({}, "must be an object with exactly one entry"),
        ({**good, "x": {}}, "must be an object with exactly one entry"),
        ({uuid: []}, "log entry is not a JSON object"),
        (variant(body="%%"), "body: is not valid base64"),
        (variant(body=""), "body must be 1-65536 bytes"),
        (variant(body=b64(b"other")), "uuid is not the leaf hash of the body"),
        (variant(verification=None), "missing object verification"),
        (variant(set="%"), "signedEntryTimestamp: is not valid base64"),
        (variant(set=""), "signedEntryTimestamp must be 1-2048 bytes"),
        (variant(integratedTime="1"), "integratedTime must be an integer"),
        (variant(integratedTime=True), "integratedTime must be an integer"),
        (variant(logIndex=-1), "logIndex must be an integer from 0"),
        (variant(logID="AB" * 32), "logID must be 64 lowercase hex digits"),
        (variant(proof_hashes="x"), "hashes must be a list of at most 64"),
        (variant(proof_hashes=["00" * 32] * 65), "hashes must be a list of at most 64"),
        (variant(proof_hashes=["0"]), "hashes must be 64 lowercase hex digits each"),
        (variant(proof_checkpoint=""), "checkpoint must be a signed note"),
        (variant(proof_rootHash="x"), "rootHash must be 64 lowercase hex digits"),
        (variant(proof_treeSize=0), "logIndex must be below treeSize"),
        (variant(proof_treeSize=1.5), "treeSize must be an integer"),
    ]
    for doc, message in cases:
        with pytest.raises(InputError, match=message):
            parse_log_entry(doc, "resp")


def test_proposed_entry_body_kinds(ring: LocalKeyring, pem: bytes) -> None:
    entry = ProposedEntry("dsse", pem, envelope_json=envelope(ring).to_json())
    assert entry.body()["kind"] == "dsse"


# --- sigstore-python verifies our entries: inclusion proof, checkpoint and SET ------------------------


def _sigstore_keyring(key: LogKey):  # type: ignore[no-untyped-def]
    from sigstore._internal.trust import Keyring, RekorKeyring
    from sigstore_models.common import v1 as common_v1

    der = key.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return RekorKeyring(Keyring([common_v1.PublicKey(
        raw_bytes=base64.b64encode(der), key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256)]))


@pytest.mark.parametrize("index", [0, 1])  # 0: hashedrekord body, 1: dsse body
def test_sigstore_python_verifies_our_log_entry(log_key: LogKey, bodies: list[bytes], index: int) -> None:
    pytest.importorskip("sigstore")
    from sigstore.errors import VerificationError
    from sigstore.models import TransparencyLogEntry

    entry = make_entry(log_key, bodies, index)
    tle = TransparencyLogEntry._from_v1_response(entry.to_dict())  # also validates the body with rekor_types
    assert tle._encode_canonical() == set_payload(entry.body_b64, entry.integrated_time, entry.log_id, index)
    tle._verify(_sigstore_keyring(log_key))  # Merkle inclusion, signed checkpoint, then the SET
    tle._verify_set(_sigstore_keyring(log_key))

    forged = json.loads(entry.to_json())
    forged[entry.uuid]["integratedTime"] += 1
    with pytest.raises(VerificationError, match="SET: invalid inclusion promise"):
        TransparencyLogEntry._from_v1_response(forged)._verify_set(_sigstore_keyring(log_key))
