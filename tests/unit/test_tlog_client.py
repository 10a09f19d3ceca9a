"""The Rekor client against a real log served over loopback (`create_app(EmbeddedLog)` under uvicorn), and
against small stdlib HTTP servers that misbehave on purpose: garbage, oversized answers, errors, redirects."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.errors import NotFoundError
from agentfactory.evidence import ArtifactSignature, proposed_for_envelope, proposed_for_signature
from agentfactory.intoto import make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog.base import EntryRejected, LogError
from agentfactory.tlog.bundle import hashedrekord_check, verify_record
from agentfactory.tlog.client import RekorClient
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.merkle import verify_consistency
from agentfactory.tlog.note import load_log_public_key, log_id_of, verify
from agentfactory.tlog.server import create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, EmbeddedLog]]:
    log = EmbeddedLog(tmp_path_factory.mktemp("tlog"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(log), log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the log did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", log
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        log.close()


def signed(ring: LocalKeyring, data: bytes) -> tuple[ArtifactSignature, bytes]:
    digest = hashlib.sha256(data).digest()
    s = ring.sign_digest(digest)
    (key,) = [k for k in ring.public_keys() if k.key_id == s.key_id]
    return ArtifactSignature.from_signature("sha256:" + digest.hex(), s), key.pem


def test_add_fetch_search_and_verify_offline(served: tuple[str, EmbeddedLog], ring: LocalKeyring) -> None:
    url, log = served
    sig, pem = signed(ring, b"client artifact")
    with RekorClient(url) as client:
        key_pem = client.public_key_pem()
        assert key_pem == log.public_key_pem()
        key = load_log_public_key(key_pem, "log key")
        added = client.add(proposed_for_signature(sig, pem))
        assert not added.existed
        again = client.add(proposed_for_signature(sig, pem))  # 409 -> the existing entry
        assert again.existed and again.entry.uuid == added.entry.uuid
        assert client.entry(added.entry.uuid).body == added.entry.body
        assert client.entry_at(added.entry.log_index).uuid == added.entry.uuid
        assert added.entry.uuid in client.search(sha256=sig.digest)
        assert added.entry.uuid in client.search(public_key_pem=pem)
        hexd = sig.digest.split(":", 1)[1]
        assert verify_record(added.entry.to_json(), trusted_logs={log_id_of(key): key},
                             expected_body=hashedrekord_check(hexd, sig.sig, pem), where="r") is None

        statement = make_statement("agent", sig.digest, "https://slsa.dev/provenance/v1", {"x": 1})
        envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, ring).to_json()
        first = client.info()
        dsse = client.add(proposed_for_envelope(envelope, pem))
        info = client.info()
        assert info.tree_size == first.tree_size + 1
        verify(info.signed_tree_head, key)
        proof = client.consistency(first.tree_size, info.tree_size)
        verify_consistency(first.tree_size, info.tree_size, bytes.fromhex(first.root_hash),
                           bytes.fromhex(info.root_hash), [bytes.fromhex(h) for h in proof])
        assert dsse.entry.log_index == first.tree_size


def test_refusals_and_absences(served: tuple[str, EmbeddedLog], ring: LocalKeyring) -> None:
    url, _ = served
    sig, pem = signed(ring, b"refused")
    bad = ArtifactSignature(sig.digest, sig.keyid, b"\x01" * 256)
    with RekorClient(url) as client:
        with pytest.raises(EntryRejected, match="signature does not verify"):
            client.add(proposed_for_signature(bad, pem))
        with pytest.raises(NotFoundError):
            client.entry("ab" * 32)
        with pytest.raises(NotFoundError):
            client.entry_at(10**6)
        with pytest.raises(LogError, match="HTTP 400"):
            client.consistency(5, 1)
        assert client.search(sha256="00" * 32) == []


def test_no_log_there(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with RekorClient(f"http://127.0.0.1:{port}") as client, pytest.raises(LogError, match=f"127.0.0.1:{port}"):
        client.info()
    with pytest.raises(Exception, match="CA file"):
        RekorClient("https://127.0.0.1:1", ca_file=tmp_path / "missing.pem")


# --- logs that misbehave: a real HTTP server answering whatever the test wants --------------------------------

Answer = Callable[[str], tuple[int, dict[str, str], bytes]]


@pytest.fixture
def rogue() -> Iterator[Callable[[Answer], str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    if k != "X-No-Length":
                        self.send_header(k, v)
                if "X-No-Length" not in headers:  # else HTTP/1.0: the body ends when the connection closes
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped reading
                    self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *_args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_garbage_is_an_error_naming_the_url_and_field(rogue: Callable[[Answer], str]) -> None:
    url = rogue(lambda _p: (200, {}, b"<html>hello</html>"))
    with RekorClient(url) as client:
        with pytest.raises(LogError, match=f"{url}/api/v1/log.*not JSON"):
            client.info()
        with pytest.raises(LogError, match="not JSON"):
            client.search(sha256="00" * 32)
        with pytest.raises(LogError, match="not a PEM public key"):
            client.public_key_pem()
    url = rogue(lambda _p: (200, {}, json.dumps({"treeSize": -1, "rootHash": "00" * 32,
                                                 "signedTreeHead": "x"}).encode()))
    with RekorClient(url) as client, pytest.raises(LogError, match="treeSize"):
        client.info()
    url = rogue(lambda _p: (200, {}, json.dumps({"ab" * 32: {"body": "eA=="}}).encode()))
    with RekorClient(url) as client, pytest.raises(LogError, match="malformed entry"):
        client.entry("ab" * 32)
    url = rogue(lambda _p: (200, {}, b'["../../etc/passwd"]'))
    with RekorClient(url) as client, pytest.raises(LogError, match="not an entry UUID"):
        client.search(sha256="00" * 32)


def test_oversized_answers_are_refused(rogue: Callable[[Answer], str]) -> None:
    url = rogue(lambda _p: (200, {}, b"[" + b" " * 2_000_000 + b"]"))
    with RekorClient(url, max_response_bytes=1_000_000) as client, pytest.raises(LogError, match="limit is 1000000"):
        client.search(sha256="00" * 32)
    # no Content-Length: the stream itself is counted and cut off
    url = rogue(lambda _p: (200, {"X-No-Length": "1"}, b"x" * 3_000_000))
    with RekorClient(url, max_response_bytes=1_000_000) as client, pytest.raises(LogError, match="larger than"):
        client.info()


def test_server_errors_and_rejections_carry_the_message(rogue: Callable[[Answer], str],
                                                         ring: LocalKeyring) -> None:
    sig, pem = signed(ring, b"rogue")
    url = rogue(lambda _p: (500, {}, b'{"code": 500, "message": "database \\u0007 on fire"}'))
    with RekorClient(url) as client:
        with pytest.raises(LogError, match=r"HTTP 500: database   on fire") as err:
            client.add(proposed_for_signature(sig, pem))
        assert not isinstance(err.value, EntryRejected)
    url = rogue(lambda _p: (400, {}, b'{"code": 400, "message": "no thanks"}'))
    with RekorClient(url) as client, pytest.raises(EntryRejected, match="no thanks"):
        client.add(proposed_for_signature(sig, pem))


def test_a_log_answering_with_another_entry(served: tuple[str, EmbeddedLog], rogue: Callable[[Answer], str],
                                            ring: LocalKeyring) -> None:
    real, log = served
    other, other_pem = signed(ring, b"someone else's")
    theirs = log.add(proposed_for_signature(other, other_pem)).entry.to_json()
    url = rogue(lambda _p: (201, {}, theirs))
    mine, pem = signed(ring, b"mine")
    with RekorClient(url) as client, pytest.raises(LogError, match="not the one proposed"):
        client.add(proposed_for_signature(mine, pem))
    del real


def test_redirects_stay_on_the_log(served: tuple[str, EmbeddedLog], rogue: Callable[[Answer], str]) -> None:
    real, log = served
    url = rogue(lambda p: (302, {"Location": real + p}, b""))
    with RekorClient(url) as client, pytest.raises(LogError, match="another origin: refused"):
        client.public_key_pem()
    hops: list[str] = []

    def same(p: str) -> tuple[int, dict[str, str], bytes]:
        hops.append(p)
        if p.startswith("/v2"):
            return 200, {}, log.public_key_pem()
        return 307, {"Location": "/v2" + p}, b""

    with RekorClient(rogue(same)) as client:
        assert client.public_key_pem() == log.public_key_pem()
    assert hops == ["/api/v1/log/publicKey", "/v2/api/v1/log/publicKey"]
    with RekorClient(rogue(lambda p: (307, {"Location": p}, b""))) as client, \
            pytest.raises(LogError, match="redirects"):
        client.info()


def test_timeouts_are_bounded(rogue: Callable[[Answer], str]) -> None:
    def slow(_p: str) -> tuple[int, dict[str, str], bytes]:
        time.sleep(2)
        return 200, {}, b"{}"

    with RekorClient(rogue(slow), timeout=httpx.Timeout(0.3, connect=1)) as client, \
            pytest.raises(LogError, match="Timeout"):
        client.info()
