"""The kill -9 test at group-commit rate: 16 keep-alive clients post to the real `agentfactory tlog serve`, the
server is SIGKILLed mid-stream, and after a restart every entry it answered 201 for is served with a proof
that verifies, the largest tree any answer was proved against is a prefix of the restarted log (consistency
proof), the search index caught up, and every stored hash re-computes."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from child_process import first_line
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from agentfactory.tlog import merkle, note
from agentfactory.tlog.entries import parse_log_entry, verify_set
from agentfactory.tlog.storage import TreeStorage

ENTRIES = "/api/v1/log/entries"
CLIENTS = 16
KILL_AFTER = 1500  # acknowledged entries before the SIGKILL


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stderr is not None
    line = first_line(proc)
    if not line:
        proc.kill()
        raise RuntimeError("tlog serve exited before listening: " + proc.stderr.read().decode())
    url = json.loads(line)["listening"]
    while True:  # it prints the address once the socket is bound; wait for it to answer
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError("tlog serve exited: " + proc.stderr.read().decode()) from None
            time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_entry(doc: Any, log_key: ec.EllipticCurvePublicKey) -> None:
    """What a client checks: the inclusion proof leads to the signed checkpoint's root, and the SET."""
    entry = parse_log_entry(doc, "response")
    proof = entry.inclusion_proof
    assert proof is not None
    checkpoint = note.verify(proof.checkpoint, log_key)
    assert checkpoint.size == proof.tree_size and checkpoint.root_hash.hex() == proof.root_hash
    merkle.verify_inclusion(merkle.leaf_hash(entry.body), entry.log_index, proof.tree_size,
                            [bytes.fromhex(h) for h in proof.hashes], bytes.fromhex(proof.root_hash))
    verify_set(log_key, entry.signed_entry_timestamp, entry.body_b64, entry.integrated_time, entry.log_id,
               entry.log_index)


def test_sigkill_under_16_concurrent_clients_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    folder = tmp_path / "tlog"
    signer = ec.generate_private_key(ec.SECP256R1())
    signer_pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    bodies = []
    for i in range(4000):
        digest = hashlib.sha256(b"group commit crash %d" % i).digest()
        sig = signer.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        bodies.append(json.dumps({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            "signature": {"content": b64(sig), "publicKey": {"content": b64(signer_pem)}}}}).encode())

    proc, url = start_server(folder)
    parts = urlsplit(url)
    acked: list[tuple[str, int]] = []  # (entry id, tree size its proof is against)
    proved: dict[int, str] = {}  # tree size -> root hash, as the answers' proofs gave them
    refused: list[str] = []  # any answer but 201 before the kill
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            for body in share:
                try:
                    conn.request("POST", ENTRIES, body=body, headers={"content-type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException):
                    return  # the server is gone; what was in flight was never acknowledged
                if response.status != 201:
                    with lock:
                        refused.append(f"{response.status} {data[:200]!r}")
                    return
                entry = next(iter(json.loads(data).values()))
                proof = entry["verification"]["inclusionProof"]
                with lock:
                    acked.append((response.getheader("ETag") or "", proof["treeSize"]))
                    proved[proof["treeSize"]] = proof["rootHash"]
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(bodies[k::CLIENTS],)) for k in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        while len(acked) < KILL_AFTER and any(t.is_alive() for t in threads):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # mid-stream: all 16 clients are still posting
        proc.wait(timeout=10)
        for t in threads:
            t.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert refused == [] and len(acked) >= KILL_AFTER
    largest = max(proved)

    proc, url = start_server(folder)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            log_key = note.load_log_public_key(c.get("/api/v1/log/publicKey").content, "publicKey")
            info = c.get("/api/v1/log").json()
            assert info["treeSize"] >= len(acked)
            for entry_id, _ in acked:
                r = c.get(f"{ENTRIES}/{entry_id}")
                assert r.status_code == 200, entry_id
                check_entry(r.json(), log_key)
            proof = c.get("/api/v1/log/proof", params={"firstSize": largest, "lastSize": info["treeSize"]}).json()
            merkle.verify_consistency(largest, info["treeSize"], bytes.fromhex(proved[largest]),
                                      bytes.fromhex(info["rootHash"]), [bytes.fromhex(h) for h in proof["hashes"]])
            found = c.post("/api/v1/index/retrieve", json={"publicKey": {"format": "x509", "content": b64(signer_pem)}})
            assert {entry_id for entry_id, _ in acked} <= set(found.json())
            assert c.post(ENTRIES, content=bodies[-1], headers={"content-type": "application/json"}).status_code \
                in (201, 409)  # and the log goes on
        with TreeStorage(folder / "tree.db") as storage:
            assert storage.check(full=True) == []
    finally:
        stop(proc)
