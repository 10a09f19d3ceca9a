"""The embedded transparency log over real HTTP on loopback: the Rekor v1 API, its refusals, sigstore-python
reading our answers, and an acknowledged entry surviving a SIGKILL of the server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from child_process import first_line
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.intoto import make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog import merkle, note
from agentfactory.tlog.entries import MAX_ENTRY_BYTES, parse_log_entry, verify_set
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.server import create_app
from agentfactory.tlog.storage import TreeStorage

ENTRIES = "/api/v1/log/entries"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hashedrekord(digest: bytes, sig: bytes, pem: bytes) -> dict[str, Any]:
    """A proposed entry as Rekor clients (cosign, sigstore-python) POST it."""
    return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
        "signature": {"content": b64(sig), "publicKey": {"content": b64(pem)}}}}


def dsse(envelope_json: bytes, pem: bytes) -> dict[str, Any]:
    return {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "proposedContent": {"envelope": envelope_json.decode(), "verifiers": [b64(pem)]}}}


@contextlib.contextmanager
def serving(log: EmbeddedLog) -> Iterator[httpx.Client]:
    """The app on uvicorn, plain HTTP on a loopback port of its own; yields a client for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(log), log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the log server did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedLog]:
    with EmbeddedLog(tmp_path_factory.mktemp("tlog")) as embedded:
        yield embedded


@pytest.fixture(scope="module")
def client(log: EmbeddedLog) -> Iterator[httpx.Client]:
    with serving(log) as c:
        yield c


def signed_digest(ring: LocalKeyring, pem: bytes, content: bytes) -> tuple[bytes, dict[str, Any]]:
    digest = hashlib.sha256(content).digest()
    return digest, hashedrekord(digest, ring.sign_digest(digest).signature, pem)


def check_entry(doc: Any, log_key: ec.EllipticCurvePublicKey) -> None:
    """Everything a client checks: uuid = leaf hash, inclusion proof to the signed checkpoint's root, SET."""
    entry = parse_log_entry(doc, "response")
    proof = entry.inclusion_proof
    assert proof is not None
    checkpoint = note.verify(proof.checkpoint, log_key)
    assert checkpoint.size == proof.tree_size and checkpoint.root_hash.hex() == proof.root_hash
    merkle.verify_inclusion(merkle.leaf_hash(entry.body), entry.log_index, proof.tree_size,
                            [bytes.fromhex(h) for h in proof.hashes], bytes.fromhex(proof.root_hash))
    verify_set(log_key, entry.signed_entry_timestamp, entry.body_b64, entry.integrated_time, entry.log_id,
               entry.log_index)


def log_public_key(client: httpx.Client) -> ec.EllipticCurvePublicKey:
    r = client.get("/api/v1/log/publicKey")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-pem-file")
    return note.load_log_public_key(r.content, "publicKey")


# --- the API, end to end ------------------------------------------------------------------------------


def test_hashedrekord_and_dsse_round_trip(client: httpx.Client, log: EmbeddedLog, ring: LocalKeyring,
                                          pem: bytes) -> None:
    log_key = log_public_key(client)
    assert log_key.public_numbers() == log.key.public_key.public_numbers()
    digest, proposal = signed_digest(ring, pem, b"round trip")
    r = client.post(ENTRIES, json=proposal)
    assert r.status_code == 201, r.text
    ((uuid, created),) = r.json().items()
    assert r.headers["location"] == f"{ENTRIES}/{uuid}" and r.headers["etag"].strip('"') == uuid
    check_entry(r.json(), log_key)
    assert json.loads(base64.b64decode(created["body"]))["spec"]["data"]["hash"]["value"] == digest.hex()

    artifact = hashlib.sha256(b"agent wasm").hexdigest()
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("agent", f"sha256:{artifact}", "https://x/p", {}), ring)
    r2 = client.post(ENTRIES, json=dsse(env.to_json(), pem))
    assert r2.status_code == 201, r2.text
    ((dsse_uuid, dsse_entry),) = r2.json().items()

    for got in (client.get(f"{ENTRIES}/{uuid}"), client.get(ENTRIES, params={"logIndex": created["logIndex"]})):
        assert got.status_code == 200
        assert list(got.json()) == [uuid]
        check_entry(got.json(), log_key)  # a fresh proof against the current (larger) tree
    assert client.get(f"{ENTRIES}/{dsse_uuid}").json()[dsse_uuid]["logIndex"] == dsse_entry["logIndex"]

    # search: the artifact digest finds the hashedrekord; the in-toto subject and payload hash find the dsse
    def search(query: dict[str, Any]) -> list[str]:
        res = client.post("/api/v1/index/retrieve", json=query)
        assert res.status_code == 200, res.text
        return list(res.json())

    assert search({"hash": f"sha256:{digest.hex()}"}) == [uuid]
    assert search({"hash": digest.hex()}) == [uuid]  # rekor-cli sends bare hex too
    assert search({"hash": f"sha256:{artifact}"}) == [dsse_uuid]
    assert search({"hash": f"sha256:{hashlib.sha256(env.payload).hexdigest()}"}) == [dsse_uuid]
    assert {uuid, dsse_uuid} <= set(search({"publicKey": {"format": "x509", "content": b64(pem)}}))
    assert search({"hash": f"sha256:{digest.hex()}", "publicKey": {"format": "x509", "content": b64(pem)}}) == [uuid]
    assert search({"hash": "sha256:" + "0" * 64}) == []

    # retrieve by uuids and by indexes; unknown ones are left out, as Rekor does
    res = client.post(f"{ENTRIES}/retrieve", json={"entryUUIDs": [uuid, "ab" * 32],
                                                   "logIndexes": [dsse_entry["logIndex"], 10**6]})
    assert res.status_code == 200
    assert [next(iter(e)) for e in res.json()] == [uuid, dsse_uuid]
    for e in res.json():
        check_entry(e, log_key)
    res = client.post(f"{ENTRIES}/retrieve", json={"entries": [proposal]})
    assert [next(iter(e)) for e in res.json()] == [uuid]
    assert client.post(f"{ENTRIES}/retrieve", json={"logIndexes": list(range(11))}).status_code == 400


def test_duplicate_is_409_with_the_location_of_the_entry(client: httpx.Client, ring: LocalKeyring,
                                                         pem: bytes) -> None:
    _, proposal = signed_digest(ring, pem, b"twice")
    first = client.post(ENTRIES, json=proposal)
    assert first.status_code == 201
    uuid = next(iter(first.json()))
    again = client.post(ENTRIES, json=proposal)
    assert again.status_code == 409
    assert again.headers["location"] == f"{ENTRIES}/{uuid}"
    assert again.json()["code"] == 409 and uuid in again.json()["message"]
    assert client.get(again.headers["location"]).status_code == 200


def test_log_info_and_consistency_proofs(client: httpx.Client, ring: LocalKeyring, pem: bytes) -> None:
    log_key = log_public_key(client)
    client.post(ENTRIES, json=signed_digest(ring, pem, b"before")[1])
    before = client.get("/api/v1/log").json()
    for i in range(5):
        assert client.post(ENTRIES, json=signed_digest(ring, pem, b"more %d" % i)[1]).status_code == 201
    after = client.get("/api/v1/log").json()
    assert set(after) == {"rootHash", "signedTreeHead", "treeSize", "treeID"} and after["treeID"].isdigit()
    assert after["treeSize"] == before["treeSize"] + 5
    sth = note.verify(after["signedTreeHead"], log_key)
    assert sth.size == after["treeSize"] and sth.root_hash.hex() == after["rootHash"]
    r = client.get("/api/v1/log/proof", params={"firstSize": before["treeSize"], "lastSize": after["treeSize"]})
    assert r.status_code == 200 and r.json()["rootHash"] == after["rootHash"]
    merkle.verify_consistency(before["treeSize"], after["treeSize"], bytes.fromhex(before["rootHash"]),
                              bytes.fromhex(after["rootHash"]), [bytes.fromhex(h) for h in r.json()["hashes"]])
    same = client.get("/api/v1/log/proof", params={"firstSize": 1, "lastSize": 1}).json()
    assert same["hashes"] == []
    assert client.get("/healthz").text == "ok\n"


def error_of(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["code"] == status and doc["message"]
    return str(doc["message"])


def test_bad_requests_are_refused_with_a_reason(client: httpx.Client, ring: LocalKeyring, pem: bytes) -> None:
    _, proposal = signed_digest(ring, pem, b"refused")
    post = client.post
    assert "not JSON" in error_of(post(ENTRIES, content=b"{not json"), 400)
    bad_b64 = json.loads(json.dumps(proposal))
    bad_b64["spec"]["signature"]["content"] = "!!not base64!!"
    assert "base64" in error_of(post(ENTRIES, json=bad_b64), 400)
    flipped = bytearray(base64.b64decode(proposal["spec"]["signature"]["content"]))
    flipped[10] ^= 0x01
    bad_sig = json.loads(json.dumps(proposal))
    bad_sig["spec"]["signature"]["content"] = b64(bytes(flipped))
    assert "signature does not verify" in error_of(post(ENTRIES, json=bad_sig), 400)
    assert "unknown kind" in error_of(post(ENTRIES, json={**proposal, "kind": "rekord"}), 400)
    assert "larger than" in error_of(post(ENTRIES, content=b"x" * (MAX_ENTRY_BYTES + 1)), 413)

    assert "0 or more" in error_of(client.get(ENTRIES, params={"logIndex": -1}), 400)
    assert "integer" in error_of(client.get(ENTRIES, params={"logIndex": "one"}), 400)
    error_of(client.get(ENTRIES, params={"logIndex": 10**9}), 404)
    error_of(client.get(f"{ENTRIES}/{'ab' * 32}"), 404)
    error_of(client.get(f"{ENTRIES}/not-a-uuid"), 400)
    size = client.get("/api/v1/log").json()["treeSize"]
    proof = "/api/v1/log/proof"
    assert "1 or more" in error_of(client.get(proof, params={"firstSize": 0, "lastSize": 1}), 400)
    error_of(client.get(proof, params={"firstSize": 2, "lastSize": 1}), 400)
    error_of(client.get(proof, params={"firstSize": 1, "lastSize": size + 1}), 400)
    error_of(client.get(proof, params={"firstSize": 1}), 400)

    index = "/api/v1/index/retrieve"
    error_of(post(index, json={}), 400)
    error_of(post(index, json={"hash": "md5:abc"}), 400)
    error_of(post(index, json={"publicKey": {"format": "pgp", "content": b64(pem)}}), 400)
    error_of(post(index, json={"publicKey": {"format": "x509", "content": b64(b"not a key")}}), 400)
    error_of(client.get("/no/such/route"), 404)
    assert client.get(ENTRIES, params={"logIndex": 0}).status_code == 200  # still serving


def test_sigstore_python_verifies_a_real_server_response(client: httpx.Client, ring: LocalKeyring,
                                                         pem: bytes) -> None:
    pytest.importorskip("sigstore")
    from sigstore._internal.trust import Keyring, RekorKeyring
    from sigstore.models import TransparencyLogEntry
    from sigstore_models.common import v1 as common_v1

    log_key = log_public_key(client)
    der = log_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    keyring = RekorKeyring(Keyring([common_v1.PublicKey(
        raw_bytes=base64.b64encode(der), key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256)]))
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("a", "sha256:" + "1" * 64, "https://x/p", {}), ring)
    for proposal in (signed_digest(ring, pem, b"sigstore")[1], dsse(env.to_json(), pem)):
        created = client.post(ENTRIES, json=proposal)
        assert created.status_code == 201
        fetched = client.get(created.headers["location"]).json()
        for response in (created.json(), fetched):
            tle = TransparencyLogEntry._from_v1_response(response)
            tle._verify(keyring)  # inclusion proof, signed checkpoint, SET


# --- reliability: SIGKILL mid-stream, restart, nothing acknowledged is lost ---------------------------


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stderr is not None
    line = first_line(proc)
    if not line:
        proc.kill()
        raise RuntimeError("tlog serve exited before listening: " + proc.stderr.read().decode())
    hello = json.loads(line)
    url = hello["listening"]
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("tlog serve did not answer /healthz")
        time.sleep(0.02)
    return proc, url, hello["logID"]


def test_acknowledged_entries_survive_sigkill(tmp_path: Path) -> None:
    folder = tmp_path / "tlog"
    signer = ec.generate_private_key(ec.SECP256R1())
    signer_pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    proposals = []
    for i in range(3000):
        digest = hashlib.sha256(b"crash %d" % i).digest()
        proposals.append(hashedrekord(digest, signer.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))), signer_pem))

    proc, url, log_id = start_server(folder)
    acked: list[str] = []
    heads: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(part: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=url, timeout=5) as c:
            for i, proposal in enumerate(part):
                if stop.is_set():
                    return
                try:
                    r = c.post(ENTRIES, json=proposal)
                    if i % 25 == 0:
                        head = c.get("/api/v1/log").json()
                        with lock:
                            heads.append(head)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 201:
                    with lock:
                        acked.append(next(iter(r.json())))

    threads = [threading.Thread(target=worker, args=(proposals[k::4],)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # mid-stream: the workers are still posting
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 400 and heads
    last_head = max(heads, key=lambda h: h["treeSize"])

    proc, url, log_id_after = start_server(folder)
    try:
        assert log_id_after == log_id  # same log key
        with httpx.Client(base_url=url, timeout=10) as c:
            log_key = log_public_key(c)
            info = c.get("/api/v1/log").json()
            assert info["treeSize"] >= len(acked)
            for uuid in acked:
                r = c.get(f"{ENTRIES}/{uuid}")
                assert r.status_code == 200, uuid
                check_entry(r.json(), log_key)
            proof = c.get("/api/v1/log/proof", params={"firstSize": last_head["treeSize"],
                                                       "lastSize": info["treeSize"]}).json()
            merkle.verify_consistency(last_head["treeSize"], info["treeSize"], bytes.fromhex(last_head["rootHash"]),
                                      bytes.fromhex(info["rootHash"]), [bytes.fromhex(h) for h in proof["hashes"]])
            # the search index caught up with every acknowledged leaf
            found = c.post("/api/v1/index/retrieve", json={"publicKey": {"format": "x509", "content": b64(signer_pem)}})
            assert set(acked) <= set(found.json())
            # the log goes on from where it stopped
            assert c.post(ENTRIES, json=proposals[-1]).status_code in (201, 409)
        with TreeStorage(folder / "tree.db") as storage:
            assert storage.check(full=True) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_search_index_is_rebuilt_from_the_leaves(tmp_path: Path, ring: LocalKeyring, pem: bytes) -> None:
    """A crash between the leaf commit and the index commit loses nothing: the open re-indexes the tail."""
    artifact = hashlib.sha256(b"subject").hexdigest()
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("a", f"sha256:{artifact}", "https://x/p", {}), ring)
    with EmbeddedLog(tmp_path) as embedded:
        first = embedded.add(signed_digest(ring, pem, b"one")[1]).entry.uuid
        second = embedded.add(dsse(env.to_json(), pem)).entry.uuid
    with sqlite3.connect(tmp_path / "tree.db") as db:  # as if the process died before indexing the dsse entry
        db.execute("DELETE FROM search_index WHERE idx = 1")
        db.execute("UPDATE search_index_size SET size = 1")
    db.close()
    with EmbeddedLog(tmp_path) as embedded:
        assert embedded.search(sha256=f"sha256:{artifact}") == [second]  # the subject digest, kept in `extra`
        assert embedded.search(public_key_pem=pem) == [first, second]
        assert embedded.check(full=True) == []
