"""The shortcuts that make an add cheap give exactly what the long ways give: canonical JSON through the C
encoder, SET payloads, canonical bodies and entry answers written directly, index keys from the parsed entry,
inclusion proofs from a batch's nodes in memory, several entries committed in one call, and the server's own
POST route (body cap, error bodies, status codes)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlite_faults import CommitFails

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.intoto import make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog import merkle
from agentfactory.tlog.base import EntryRejected
from agentfactory.tlog.entries import (
    MAX_ENTRY_BYTES,
    InclusionProof,
    LogEntry,
    _jcs,
    canonical,
    load_public_key,
    parse_proposed_entry,
    set_payload,
)
from agentfactory.tlog.log import MAX_BATCH, EmbeddedLog, index_keys
from agentfactory.tlog.server import create_app
from agentfactory.tlog.storage import TreeStorage

ENTRIES = "/api/v1/log/entries"
rfc8785 = pytest.importorskip("rfc8785")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hashedrekord(ring: LocalKeyring, pem: bytes, name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).digest()
    sig = ring.sign_digest(digest).signature
    return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
        "signature": {"content": b64(sig), "publicKey": {"content": b64(pem)}}}}


def dsse(ring: LocalKeyring, pem: bytes, name: str) -> dict[str, Any]:
    statement = make_statement(name, "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                               "https://slsa.dev/provenance/v1", {"x": 1})
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, ring)
    return {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "proposedContent": {"envelope": envelope.to_json().decode(), "verifiers": [b64(pem)]}}}


# --- canonical JSON and the SET payload ---------------------------------------------------------------------


def _random_text(rng: random.Random) -> str:
    alphabet = "az\"\\/\n\t\x00\x1f\x7fé\u2028\u20ac\ud7ff\ue000\uffff\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))


def _random_doc(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(7 if depth < 4 else 4)
    if pick == 0:
        return _random_text(rng)
    if pick == 1:
        return rng.choice([0, -1, 2**53 - 1, -(2**53 - 1), 123456789])
    if pick == 2:
        return rng.choice([True, False, None])
    if pick == 3:
        return rng.randrange(-1000, 1000)
    if pick in (4, 5):
        return {_random_text(rng): _random_doc(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_random_doc(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_canonical_matches_rfc8785_on_random_documents() -> None:
    """Keys above U+D800 (where UTF-16 order is not code-point order) take the slow path; both must agree."""
    rng = random.Random(6962)
    for _ in range(2000):
        doc = _random_doc(rng)
        assert canonical(doc) == rfc8785.dumps(doc) == _jcs(doc).encode()


def test_canonical_orders_keys_by_utf16_where_code_points_disagree() -> None:
    doc = {"\ue000": 1, "\U0001f600": 2, "a": 3}  # UTF-16: a < U+1F600 (surrogates D83D..) < U+E000
    assert canonical(doc) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()


@pytest.mark.parametrize("doc", [{"a": 1.5}, {"a": [2**53]}, {"a": {"b": -(2**53)}}, {1: "x"}, {"a": {2.0}}])
def test_canonical_still_refuses_what_json_cannot_carry_exactly(doc: Any) -> None:
    with pytest.raises(ValueError):
        canonical(doc)


def test_set_payload_written_directly_is_the_canonical_json() -> None:
    rng = random.Random(9162)
    for _ in range(500):
        body = b64(rng.randbytes(rng.randrange(200)))
        args = (body, rng.randrange(2**53), hashlib.sha256(body.encode()).hexdigest(), rng.randrange(2**53))
        expected = canonical({"body": args[0], "integratedTime": args[1], "logID": args[2], "logIndex": args[3]})
        assert set_payload(*args) == expected
    odd = ("a\"b", -5, "é", 2**53 - 1)  # needs escaping or is not base64: the canonical path answers
    assert set_payload(*odd) == canonical({"body": odd[0], "integratedTime": odd[1], "logID": odd[2],
                                           "logIndex": odd[3]})
    with pytest.raises(ValueError):
        set_payload("Ym9keQ==", 2**53, "ab" * 32, 0)


def test_canonical_bodies_written_directly_are_the_canonical_json(ring: LocalKeyring, pem: bytes) -> None:
    """Every kind, RSA and ECDSA keys, a key sent in another PEM spelling (re-encoded): the bytes the log stores
    and hashes are canonical(body()) whichever way they are made."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    docs = [hashedrekord(ring, pem, f"hr {i}") for i in range(20)] + [dsse(ring, pem, "d")]
    for i in range(20):
        digest = hashlib.sha256(f"ec {i}".encode()).digest()
        sig = ec_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        docs.append({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            "signature": {"content": b64(sig), "publicKey": {"content": b64(ec_pem.replace(b"\n", b"\r\n"))}}}})
    for doc in docs:
        entry = parse_proposed_entry(doc, "doc")
        assert entry.canonical_body() == canonical(entry.body()) == rfc8785.dumps(entry.body())


def _generic_json(entry: LogEntry, tree_id: str) -> bytes:
    return json.dumps(entry.to_dict(tree_id), sort_keys=True, separators=(",", ":")).encode()


def test_entry_answers_written_directly_are_the_generic_json() -> None:
    """Random entries, proofs of every length (none included), checkpoints with the characters JSON escapes,
    with and without a tree id; and entries whose strings are not base64 or hex (made by hand: the log never
    makes them), where the generic path answers: the same bytes every time."""
    rng = random.Random(2025)
    for k in range(600):
        hashes = tuple(rng.randbytes(32).hex() for _ in range(rng.randrange(5 if k % 3 else 64)))
        checkpoint = f"origin - {k}\n{k}\n{b64(rng.randbytes(32))}\n\n\u2014 origin {b64(rng.randbytes(9))}\n" + \
            _random_text(rng)
        index = rng.randrange(2**53)
        shard_index = index if k % 2 else rng.randrange(index + 1)  # a sharded log's proof counts in its shard
        proof = None if k % 50 == 0 else InclusionProof(shard_index, rng.randbytes(32).hex(), shard_index + 1 + k,
                                                        hashes, checkpoint)
        entry = LogEntry(rng.randbytes(rng.randrange(1, 900)), rng.randrange(2**53), rng.randbytes(32).hex(), index,
                         rng.randbytes(rng.randrange(1, 104)), proof)
        for tree_id in ("", f"{rng.randrange(2**63):016x}"):
            assert entry.to_json(tree_id) == _generic_json(entry, tree_id)
            json.loads(entry.to_json(tree_id))
    base = LogEntry(b"body", 1, "ab" * 32, 0, b"set", InclusionProof(0, "cd" * 32, 1, (), "note\n"))
    odd = [LogEntry(base.body, 1, 'a"b', 0, b"set", base.inclusion_proof),
           LogEntry(base.body, 1, "ab" * 32, 0, b"set", InclusionProof(0, "x\\", 1, ("é",), "n")),
           LogEntry(base.body, True, "ab" * 32, 0, b"set", base.inclusion_proof)]
    for entry in (base, *odd):
        assert entry.to_json("00000000000004d2") == _generic_json(entry, "00000000000004d2")
    with pytest.raises(ValueError, match="16 hex digits"):
        base.to_json("short")


def test_a_parsed_key_is_cached_but_a_refusal_names_each_caller(pem: bytes) -> None:
    assert load_public_key(pem, "one") is load_public_key(pem, "two")
    for where in ("first place", "second place"):
        with pytest.raises(Exception, match=where):
            load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", where)


# --- the log: index keys, proofs from memory, several entries per commit -----------------------------------


def test_index_keys_from_the_parsed_entry_are_those_of_its_body(tmp_path: Path, ring: LocalKeyring,
                                                                 pem: bytes) -> None:
    with EmbeddedLog(tmp_path) as log:
        for doc in (hashedrekord(ring, pem, "hr"), dsse(ring, pem, "agent-with-subject")):
            pending = log.prepare(doc)
            assert pending.keys == index_keys(pending.body, pending.extra)
            assert len(pending.keys) >= 2


@pytest.mark.parametrize("before", [0, 1, 5, 8, 13, 64])
def test_batch_proofs_from_memory_need_no_reads_and_equal_stored_ones(tmp_path: Path, before: int) -> None:
    path = tmp_path / "tree.db"
    with TreeStorage(path) as store:
        for i in range(before):
            store.append(b"old %d" % i, 1)
        result = store.append_batch([(b"new %d" % i, 1, None) for i in range(11)])
        indices = [p.index for p in result.placed]
        stored = store.inclusion_proofs(indices, result.size)
    # Closed: any read would raise, so these come from the batch's nodes alone.
    assert store.inclusion_proofs(indices, result.size, known=result.nodes) == stored
    leaves = [merkle.leaf_hash(b"old %d" % i) for i in range(before)]
    leaves += [merkle.leaf_hash(b"new %d" % i) for i in range(11)]
    for index, path_ in zip(indices, stored, strict=True):
        merkle.verify_inclusion(leaves[index], index, result.size, path_, merkle.root_from_leaves(leaves))


def test_one_commit_call_carries_many_entries_in_order_across_batches(tmp_path: Path, ring: LocalKeyring,
                                                                      pem: bytes) -> None:
    with EmbeddedLog(tmp_path) as log:
        pendings = [log.prepare(hashedrekord(ring, pem, f"many {i}")) for i in range(MAX_BATCH + 10)]
        pendings.append(log.prepare(hashedrekord(ring, pem, "many 3")))  # a duplicate within the call
        log.commit(pendings)
        answers = [log.answer(p) for p in pendings]
        assert [a.entry.log_index for a in answers[:-1]] == list(range(MAX_BATCH + 10))
        assert answers[-1].existed and answers[-1].entry.log_index == 3
        assert log.commits == 2  # MAX_BATCH, then the rest
        for a in answers:
            proof = a.entry.inclusion_proof
            assert proof is not None
            merkle.verify_inclusion(merkle.leaf_hash(a.entry.body), a.entry.log_index, proof.tree_size,
                                    [bytes.fromhex(h) for h in proof.hashes], bytes.fromhex(proof.root_hash))
        assert log.check(full=True) == []
        with pytest.raises(EntryRejected):
            log.prepare({"kind": "hashedrekord"})


# --- the server's own POST route ----------------------------------------------------------------------------


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[httpx.Client, EmbeddedLog]]:
    log = EmbeddedLog(tmp_path / "tlog")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(log), log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the log server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, log
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        log.close()


def test_post_answers_201_then_409_with_rekor_headers(served: tuple[httpx.Client, EmbeddedLog],
                                                      ring: LocalKeyring, pem: bytes) -> None:
    client, log = served
    doc = hashedrekord(ring, pem, "posted")
    first = client.post(ENTRIES, json=doc)
    assert first.status_code == 201 and first.headers["content-type"] == "application/json"
    ((entry_id, entry),) = first.json().items()
    assert first.headers["etag"] == entry_id and first.headers["location"] == f"{ENTRIES}/{entry_id}"
    assert entry["logIndex"] == 0 and entry["verification"]["inclusionProof"]["treeSize"] == 1
    again = client.post(ENTRIES, json=doc)
    assert again.status_code == 409 and again.headers["location"] == f"{ENTRIES}/{entry_id}"
    assert again.json() == {"code": 409, "message": "an equivalent entry already exists in the transparency log "
                                                    f"with UUID {entry_id}"}
    assert log.info().tree_size == 1


def test_post_refusals_are_rekor_json_errors(served: tuple[httpx.Client, EmbeddedLog]) -> None:
    client, log = served
    bad_json = client.post(ENTRIES, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["code"] == 400
    assert "not JSON" in bad_json.json()["message"]
    wrong_kind = client.post(ENTRIES, json={"apiVersion": "0.0.1", "kind": "rpm", "spec": {}})
    assert wrong_kind.status_code == 400 and "unknown kind" in wrong_kind.json()["message"]

    def chunks() -> Iterator[bytes]:  # no content-length: the cap must hold while streaming
        for _ in range(MAX_ENTRY_BYTES // 65536 + 2):
            yield b" " * 65536

    streamed = client.post(ENTRIES, content=chunks())
    assert streamed.status_code == 413 and streamed.json() == {
        "code": 413, "message": f"the proposed entry is larger than {MAX_ENTRY_BYTES} bytes"}
    assert log.info().tree_size == 0
    assert client.get(ENTRIES + "?logIndex=x").json()["code"] == 400  # other routes: FastAPI, same error shape
    assert json.loads(client.put(ENTRIES).content)["code"] == 405


def _post(app: Any, doc: dict[str, Any], answers: list[tuple[int, dict[str, Any]]]) -> Any:
    """One POST through the ASGI app, its body already in: what uvicorn hands over for a request that arrived."""
    body = json.dumps(doc).encode()
    scope = {"type": "http", "method": "POST", "path": ENTRIES, "root_path": "",
             "headers": [(b"content-length", str(len(body)).encode())]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            answers.append((sent[0]["status"], json.loads(message["body"])))

    return app(scope, receive, send)


@pytest.mark.parametrize("together", [1, 4, 16])
def test_entries_that_arrive_together_share_one_commit(tmp_path: Path, ring: LocalKeyring, pem: bytes,
                                                       together: int) -> None:
    """Group commit over HTTP: requests the event loop holds at once are all checked before the commit starts,
    so they share one transaction and one fsync, where the first used to go alone. Each still gets its own
    201 only after that commit, with a proof in the tree that holds all of them."""
    import asyncio

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log)
        answers: list[tuple[int, dict[str, Any]]] = []

        async def burst() -> None:
            await asyncio.gather(*(_post(app, hashedrekord(ring, pem, f"together {i}"), answers)
                                   for i in range(together)))

        asyncio.run(burst())
        assert [status for status, _ in answers] == [201] * together
        assert (log.commits, log.committed) == (1, together)
        for _, doc in answers:
            ((_, entry),) = doc.items()
            assert entry["verification"]["inclusionProof"]["treeSize"] == together


def test_a_batch_that_cannot_reach_the_commit_thread_is_refused_not_left_waiting(tmp_path: Path, ring: LocalKeyring,
                                                                                 pem: bytes) -> None:
    """The commit starts from a loop callback: if handing it to the thread fails (its executor shut down), each
    request of the batch is answered 500 with the reason and nothing is logged, and a later request is not left
    waiting behind a commit that never started."""
    import asyncio

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log)
        answers: list[tuple[int, dict[str, Any]]] = []

        async def refused() -> None:
            app._committer()._pool.shutdown()  # what a stopping server's executor does
            for round_ in range(2):
                await asyncio.wait_for(asyncio.gather(
                    *(_post(app, hashedrekord(ring, pem, f"refused {round_} {i}"), answers) for i in range(3)),
                    return_exceptions=True), timeout=60)  # a guard against hanging, not a speed limit

        asyncio.run(refused())
        assert [status for status, _ in answers] == [500] * 6
        assert all(doc == {"code": 500, "message": "internal error: RuntimeError"} for _, doc in answers)
        assert log.info().tree_size == 0 and log.commits == 0


def test_the_201_is_the_answer_made_during_the_fsync_and_only_after_it(tmp_path: Path, ring: LocalKeyring,
                                                                        pem: bytes) -> None:
    """The server makes a batch's answers (proofs, SETs, bodies) on its event loop as soon as the commit thread has
    the batch in its transaction, so that the work overlaps the fsync, and sends them once the commit returned:
    each 201 is the body made early (whether the loop got to it before the fsync ended is the scheduler's
    business), handed out only when its entry is committed, and it verifies; nothing made early is kept."""
    import asyncio
    import sqlite3

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log)
        answers: list[tuple[int, dict[str, Any]]] = []
        made: list[bytes] = []
        handed_out: list[bool] = []
        real_answer = log.answer

        def answer(pending: Any) -> Any:
            with sqlite3.connect(tmp_path / "tree.db") as db:  # another connection sees only what is committed
                size = db.execute("SELECT count(*) FROM leaves").fetchone()[0]
            added = real_answer(pending)
            handed_out.append(added.entry.log_index < size)
            return added

        log.answer = answer  # type: ignore[method-assign]
        kept: list[int] = []

        async def burst() -> None:
            committer = app._committer()
            render = committer._render
            assert render is not None

            def rendered(added: Any) -> bytes:
                made.append(render(added))
                return made[-1]

            committer._render = rendered
            await asyncio.gather(*(_post(app, hashedrekord(ring, pem, f"early {i}"), answers) for i in range(4)))
            kept.append(len(committer._bodies))

        asyncio.run(burst())
        assert kept == [0] and handed_out == [True] * 4 and len(made) == 4
        assert [status for status, _ in answers] == [201] * 4
        assert sorted(json.dumps(doc, separators=(",", ":")).encode() for _, doc in answers) == sorted(made)
        for _, doc in answers:
            ((uuid, entry),) = doc.items()
            stored = log.entry(uuid[-64:])
            assert entry["logIndex"] == stored.log_index and entry["integratedTime"] == stored.integrated_time
            proof = entry["verification"]["inclusionProof"]
            assert proof["treeSize"] == 4 and proof["rootHash"] == log.info().root_hash
            merkle.verify_inclusion(merkle.leaf_hash(stored.body), stored.log_index, 4,
                                    [bytes.fromhex(h) for h in proof["hashes"]], bytes.fromhex(proof["rootHash"]))


def test_the_same_entry_twice_in_one_batch_gets_one_201_and_one_409(tmp_path: Path, ring: LocalKeyring,
                                                                      pem: bytes) -> None:
    """A client posting one entry twice at once, so that both land in the batch whose answers are made during the
    fsync: the log holds it once, one request gets the 201 made early and the other a 409 naming the same entry
    (never a second SET for a second index)."""
    import asyncio

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log)
        answers: list[tuple[int, dict[str, Any]]] = []
        twice = hashedrekord(ring, pem, "posted twice at once")

        async def burst() -> None:
            await asyncio.gather(_post(app, twice, answers), _post(app, twice, answers),
                                 _post(app, hashedrekord(ring, pem, "beside it"), answers))

        asyncio.run(burst())
        assert sorted(status for status, _ in answers) == [201, 201, 409]
        assert log.info().tree_size == 2 and (log.commits, log.committed) == (1, 2)
        created = [doc for status, doc in answers if status == 201]
        (conflict,) = [doc for status, doc in answers if status == 409]
        uuids = {uuid for doc in created for uuid in doc}
        assert any(uuid in conflict["message"] for uuid in uuids)
        assert sorted(entry["logIndex"] for doc in created for entry in doc.values()) == [0, 1]


def test_a_commit_that_fails_after_the_early_answers_sends_none_of_them(tmp_path: Path, ring: LocalKeyring,
                                                                       pem: bytes) -> None:
    """COMMIT fails (a full disk, an I/O error) after the loop made the batch's answers: every request of the
    batch is answered 500, none 201, nothing is logged, and the next request is logged and answered."""
    import asyncio

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log)
        answers: list[tuple[int, dict[str, Any]]] = []
        real = log._writer._db
        made: list[Any] = []
        real_early = log.answer_early

        def answer_early(batch: list[Any]) -> None:
            real_early(batch)
            made.extend(p.early for p in batch)

        log.answer_early = answer_early  # type: ignore[method-assign]

        kept: list[int] = []

        async def burst(n: int, name: str) -> list[Any]:
            out = await asyncio.gather(*(_post(app, hashedrekord(ring, pem, f"{name} {i}"), answers)
                                         for i in range(n)), return_exceptions=True)
            kept.append(len(app._committer()._bodies))
            return out

        log._writer._db = CommitFails(real)  # type: ignore[assignment]
        raised = asyncio.run(burst(3, "lost"))
        log._writer._db = real
        assert len(made) == 3 and all(m is not None for m in made)  # the answers were made ...
        assert [status for status, _ in answers] == [500] * 3  # ... and none was sent
        assert all(doc == {"code": 500, "message": "internal error: StoreError"} for _, doc in answers)
        assert all(type(r).__name__ == "StoreError" for r in raised)  # raised on, for the server's own log
        assert log.info().tree_size == 0 and kept == [0]
        answers.clear()
        asyncio.run(burst(1, "next"))
        assert [status for status, _ in answers] == [201] and log.info().tree_size == 1


async def _one_at_a_time(app: Any, docs: list[dict[str, Any]], answers: list[tuple[int, dict[str, Any]]]) -> None:
    """Post `docs` as clients that arrive one after another: each request is read, checked and queued (and, with
    nothing to wait for, its commit under way in the thread) before the next one arrives."""
    import asyncio

    tasks = []
    for doc in docs:
        tasks.append(asyncio.ensure_future(_post(app, doc, answers)))
        await asyncio.sleep(0.005)  # the order of arrival (all four well within the 0.1 s wait), nothing timed
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)  # a guard against hanging


@pytest.mark.parametrize("wait_s", [0.1, 0.0])
def test_a_commit_waits_for_the_entries_the_last_batch_predicts(tmp_path: Path, ring: LocalKeyring, pem: bytes,
                                                               wait_s: float) -> None:
    """Clients just answered are about to send again: after a batch of 4, the next commit waits until 4 entries
    are in (or its wait ends), so 4 clients that come back one after another share one fsync, where each used to
    start a commit of its own. With the wait set to 0 (`--batch-wait-ms 0`) it never waits: the old behaviour."""
    import asyncio

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log, batch_wait_s=wait_s)
        answers: list[tuple[int, dict[str, Any]]] = []
        later: list[tuple[int, dict[str, Any]]] = []

        async def run() -> None:  # one event loop: the server's, whose committer remembers the last batch
            await asyncio.gather(*(_post(app, hashedrekord(ring, pem, f"first {i}"), answers) for i in range(4)))
            assert (log.commits, log.committed) == (1, 4)
            await _one_at_a_time(app, [hashedrekord(ring, pem, f"later {i}") for i in range(4)], later)

        asyncio.run(run())
        assert [status for status, _ in later] == [201] * 4
        sizes = {next(iter(doc.values()))["verification"]["inclusionProof"]["treeSize"] for _, doc in later}
        if wait_s:
            assert (log.commits, sizes) == (2, {8})  # one commit for the four, each proved in the tree of 8
        else:
            assert log.commits > 2 and min(sizes) < 8  # the first came alone and was committed alone


def test_a_commit_waits_no_longer_than_its_wait_and_then_expects_less(tmp_path: Path, ring: LocalKeyring,
                                                                      pem: bytes) -> None:
    """The clients that made a batch of 4 stop: the one entry that comes is committed once the wait is over
    (never left waiting for entries that are not coming), alone, and the batch after it expects one entry, so a
    single client never waits."""
    import asyncio

    with EmbeddedLog(tmp_path) as log:
        app = create_app(log, batch_wait_s=0.05)
        answers: list[tuple[int, dict[str, Any]]] = []

        async def run() -> None:
            await asyncio.gather(*(_post(app, hashedrekord(ring, pem, f"four {i}"), answers) for i in range(4)))
            committer = app._committer()
            assert committer._expect == 4
            await asyncio.wait_for(_post(app, hashedrekord(ring, pem, "alone"), answers), timeout=60)
            assert (log.commits, committer._expect) == (2, 1)
            for i in range(3):  # one client: each entry is all the next batch expects, so no wait is armed
                post = asyncio.ensure_future(_post(app, hashedrekord(ring, pem, f"single {i}"), answers))
                await asyncio.sleep(0)
                assert committer._timer is None
                await asyncio.wait_for(post, timeout=60)

        asyncio.run(run())
        assert [status for status, _ in answers] == [201] * 8
        assert (log.commits, log.committed) == (5, 8)


@pytest.mark.parametrize("value", ["-1", "100.5", "nan", "inf"])
def test_serve_refuses_a_batch_wait_out_of_range(tmp_path: Path, value: str) -> None:
    from click.testing import CliRunner

    from agentfactory.cli import cli

    result = CliRunner().invoke(cli, ["tlog", "serve", "--dir", str(tmp_path / "log"), "--listen", "127.0.0.1:0",
                                      "--batch-wait-ms", value])
    assert result.exit_code == 2, result.output
    assert "--batch-wait-ms" in result.output and "from 0 to 100" in result.output


@pytest.mark.parametrize("seconds", [-0.001, 0.2, float("nan"), float("inf")])
def test_the_app_refuses_a_batch_wait_out_of_range(tmp_path: Path, seconds: float) -> None:
    """A library caller gets the same check as the flag: a NaN or endless wait would hold every entry."""
    from agentfactory.errors import ConfigError

    with EmbeddedLog(tmp_path) as log, pytest.raises(ConfigError, match="batch_wait_s .*from 0 to 100"):
        create_app(log, batch_wait_s=seconds)
