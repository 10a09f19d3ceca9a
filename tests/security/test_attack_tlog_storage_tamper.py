"""Attack: edit the log's storage to hide a thief's entry (write access to `tree.db`, no log key needed).

Before: deleting `search_index` rows hid an entry from every audit command while `audit verify`, `tlog info
--check` and `audit monitor` stayed clean; truncating the tree's tail after the thief's entry (and deleting the
monitor's state, whose absence made the next run trust on first use, exit 0) left every check green while the
thief's saved proof still verified — a split view nobody compared.

Now: the index is compared with the leaves (`audit verify`, `tlog info --check`, `audit monitor` for what it
sees added, and `audit keys`/`search` read the leaves too); the log remembers the largest checkpoint it signed;
the monitor's state lives outside the log's folder and a missing one is an alarm unless `--init`; `audit verify`
checks the tree against the monitor's checkpoint; and `witness.check_witnessed` refuses a record whose checkpoint
is not in the history the monitor saw. The thief logs through the real `tlog serve` over HTTP; the checks are
the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from runtime_helpers import Signed
from tlog_attack_helpers import audit, keys_report, pin_log, publish_logged, tlog_server

from agentfactory.cli import cli
from agentfactory.errors import InputError
from agentfactory.evidence import ArtifactSignature, collect, proposed_for_signature
from agentfactory.fetchverify import verify_stored
from agentfactory.tlog import note
from agentfactory.tlog.bundle import check_record, parse_record
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.witness import check_witnessed, load_state
from agentfactory.trust import load_trust_policy

pytestmark = pytest.mark.toolchain
GENUINE = 5  # an agent's entries: signature, SBOM, provenance, scan, image signature (for cosign)
THIEF = GENUINE  # the thief's entry comes next


@pytest.fixture
def world(af_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Signed:
    """An honest agent logged (entries 0-4), the key pinned by policy, the monitor initialised at size 5."""
    s = publish_logged(af_home, tmp_path / "t", ["honest"])
    policy = pin_log(af_home / "tlog", s.keyring.public_keys(), tmp_path / "trust.yaml")
    monkeypatch.setenv("AGENTFACTORY_TRUST_POLICY", str(policy))
    assert audit("monitor", "--init").exit_code == 0
    return s


def thief_logs(s: Signed, folder: Path) -> bytes:
    """A stolen-key signature over the thief's artifact, logged over HTTP; returns the log's answer (the proof)."""
    digest = hashlib.sha256(b"the thief's module").digest()
    art = ArtifactSignature.from_signature("sha256:" + digest.hex(), s.keyring.sign_digest(digest))
    with tlog_server(folder) as url:
        r = httpx.post(url + "/api/v1/log/entries", json=proposed_for_signature(art, s.keyring.public_keys()[0].pem))
    assert r.status_code == 201 and r.json()[next(iter(r.json()))]["logIndex"] == THIEF
    return r.content


def tlog_check() -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["tlog", "info", "--check"], catch_exceptions=False)
    return result.exit_code, result.output


def truncate(db_path: Path, size: int, *, thorough: bool) -> None:
    """Cut the tree back to `size` entries, consistently: leaves, the nodes above them, their index rows and,
    when `thorough`, the log's record of the largest checkpoint it signed."""
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM leaves WHERE idx >= ?", (size,))
        db.execute("DELETE FROM nodes WHERE (idx + 1) * (1 << level) > ?", (size,))
        db.execute("DELETE FROM search_index WHERE idx >= ?", (size,))
        db.execute("UPDATE search_index_size SET size = ?", (size,))
        if thorough:
            db.execute("DELETE FROM latest_checkpoint")
    db.close()


def test_deleted_index_rows_are_found_by_every_check(af_home: Path, world: Signed) -> None:
    thief_logs(world, af_home / "tlog")
    with sqlite3.connect(af_home / "tlog" / "tree.db") as db:
        assert db.execute("DELETE FROM search_index WHERE idx = ?", (THIEF,)).rowcount >= 2
    db.close()

    verify = audit("verify")
    assert verify.exit_code == 1 and f"search_index: entry {THIEF} cannot be found" in verify.output
    code, out = tlog_check()
    assert code == 1 and f"search_index: entry {THIEF}" in out
    monitor = audit("monitor")
    assert monitor.exit_code == 1 and "search index hides entries" in monitor.output
    code, report = keys_report()  # the audit reads the leaves: the hidden entry is found, and flagged
    assert code == 1 and any(f"log entry {THIEF} " in u for u in report["unaccounted"])
    assert any(p.startswith(f"INDEX: log entry {THIEF},") for p in report["problems"])
    key_id = world.keyring.public_keys()[0].key_id
    search = json.loads(audit("search", "--key", key_id[:12], "--json").output)
    assert THIEF in [e["logIndex"] for e in search["entries"]] and search["problems"]


def test_a_truncated_tail_is_found(af_home: Path, world: Signed) -> None:
    thief_logs(world, af_home / "tlog")
    assert audit("monitor").exit_code == 0  # the monitor saw size 6, thief included
    db = af_home / "tlog" / "tree.db"

    truncate(db, GENUINE, thorough=False)
    code, out = tlog_check()  # the log remembers signing a checkpoint of 6 entries
    assert code == 1 and f"entries {THIEF}..{THIEF} were removed" in out

    truncate(db, GENUINE, thorough=True)  # ... and now it does not: the log's own checks cannot know
    verify = audit("verify")  # the monitor's checkpoint, kept outside the log's folder, does
    assert verify.exit_code == 1 and "were removed" in verify.output and "monitor" in verify.output
    monitor = audit("monitor")
    assert monitor.exit_code == 1 and "ALARM" in monitor.output
    assert f"shrank from {GENUINE + 1} to {GENUINE}" in monitor.output

    # Deleting the monitor's state is no way out: a missing state is an alarm, not a first use.
    state = af_home / "tlog-monitor.json"
    state.unlink()
    missing = audit("monitor")
    assert missing.exit_code == 1 and "--init" in missing.output
    assert audit("verify").exit_code == 1
    # And the state cannot be kept where the log's writer could reset it.
    inside = audit("monitor", "--init", "--state", str(af_home / "tlog" / "monitor.json"))
    assert inside.exit_code == 2 and "outside the log's folder" in inside.output


def test_a_split_view_is_refused_by_the_witness(af_home: Path, tmp_path: Path, world: Signed) -> None:
    """The monitor never saw the thief's entry (truncated before its next run): every audit is green, the thief's
    saved proof verifies on its own — and the witness check refuses it."""
    proof = thief_logs(world, af_home / "tlog")
    truncate(af_home / "tlog" / "tree.db", GENUINE, thorough=True)
    assert audit("verify").exit_code == 0 and audit("monitor").exit_code == 0  # the limit of storage checks

    with EmbeddedLog(af_home / "tlog") as log:
        pinned = {log.log_id: log.key.public_key}
        log_key = log.key.public_key
    entry, _ = check_record(proof, pinned, "thief's record")  # SET, checkpoint, inclusion: all valid
    state = load_state(af_home / "tlog-monitor.json", log_key)
    with pytest.raises(InputError, match="newer than the monitor's latest"):
        check_witnessed(entry, state)

    # The log goes on (the pipeline publishes); the monitor follows the truncated history.
    s = publish_logged(af_home, tmp_path / "t2", ["later"])
    assert audit("monitor").exit_code == 0
    state = load_state(af_home / "tlog-monitor.json", log_key)
    assert state.size == 2 * GENUINE
    with EmbeddedLog(af_home / "tlog") as log:
        with pytest.raises(InputError, match="split view"):
            check_witnessed(entry, state, log)
        with pytest.raises(InputError, match="split view"):  # offline: the monitor proved the root of size 5
            check_witnessed(entry, state)
        # Genuine records pass, offline and with the log.
        records = [parse_record(r, "r").entry for _, r in collect(s.store, s.store.resolve("later")).tlog]
        assert sorted(r.log_index for r in records) == list(range(GENUINE, 2 * GENUINE))  # after the truncation
        for r in records:
            check_witnessed(r, state)
            check_witnessed(r, state, log)
    assert note.log_id_of(log_key) == entry.log_id


def test_every_kind_of_index_edit_is_named(tmp_path: Path, world: Signed) -> None:
    """Removed rows, rows pointing a key at the wrong entry, rows for entries that do not exist, a wrong size."""
    pem = world.keyring.public_keys()[0].pem
    with EmbeddedLog(tmp_path / "log") as log:
        for i in range(40):
            digest = hashlib.sha256(b"i%d" % i).digest()
            log.add(proposed_for_signature(ArtifactSignature.from_signature(
                "sha256:" + digest.hex(), world.keyring.sign_digest(digest)), pem))
        assert log.check(full=True) == [] and log.check() == []
    with sqlite3.connect(tmp_path / "log" / "tree.db") as db:
        db.execute("DELETE FROM search_index WHERE idx = 39 AND key LIKE 'sha256:%'")
        db.execute("INSERT INTO search_index (key, idx) VALUES ('sha256:' || ?, 3)", ("ab" * 32,))
        db.execute("INSERT INTO search_index (key, idx) VALUES ('pk:x', 1000)")
    db.close()
    with EmbeddedLog(tmp_path / "log") as log:
        full = log.check(full=True)
        quick = log.check()  # a sample, and always the newest entries
    assert any("entry 39 cannot be found by sha256:" in p for p in full)
    assert any("entry 3 is found by sha256:abab" in p for p in full)
    assert any("rows for entry 1000" in p for p in full)
    assert any("entry 39 cannot be found" in p for p in quick)


def test_the_verifier_requires_what_the_monitor_saw(af_home: Path, tmp_path: Path, world: Signed) -> None:
    """With `transparencyLogs[].witnessStateFile`, the verifier itself is the witness: a record whose checkpoint
    the monitor has not verified yet (it may be a view shown to this client only) does not count until it has."""
    policy_path = Path(os.environ["AGENTFACTORY_TRUST_POLICY"])
    doc = yaml.safe_load(policy_path.read_text())
    doc["spec"]["transparencyLogs"][0]["witnessStateFile"] = str(af_home / "tlog-monitor.json")
    policy_path.write_text(yaml.safe_dump(doc))
    trust = load_trust_policy(policy_path)

    def tlog_check(name: str) -> tuple[bool, str]:
        verdict, _ = verify_stored(world.store, world.store.resolve(name), trust)
        check = next(c for c in verdict.checks if c.name == "tlog")
        return check.ok, check.reason

    assert tlog_check("honest")[0]  # logged before the monitor's checkpoint
    publish_logged(af_home, tmp_path / "t2", ["later"])  # the log goes on; the monitor has not run since
    ok, reason = tlog_check("later")
    assert not ok and "monitor" in reason, reason
    assert audit("monitor").exit_code == 0  # the monitor verifies the new checkpoint ...
    assert tlog_check("later")[0] and tlog_check("honest")[0]  # ... and both records count
    (af_home / "tlog-monitor.json").unlink()  # a witness that lost its state refuses, it does not start over
    ok, reason = tlog_check("honest")
    assert not ok and "--init" in reason, reason
