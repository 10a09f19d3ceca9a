"""`agentfactory audit`: search and verify, monitor the log's history, account for our keys, check storage.

Everything runs against a real embedded log filled by the real pipeline in $AGENTFACTORY_HOME, and the
CLI is invoked in-process, as an auditor would run it, with the log's key pinned by a trust policy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import write_template
from runtime_helpers import OK_WAT, Signed, signed_store, wat_manifest
from tlog_attack_helpers import audit, pin_log

from agentfactory.evidence import ArtifactSignature, proposed_for_signature
from agentfactory.tlog.log import EmbeddedLog
from pipelines.run import Signing, run_pipeline

pytestmark = pytest.mark.toolchain


@pytest.fixture(autouse=True)
def pinned(af_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A trust policy pinning the embedded log's key, as $AGENTFACTORY_TRUST_POLICY."""
    s = signed_store(af_home)
    policy = pin_log(af_home / "tlog", s.keyring.public_keys(), tmp_path / "trust.yaml")
    monkeypatch.setenv("AGENTFACTORY_TRUST_POLICY", str(policy))
    return policy


def publish(s: Signed, root: Path, names: list[str], *, logged: bool = True) -> list[str]:
    """Publish one small agent per name through the real pipeline (logged in $AGENTFACTORY_HOME/tlog)."""
    for name in names:
        write_template(root, name, manifest=wat_manifest(name), files={"src/main.wat": OK_WAT.replace("ok", name[:2])})
    if logged:
        with EmbeddedLog() as log:
            signing = Signing(s.keyring, tlog=log, tlog_key_pem=log.public_key_pem())
            report = run_pipeline(root, s.store, run_tests=False, signing=signing)
    else:
        report = run_pipeline(root, s.store, run_tests=False, signing=Signing(s.keyring))
    assert report.ok, [t.errors for t in report.templates]  # the pipeline wrote its signing record itself
    return [s.store.resolve(n).digest for n in names]


def test_search_by_digest_key_agent_and_range(af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    one, two = publish(s, tmp_path / "t", ["one", "two"])
    by_digest = audit("search", "--digest", one, "--json")
    assert by_digest.exit_code == 0, by_digest.output
    doc = json.loads(by_digest.output)
    assert doc["failed"] == 0
    kinds = sorted(e["kind"] for e in doc["entries"])
    # the signature, the three attestations and the image signature (cosign's sign/v1)
    assert kinds == ["dsse", "dsse", "dsse", "dsse", "hashedrekord"]
    assert all(e["verified"] and not e["reason"] for e in doc["entries"])  # dsse envelopes found in the store

    key = s.keyring.public_keys()[0]
    by_key = json.loads(audit("search", "--key", key.key_id[:12], "--json").output)
    assert len(by_key["entries"]) == 10 and all(e["keyId"] == key.key_id for e in by_key["entries"])
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.pem)
    assert len(json.loads(audit("search", "--key-file", str(key_file), "--json").output)["entries"]) == 10

    by_agent = json.loads(audit("search", "--agent", "two", "--json").output)
    assert len(by_agent["entries"]) == 5 and by_agent["failed"] == 0
    assert any(e["subject"] == two for e in by_agent["entries"])

    table = audit("search", "--from", "1", "--to", "3")
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines()[1:] if line.strip()]
    assert [int(r.split()[0]) for r in rows] == [1, 2, 3] and all("✓" in r for r in rows)

    # An entry whose proof is checked against another log's key does not verify.
    other = EmbeddedLog(tmp_path / "other")
    other_key = other.folder / "log-public-key.pem"
    bad = audit("search", "--digest", one, "--tlog-key", str(other_key))
    assert bad.exit_code == 1 and "✗" in bad.output


def test_monitor_proves_consistency_and_alarms_on_a_rewritten_history(af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    publish(s, tmp_path / "t1", ["alpha"])
    state = af_home / "tlog-monitor.json"
    missing = audit("monitor")  # no state yet: not a silent first use
    assert missing.exit_code == 1 and "--init" in missing.output
    first = audit("monitor", "--init")
    assert first.exit_code == 0 and "trusting the current checkpoint" in first.output
    assert json.loads(state.read_text())["size"] == 5
    publish(s, tmp_path / "t2", ["beta"])
    second = audit("monitor", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.output)["added"] == 5
    kept = state.read_bytes()

    # Another history of a larger size, signed by the same log key: the checkpoint verifies, the proof cannot.
    tlog = af_home / "tlog"
    forged = tmp_path / "forged"
    forged.mkdir()
    shutil.copy(tlog / "log-key.pem", forged / "log-key.pem")
    with EmbeddedLog(forged) as log:
        for i in range(12):  # the genuine history has 10 (two agents, five entries each)
            digest = hashlib.sha256(b"x%d" % i).digest()
            sig = s.keyring.sign_digest(digest)
            art = ArtifactSignature.from_signature("sha256:" + digest.hex(), sig)
            log.add(proposed_for_signature(art, s.keyring.public_keys()[0].pem))
    shutil.move(tlog, tmp_path / "real")
    shutil.copytree(forged, tlog)
    alarm = audit("monitor")
    assert alarm.exit_code == 1 and "ALARM: the log forked or rewrote its history" in alarm.output
    assert state.read_bytes() == kept

    # The same size with another root.
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(forged / "log-key.pem", same / "log-key.pem")
    with EmbeddedLog(same) as log:
        for i in range(10):
            digest = hashlib.sha256(b"y%d" % i).digest()
            art = ArtifactSignature.from_signature("sha256:" + digest.hex(), s.keyring.sign_digest(digest))
            log.add(proposed_for_signature(art, s.keyring.public_keys()[0].pem))
    shutil.rmtree(tlog)
    shutil.copytree(same, tlog)
    fork = audit("monitor", "--json")
    assert fork.exit_code == 1
    assert "two different roots for size 10" in json.loads(fork.output)["message"]
    assert state.read_bytes() == kept

    # A whole new log, with its own key: the recorded checkpoint no longer verifies.
    shutil.rmtree(tlog)
    EmbeddedLog(tlog).close()
    rekeyed = audit("monitor")
    assert rekeyed.exit_code == 1 and "ALARM" in rekeyed.output and "no signature by this log key" in rekeyed.output
    assert state.read_bytes() == kept

    # The genuine log is still consistent with the recorded state.
    shutil.rmtree(tlog)
    shutil.move(tmp_path / "real", tlog)
    assert audit("monitor").exit_code == 0


def test_keys_flags_unaccounted_and_unlogged_signatures(af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    publish(s, tmp_path / "t1", ["gamma"])
    clean = audit("keys")
    assert clean.exit_code == 0, clean.output
    assert "accounted for" in clean.output

    digest = hashlib.sha256(b"made outside the pipeline").digest()
    key = s.keyring.public_keys()[0]
    art = ArtifactSignature.from_signature("sha256:" + digest.hex(), s.keyring.sign_digest(digest))
    with EmbeddedLog() as log:
        stolen = log.add(proposed_for_signature(art, key.pem)).entry
    flagged = audit("keys", "--json")
    assert flagged.exit_code == 1
    report = json.loads(flagged.output)
    assert len(report["unaccounted"]) == 1 and not report["unlogged"]
    assert "UNACCOUNTED: a signature by our key" in report["unaccounted"][0]
    assert f"log entry {stolen.log_index} " in report["unaccounted"][0] and digest.hex() in report["unaccounted"][0]

    publish(s, tmp_path / "t2", ["delta"], logged=False)
    unlogged = audit("keys")
    assert unlogged.exit_code == 1
    assert "UNLOGGED: the signature of delta:1.0.0" in unlogged.output
    assert unlogged.output.count("UNLOGGED: an attestation of delta") == 4  # with the image signature


def test_verify_names_a_tampered_row(af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    publish(s, tmp_path / "t", ["eps"])
    assert audit("monitor", "--init").exit_code == 0
    ok = audit("verify")
    assert ok.exit_code == 0, ok.output
    db = sqlite3.connect(af_home / "tlog" / "tree.db")
    db.execute("UPDATE leaves SET body = ? WHERE idx = 1", (b'{"kind":"forged"}',))
    db.commit()
    db.close()
    bad = audit("verify")
    assert bad.exit_code == 1
    assert "leaves(idx=1)" in bad.output
    assert audit("verify", "--tlog", "http://127.0.0.1:1", "--tlog-key", str(af_home / "tlog" / "log-public-key.pem")
                 ).exit_code == 2
