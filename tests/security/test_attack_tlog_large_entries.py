"""Attack: entries near the size limit hold the log's event loop and its memory.

A valid, self-signed dsse entry of 32 MiB took about 1 s to parse and check, on the event loop: three clients
looping one held every other request (`/healthz` p50 1.1 s). And bodies being received were held whole with no
bound across connections: 40 connections each holding a 32 MiB body but its last byte took 1.3 GB. Now entries
larger than ON_LOOP_ENTRY_BYTES are parsed and checked off the event loop, and the bytes of entries being received
are bounded across connections (MAX_BODIES_IN_FLIGHT; past it 503 with Retry-After, before a byte is read).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tlog_attack_helpers import serving_in_process

import agentfactory.tlog.server as tlog_server
from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, pae
from agentfactory.tlog.log import EmbeddedLog


def dsse_entry(predicate_bytes: int, salt: str) -> bytes:
    """A valid dsse proposed entry, self-signed (anyone may log), whose payload is about `predicate_bytes`."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x", "digest": {
        "sha256": "ab" * 32}}], "predicateType": "x" + salt, "predicate": ["{}"] * (predicate_bytes // 5)}).encode()
    sig = key.sign(pae(INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = json.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": INTOTO_PAYLOAD_TYPE,
                           "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}]})
    return json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
        "envelope": envelope, "verifiers": [base64.b64encode(pem).decode()]}}}).encode()


def test_large_entries_are_checked_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where: dict[int, bool] = {}
    prepare = EmbeddedLog.prepare

    def recording(self: EmbeddedLog, proposed: dict[str, Any]) -> Any:
        import asyncio

        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        where[len(json.dumps(proposed))] = on_loop
        return prepare(self, proposed)

    monkeypatch.setattr(EmbeddedLog, "prepare", recording)
    with EmbeddedLog(tmp_path / "tlog") as log, serving_in_process(log) as client:
        small, large = dsse_entry(1024, "s"), dsse_entry(tlog_server.ON_LOOP_ENTRY_BYTES * 2, "l")
        assert client.post("/api/v1/log/entries", content=small).status_code == 201
        assert client.post("/api/v1/log/entries", content=large).status_code == 201
    (small_on_loop, large_on_loop) = [where[k] for k in sorted(where)]
    assert small_on_loop is True and large_on_loop is False, where


def test_entries_being_received_are_bounded_across_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tlog_server, "MAX_BODIES_IN_FLIGHT", 3 * 1024 * 1024)
    with EmbeddedLog(tmp_path / "tlog") as log, serving_in_process(log) as client:
        port = urlsplit(str(client.base_url)).port or 0
        held = []
        for _ in range(3):  # three entries of 1 MiB each, all but their last byte sent
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /api/v1/log/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1048576\r\n\r\n" + b" " * (1048576 - 1))
            held.append(sock)
        threading.Event().wait(0.5)
        refused = client.post("/api/v1/log/entries", content=dsse_entry(1024, "x"))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        assert "at most 3145728 at once" in refused.json()["message"]
        assert client.get("/api/v1/log").status_code == 200  # everything else is served
        for sock in held:
            sock.close()
        for _ in range(100):  # the held bytes are given back as their connections end
            if client.post("/api/v1/log/entries", content=dsse_entry(1024, "y")).status_code == 201:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the log kept refusing after the held bodies' connections closed")
