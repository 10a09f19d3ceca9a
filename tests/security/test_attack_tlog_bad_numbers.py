"""Attack: numbers the log cannot hold. `logIndex=99999999999999999999` used to reach SQLite and answer
`500 internal error: OverflowError`. Every numeric query parameter and body field of every endpoint of the real
`agentfactory tlog serve` is fuzzed over HTTP: each bad value is a 4xx with a JSON reason naming the field, never
a 500, and the server keeps serving."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tlog_attack_helpers import tlog_server

from agentfactory.evidence import ArtifactSignature, proposed_for_signature
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog.log import EmbeddedLog

ENTRIES = "/api/v1/log/entries"
INT64_MAX = 2**63 - 1

# Spelled as a query string: out of range, not decimal, not ASCII, signs, spaces, floats, empty, huge.
BAD_QUERY = ["99999999999999999999", str(INT64_MAX + 1), str(2**64), "-1", "-9223372036854775809", "--5", "+5",
             "1e3", "0x10", " 5", "5 ", "1.0", "NaN", "inf", "", "٣", "²", "5\u0000", "9" * 5000, "-", "0b1", "1_000"]
# As JSON values in a body: the same, plus types that are not integers.
BAD_JSON: list[Any] = [10**20, INT64_MAX + 1, 2**64, -1, -(2**63) - 1, 1.5, 1e308, "5", "99999999999999999999", True,
                       False, None, [], {}, [1], 10**400]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real `tlog serve` over a log holding 3 entries."""
    folder = tmp_path_factory.mktemp("tlog")
    ring = LocalKeyring(tmp_path_factory.mktemp("keys"))
    ring.create()
    pem = ring.public_keys()[0].pem
    with EmbeddedLog(folder) as log:
        for i in range(3):
            digest = hashlib.sha256(b"n%d" % i).digest()
            art = ArtifactSignature.from_signature("sha256:" + digest.hex(), ring.sign_digest(digest))
            log.add(proposed_for_signature(art, pem))
    with tlog_server(folder) as url:
        yield url, 3


def refused(r: httpx.Response, field: str, *statuses: int) -> str:
    """The response is one of `statuses` (default 400) with a Rekor-style JSON error naming `field`."""
    want = statuses or (400,)
    assert r.status_code in want, (r.status_code, r.text[:300])
    doc = r.json()
    assert set(doc) == {"code", "message"} and doc["code"] == r.status_code, doc
    assert "internal error" not in doc["message"] and "Traceback" not in r.text
    assert field.lower() in doc["message"].lower(), doc["message"]
    return str(doc["message"])


def test_every_numeric_query_parameter_refuses_bad_numbers(served: tuple[str, int]) -> None:
    url, size = served
    with httpx.Client(base_url=url, timeout=10) as client:
        for raw in BAD_QUERY:
            refused(client.get(ENTRIES, params={"logIndex": raw}), "logIndex")
            refused(client.get("/api/v1/log/proof", params={"firstSize": raw, "lastSize": size}), "firstSize")
            refused(client.get("/api/v1/log/proof", params={"firstSize": 1, "lastSize": raw}), "lastSize")
        # The largest index the log's int64 can name is simply absent; a repeated parameter is ambiguous.
        assert client.get(ENTRIES, params={"logIndex": INT64_MAX}).status_code == 404
        refused(client.get(f"{ENTRIES}?logIndex=0&logIndex=99999999999999999999"), "logIndex")
        refused(client.get("/api/v1/log/proof?firstSize=1&firstSize=2&lastSize=3"), "firstSize")
        refused(client.get("/api/v1/log/proof", params={"firstSize": 1, "lastSize": INT64_MAX}), "lastSize")
        refused(client.get("/api/v1/log/proof", params={"firstSize": 0, "lastSize": size}), "firstSize")
        refused(client.get("/api/v1/log/proof", params={"firstSize": 1, "lastSize": 0}), "lastSize")
        assert client.get(ENTRIES, params={"logIndex": 2}).status_code == 200  # still serving


def test_every_numeric_body_field_refuses_bad_numbers(served: tuple[str, int]) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=10) as client:
        for value in BAD_JSON:
            body = json.dumps({"logIndexes": [value]}) if value != 10**400 else '{"logIndexes": [' + "9" * 400 + "]}"
            r = client.post(f"{ENTRIES}/retrieve", content=body, headers={"Content-Type": "application/json"})
            refused(r, "logIndexes", 400)
        # Numbers where the API wants other things, in every body: 4xx with a reason, never a 500.
        for path, doc in [(f"{ENTRIES}/retrieve", {"entryUUIDs": [10**20]}),
                          (f"{ENTRIES}/retrieve", {"logIndexes": 10**20}),
                          (f"{ENTRIES}/retrieve", {"entries": [10**20]}),
                          ("/api/v1/index/retrieve", {"hash": 10**20}),
                          ("/api/v1/index/retrieve", {"publicKey": {"format": "x509", "content": 10**20}}),
                          (ENTRIES, {"kind": "hashedrekord", "apiVersion": 10**20, "spec": {}}),
                          (ENTRIES, {"kind": "hashedrekord", "apiVersion": "0.0.1",
                                     "spec": {"data": {"hash": {"algorithm": "sha256", "value": 10**20}},
                                              "signature": {"content": 1e308, "publicKey": {"content": -1}}}}),
                          (ENTRIES, {"kind": "dsse", "apiVersion": "0.0.1",
                                     "spec": {"proposedContent": {"envelope": 10**20, "verifiers": [1.5]}}})]:
            r = client.post(path, json=doc)
            assert 400 <= r.status_code < 500, (path, doc, r.status_code, r.text[:200])
            assert "internal error" not in r.text
        for raw in ("9" * 5000, "1e999", "-1e999", "NaN", "Infinity"):
            for path in (ENTRIES, f"{ENTRIES}/retrieve", "/api/v1/index/retrieve"):
                r = client.post(path, content=b'{"logIndexes": [' + raw.encode() + b"]}",
                                headers={"Content-Type": "application/json"})
                assert 400 <= r.status_code < 500 and "internal error" not in r.text, (path, raw, r.text[:200])
        good = client.post(f"{ENTRIES}/retrieve", json={"logIndexes": [0, INT64_MAX]})
        assert good.status_code == 200 and len(good.json()) == 1  # the absent index is left out, as Rekor does


def test_the_storage_refuses_what_sqlite_cannot_hold(tmp_path: Path) -> None:
    """Below the API: the log's own look-ups answer "not found" for any Python int, not an OverflowError."""
    from agentfactory.errors import NotFoundError

    with EmbeddedLog(tmp_path) as log:
        for index in (-1, 2**63, 10**40, -(10**40)):
            with pytest.raises(NotFoundError):
                log.entry_at(index)
