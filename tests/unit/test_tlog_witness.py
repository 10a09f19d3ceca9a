"""The monitor's state as a witness (`tlog.witness`) and the pipeline's signing record (`tlog.signing_record`),
on a real embedded log and real files."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.errors import ConfigError, InputError
from agentfactory.evidence import ArtifactSignature, proposed_for_signature
from agentfactory.intoto import make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog.audit import monitor
from agentfactory.tlog.entries import LogEntry
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.signing_record import load_record, record_signing
from agentfactory.tlog.witness import MissingState, check_witnessed, load_state, refuse_inside


def add(log: EmbeddedLog, ring: LocalKeyring, pem: bytes, n: int) -> LogEntry:
    digest = hashlib.sha256(b"w%d" % n).digest()
    art = ArtifactSignature.from_signature("sha256:" + digest.hex(), ring.sign_digest(digest))
    return log.add(proposed_for_signature(art, pem)).entry


def test_a_missing_state_is_an_alarm_unless_init(tmp_path: Path, ring: LocalKeyring, pem: bytes) -> None:
    state = tmp_path / "state.json"
    with EmbeddedLog(tmp_path / "log") as log:
        add(log, ring, pem, 0)
        key = log.key.public_key
        with pytest.raises(MissingState, match="--init"):
            load_state(state, key)
        result = monitor(log, key, state)
        assert not result.ok and "--init" in result.message and not state.exists()
        assert monitor(log, key, state, init=True).ok and state.exists()
        add(log, ring, pem, 1)
        again = monitor(log, key, state, init=True)  # --init never resets: it checks like any run
        assert again.ok and again.old_size == 1 and again.new_size == 2
        with pytest.raises(ConfigError, match="outside the log's folder"):
            monitor(log, key, tmp_path / "log" / "state.json", init=True)
    refuse_inside(tmp_path / "elsewhere.json", tmp_path / "log")


def test_check_witnessed(tmp_path: Path, ring: LocalKeyring, pem: bytes) -> None:
    state = tmp_path / "state.json"
    with EmbeddedLog(tmp_path / "log") as log, EmbeddedLog(tmp_path / "other") as other:
        key = log.key.public_key
        early = add(log, ring, pem, 0)  # checkpoint of size 1
        middle = add(log, ring, pem, 1)  # size 2
        seen = add(log, ring, pem, 2)  # size 3
        assert monitor(log, key, state, init=True).ok
        later = add(log, ring, pem, 3)  # size 4: the monitor has not seen it
        witness = load_state(state, key)
        # The monitor proved the root of every size up to its checkpoint (the embedded log answers roots).
        assert witness.size == 3 and set(witness.history) == {1, 2, 3}
        for entry in (early, middle, seen):
            check_witnessed(entry, witness)  # offline
            check_witnessed(entry, witness, log)
        # A size the monitor did not prove (a remote log, or beyond one run's window): only with a proof.
        doc = json.loads(state.read_text())
        doc["history"] = [h for h in doc["history"] if h["size"] != 2]
        state.write_text(json.dumps(doc))
        partial = load_state(state, key)
        with pytest.raises(InputError, match="consistency proof"):
            check_witnessed(middle, partial)
        check_witnessed(middle, partial, log)
        with pytest.raises(InputError, match="newer than the monitor's latest"):
            check_witnessed(later, witness, log)
        with pytest.raises(InputError, match="the monitor watches"):
            check_witnessed(add(other, ring, pem, 0), witness, log)
        assert monitor(log, key, state).ok
        witness = load_state(state, key)
        assert set(witness.history) == {1, 3, 4}
        check_witnessed(later, witness)
    # A state edited to another root for a size is refused as a split view, not believed.
    doc = json.loads(state.read_text())
    for h in doc["history"]:
        if h["size"] == 3:
            h["rootHash"] = "00" * 32
    state.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="split view"):
        check_witnessed(seen, load_state(state, key))


def test_signing_record_lines_chain_and_concurrency(tmp_path: Path, ring: LocalKeyring) -> None:
    path = tmp_path / "record.jsonl"
    with pytest.raises(InputError, match="no signing record"):
        load_record(path)
    digest = "sha256:" + "ab" * 32
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("a", digest, "https://x/p", {}), ring)
    key_id = ring.public_keys()[0].key_id

    def worker(i: int) -> None:
        for j in range(10):
            record_signing("oci-layout:/s", f"a{i}", f"1.0.{j}", digest, key_id, [env], path)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = load_record(path)
    assert not record.problems and len(record.lines) == 80
    assert len(record.signature(key_id, digest)) == 40
    assert len(record.attestation(key_id, hashlib.sha256(env.payload).hexdigest())) == 40
    record_signing("oci-layout:/s", "a0", "1.0.0", digest, None, [env], path)  # an attestation signed later
    assert [x.kind for x in load_record(path).lines[80:]] == ["dsse"]
    lines = path.read_bytes().splitlines(keepends=True)
    edited = json.loads(lines[5])
    edited["digest"] = "sha256:" + "cd" * 32
    path.write_bytes(b"".join(lines[:5]) + json.dumps(edited).encode() + b"\n" + b"".join(lines[6:]))
    assert any(f"{path}:7: the hash chain breaks" in p for p in load_record(path).problems)
