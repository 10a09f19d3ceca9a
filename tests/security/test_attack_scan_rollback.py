"""Attack: roll scan evidence back by deleting the newer, failing re-scan from the store.

The attacker can write the artifact store (delete a referrer), not sign with a trusted key and not
rewrite the transparency log. The verifier takes the newest scan *present in the store*, so without
the log the older clean scan would decide again. `agentfactory.scan.logged` asks the log, served over
real HTTP by `agentfactory tlog serve`, for attestations about the digest that the store lacks.

The log keeps hashes only (a dsse entry holds the envelope and payload hashes and the verifying key,
never the payload), so what it can prove is "a trusted key attested something about this digest
after the chosen scan, and the store does not hold it": that denies.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from child_process import first_line
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING, ROOT

from agentfactory.artifact import INDEX_MEDIA_TYPE
from agentfactory.digest import digest_of
from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, parse_envelope, sign_envelope
from agentfactory.evidence import collect, from_bundles, proposed_for_envelope
from agentfactory.intoto import CYCLONEDX_BOM, SCAN_V1, Statement, make_statement, parse_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.policy import RegoEngine
from agentfactory.scan.attestation import canonical_json
from agentfactory.scan.logged import check_logged_scans, entry_uuids_of, logged_attestations, missing_newer_scan
from agentfactory.store import ArtifactStore, StoredAgent, open_store
from agentfactory.store.base import referrers_tag
from agentfactory.tlog.client import RekorClient
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.trust import TrustPolicy, from_public_keys
from pipelines.run import Scanning, Signing, run_pipeline

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def start_log(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`agentfactory tlog serve` on a free loopback port, over `folder`; (process, base URL)."""
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stderr is not None
    line = first_line(proc)
    if not line:
        proc.kill()
        raise RuntimeError("tlog serve exited before listening: " + proc.stderr.read().decode())
    url = json.loads(line)["listening"]
    for _ in range(1000):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("tlog serve did not answer /healthz")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[EmbeddedLog, RekorClient]]:
    """A fresh embedded log served over HTTP: (the log's own handle, for its key; a Rekor client)."""
    folder = tmp_path / "tlog"
    EmbeddedLog(folder).close()  # creates the log key
    proc, url = start_log(folder)
    try:
        with RekorClient(url) as client:
            yield EmbeddedLog(folder), client
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def policy_for(keyring: LocalKeyring, log: EmbeddedLog) -> TrustPolicy:
    return from_public_keys(keyring.public_keys(), log_keys=[log.public_key_pem()])


def scan_predicate(finished: str, findings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"scanners": [{"name": "agentfactory-osv", "version": "0.1.0"}], "sbom": {"digest": "sha256:" + "00" * 32},
            "findings": findings or [], "unscanned": [], "summary": {},
            "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished}}


def attest(keyring: LocalKeyring, client: RekorClient | None, digest: str, predicate_type: str,
           predicate: dict[str, Any]) -> tuple[bytes, int | None]:
    """Sign a statement about `digest` and log it (when `client`): (envelope bytes, log index)."""
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("htmlpage", digest, predicate_type, predicate),
                             keyring).to_json()
    if client is None:
        return envelope, None
    added = client.add(proposed_for_envelope(envelope, keyring.public_keys()[0].pem))
    return envelope, added.entry.log_index


def statement_of(envelope: bytes) -> Statement:
    return parse_statement(parse_envelope(envelope, "envelope").payload, "statement")


HIGH = [{"id": "GHSA-35jh-r3h4-6jhm", "severity": "high", "suppressed": False, "package": "pkg:npm/lodash@4.17.20"}]


# --- the look-up, against the real log over HTTP ------------------------------------------------------

def test_a_removed_newer_scan_is_found_in_the_log(served: tuple[EmbeddedLog, RekorClient], ring: LocalKeyring) -> None:
    log, client = served
    policy = policy_for(ring, log)
    sbom, _ = attest(ring, client, DIGEST, CYCLONEDX_BOM, {"bomFormat": "CycloneDX"})
    clean, clean_index = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    failing, failing_index = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-12-01T12:00:00.000Z", HIGH))
    logged = logged_attestations(client, DIGEST, policy)
    assert [a.log_index for a in logged] == [0, clean_index, failing_index]
    # the UUIDs of envelopes the store holds are derived, not fetched: only the rest is looked up
    held = entry_uuids_of([sbom, clean], policy)
    assert held <= set(client.search(sha256=DIGEST)) and len(held) == 2
    assert [a.log_index for a in logged_attestations(client, DIGEST, policy, skip=held)] == [failing_index]

    # the store after the attacker deleted the failing re-scan: the clean scan is the newest present
    result = check_logged_scans([client], DIGEST, policy, [sbom, clean], statement_of(clean))
    assert not result.ok and result.missing is not None and result.missing.log_index == failing_index
    assert result.reason().startswith(f"a newer scan (log index {failing_index} in {client.url}")
    assert "is missing from the store" in result.reason()

    # the honest store holds both: the newest scan decides, and the log agrees
    assert check_logged_scans([client], DIGEST, policy, [sbom, clean, failing], statement_of(failing)).ok


def test_a_scan_by_an_untrusted_key_or_of_another_digest_is_not_counted(
        served: tuple[EmbeddedLog, RekorClient], ring: LocalKeyring, tmp_path: Path) -> None:
    log, client = served
    policy = policy_for(ring, log)
    clean, _ = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    stranger = LocalKeyring(tmp_path / "stranger")
    stranger.create()
    attest(stranger, client, DIGEST, SCAN_V1, scan_predicate("2026-12-01T12:00:00.000Z", HIGH))
    attest(ring, client, OTHER, SCAN_V1, scan_predicate("2026-12-01T12:00:00.000Z", HIGH))
    assert [a.key_id for a in logged_attestations(client, DIGEST, policy)] == [ring.public_keys()[0].key_id]
    assert check_logged_scans([client], DIGEST, policy, [clean], statement_of(clean)).ok


def test_a_revoked_key_does_not_count(served: tuple[EmbeddedLog, RekorClient], ring: LocalKeyring) -> None:
    log, client = served
    attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    policy = policy_for(ring, log)
    (key,) = policy.keys.values()
    revoked = TrustPolicy({key.key_id: type(key)(key.key_id, key.public_key, True)}, logs=policy.logs)
    assert logged_attestations(client, DIGEST, revoked) == []
    assert check_logged_scans([client], DIGEST, revoked, [], None).ok


def test_without_a_chosen_scan_every_unstored_attestation_counts(served: tuple[EmbeddedLog, RekorClient],
                                                                 ring: LocalKeyring) -> None:
    log, client = served
    _, index = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    result = check_logged_scans([client], DIGEST, policy_for(ring, log), [], None)
    assert result.missing is not None and result.missing.log_index == index


def test_a_log_the_policy_does_not_pin_or_cannot_reach_fails_closed(served: tuple[EmbeddedLog, RekorClient],
                                                                    ring: LocalKeyring, tmp_path: Path) -> None:
    _, client = served
    clean, _ = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    other_log = EmbeddedLog(tmp_path / "other-log")
    unpinned = check_logged_scans([client], DIGEST, policy_for(ring, other_log), [clean], statement_of(clean))
    assert not unpinned.ok and "which the trust policy does not list" in unpinned.reason()
    with RekorClient("http://127.0.0.1:9") as down:
        unreachable = check_logged_scans([down], DIGEST, policy_for(ring, other_log), [], None)
    assert not unreachable.ok
    assert unreachable.reason().startswith("the transparency log could not be asked for newer scan attestations")


def test_entries_by_keys_the_policy_does_not_trust_are_never_fetched_nor_counted(
        served: tuple[EmbeddedLog, RekorClient], ring: LocalKeyring, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone can log entries about any digest with a key of their own. Counted before they were filtered by
    trusted key, 2,001 of them made every verification of the digest fail closed where the policy gives the log's
    URL, and each one below that cap cost a fetch. The log is asked for the digest AND each trusted key."""
    import agentfactory.scan.logged as logged

    log, client = served
    junk = LocalKeyring(tmp_path / "junk")
    junk.create()
    for i in range(8):
        attest(junk, client, DIGEST, SCAN_V1, scan_predicate(f"2026-12-0{i + 1}T00:00:00Z", HIGH))
    _, clean_index = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    monkeypatch.setattr(logged, "MAX_LOGGED_ENTRIES", 4)  # fewer than the junk: the cap must not see it
    fetched: list[str] = []
    entry = client.entry
    monkeypatch.setattr(client, "entry", lambda uuid: fetched.append(uuid) or entry(uuid))
    found = logged_attestations(client, DIGEST, policy_for(ring, log))
    assert [a.log_index for a in found] == [clean_index] and len(fetched) == 1


def reencoded(envelope: bytes) -> bytes:
    """The same signed statement in new envelope bytes (its one genuine signature listed twice): what anyone can
    make of a public envelope, with no key, and log as a new entry."""
    from agentfactory.dsse import Envelope

    env = parse_envelope(envelope, "envelope")
    copy = Envelope(env.payload_type, env.payload, (env.signatures[0], env.signatures[0])).to_json()
    assert copy != envelope
    return copy


def test_a_clean_scan_re_logged_after_the_failing_one_does_not_hide_it(
        served: tuple[EmbeddedLog, RekorClient], ring: LocalKeyring) -> None:
    """The store writer deletes the failing re-scan, replaces the clean scan by a re-encoded copy and logs the copy
    (after the re-scan): the chosen scan is placed at its statement's first entry, so the re-scan is still newer
    and missing. Before, the copy's own entry was the chosen scan's place and nothing was missing."""
    log, client = served
    policy = policy_for(ring, log)
    sbom, _ = attest(ring, client, DIGEST, CYCLONEDX_BOM, {"bomFormat": "CycloneDX"})
    clean, _ = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-11-21T12:00:00.000Z"))
    _, failing_index = attest(ring, client, DIGEST, SCAN_V1, scan_predicate("2026-12-01T12:00:00.000Z", HIGH))
    copy = reencoded(clean)
    replayed = client.add(proposed_for_envelope(copy, ring.public_keys()[0].pem)).entry.log_index
    assert replayed is not None and failing_index is not None and replayed > failing_index
    for store in ([sbom, copy], [sbom, copy, clean], [sbom, clean, copy]):
        result = check_logged_scans([client], DIGEST, policy, store, statement_of(copy))
        assert not result.ok and result.missing is not None and result.missing.log_index == failing_index, store
    honest = check_logged_scans([client], DIGEST, policy, [sbom, clean, copy], None)
    assert honest.missing is not None and honest.missing.log_index == failing_index


def test_newer_is_judged_by_log_position_then_by_time(ring: LocalKeyring) -> None:
    from agentfactory.scan.logged import LoggedAttestation

    chosen = "cc" * 32  # the chosen scan's statement (payload) hash
    own = LoggedAttestation("u", 5, 1_000, "c1" * 32, "k", chosen)
    before = LoggedAttestation("u", 4, 2_000, "a1" * 32, "k", "aa" * 32)  # earlier in the log, whatever its clock
    after = LoggedAttestation("u", 6, 999, "b1" * 32, "k", "bb" * 32)
    assert missing_newer_scan([own, before, after], set(), chosen, "2026-01-01T00:00:00Z") == after
    assert missing_newer_scan([own, before, after], {chosen, "dd" * 32}, chosen, "2026-01-01T00:00:00Z") \
        == after  # statements the store holds are accounted for: only `after` is absent
    assert missing_newer_scan([own, before, after], {"bb" * 32}, chosen, "2026-01-01T00:00:00Z") is None
    # not in this log: by the chosen scan's finish time (1970-01-01T00:16:40Z = 1000 s)
    assert missing_newer_scan([before], set(), chosen, "1970-01-01T00:16:40Z") == before
    assert missing_newer_scan([before], set(), chosen, "1970-01-01T00:40:00Z") is None
    assert missing_newer_scan([before], set(), chosen, "not a time") == before  # fail closed


def test_a_copy_of_the_chosen_scan_logged_later_does_not_move_it(ring: LocalKeyring) -> None:
    """The chosen statement's place is its *first* entry: a re-encoded copy of an old clean scan, logged after
    the failing re-scan by anyone (no key needed: the signature is the genuine one), and a copy of the chosen
    statement itself, are never "newer" than what they copy."""
    from agentfactory.scan.logged import LoggedAttestation

    clean = "cc" * 32
    first = LoggedAttestation("u", 1, 1_000, "c1" * 32, "k", clean)
    failing = LoggedAttestation("u", 2, 1_001, "f1" * 32, "k", "ff" * 32)
    replay = LoggedAttestation("u", 3, 1_002, "c2" * 32, "k", clean)  # the same statement, re-encoded
    finished = "2026-01-01T00:00:00Z"
    assert missing_newer_scan([first, failing, replay], {clean}, clean, finished) == failing
    assert missing_newer_scan([failing, replay, first], {clean}, clean, finished) == failing  # any order
    assert missing_newer_scan([first, replay], {clean}, clean, finished) is None  # a copy is not a newer scan


# --- the attack end to end: pipeline, re-scan, deleted referrer ---------------------------------------

TEMPLATES = EXAMPLES_SCANNING / "templates"
EXAMPLE_VEX = EXAMPLES_SCANNING / "vex" / "htmlpage.openvex.json"


@dataclass
class Rolled:
    home: Path
    store: ArtifactStore
    keyring: LocalKeyring
    log: EmbeddedLog
    failing: bytes  # the re-scan's envelope the attacker removed
    failing_index: int

    @property
    def agent(self) -> StoredAgent:
        return self.store.resolve("htmlpage")


def _remove_referrer(store: ArtifactStore, agent: StoredAgent, envelope: bytes) -> None:
    """What the attacker does with write access to the store: drop one referrer from the index."""
    index = store.referrers_index(agent)
    kept = [m for m in index["manifests"] if not _holds(store.referrer_payload(agent, _ref(m)), envelope)]
    assert len(kept) == len(index["manifests"]) - 1
    data = canonical_json({**index, "manifests": kept})
    store.put_manifest(data, digest_of(data), name=agent.name, media_type=INDEX_MEDIA_TYPE,
                       tag=referrers_tag(agent.manifest_digest), annotations={})


def _holds(payload: bytes, envelope: bytes) -> bool:
    """Whether a referrer is that envelope: a Sigstore bundle of it, or (the format before bundles) itself."""
    return payload == envelope or [d for _, d in from_bundles([("referrer", payload)]).attestations] == [envelope]


def _ref(m: dict[str, Any]) -> Any:
    from agentfactory.store.base import Referrer

    return Referrer(m["digest"], str(m.get("artifactType", "")), m.get("annotations") or {})


def _scan_envelopes(store: ArtifactStore, agent: StoredAgent) -> list[tuple[bytes, dict[str, Any]]]:
    out = []
    for _, doc in collect(store, agent).attestations:
        statement = json.loads(base64.b64decode(json.loads(doc)["payload"]))
        if statement["predicateType"] == SCAN_V1:
            out.append((doc, statement["predicate"]))
    return out


@pytest.fixture
def rolled(tmp_path: Path, af_home: Path, monkeypatch: pytest.MonkeyPatch) -> Rolled:
    """htmlpage built with signed VEX (a clean scan), logged; re-scanned without the VEX (a failing
    scan, logged and attached); then the failing re-scan's referrer deleted from the store."""
    monkeypatch.setenv("AGENTFACTORY_OSV_DB", str(EXAMPLE_OSV))
    keyring = LocalKeyring(af_home / "keys")
    keyring.create()
    log = EmbeddedLog()  # $AGENTFACTORY_HOME/tlog, where `scan --attest` logs too
    from agentfactory.scan.vexdocs import sign_vex

    (af_home / "vex").mkdir(parents=True)
    (af_home / "vex" / "htmlpage.dsse.json").write_bytes(sign_vex(EXAMPLE_VEX.read_bytes(), str(EXAMPLE_VEX),
                                                                  keyring))
    store = open_store(f"oci-layout:{af_home}/store")
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    report = run_pipeline(tmp_path / "templates", store, engine=RegoEngine(ROOT / "policies"),
                          signing=Signing(keyring, tlog=log, tlog_key_pem=log.public_key_pem(),
                                          scanning=Scanning(vex=(af_home / "vex",))))
    assert report.ok, [e for t in report.templates for e in t.errors]
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.run([str(exe), "scan", "htmlpage", "--attest", "--tlog", "embedded", "--json"],
                          capture_output=True, text=True, cwd=af_home, env={**os.environ})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the re-scan blocks: the High is unanswered
    index = json.loads(proc.stdout)["attestation"]["logIndex"]
    agent = store.resolve("htmlpage")
    (failing, _), = [(d, p) for d, p in _scan_envelopes(store, agent) if p["findings"][0]["suppressed"] is False]
    _remove_referrer(store, agent, failing)
    return Rolled(af_home, store, keyring, log, failing, index)


@pytest.mark.toolchain
def test_the_log_knows_the_deleted_rescan(rolled: Rolled) -> None:
    """With the store as the attacker left it, the newest scan present is the clean build scan; the
    log, asked over HTTP, names the deleted re-scan by its log index."""
    agent = rolled.agent
    scans = _scan_envelopes(rolled.store, agent)
    assert len(scans) == 1 and scans[0][1]["findings"][0]["suppressed"] is True  # only the clean one is left
    chosen = scans[0][0]
    stored = [doc for _, doc in collect(rolled.store, agent).attestations]
    proc, url = start_log(rolled.log.folder)
    try:
        with RekorClient(url) as client:
            result = check_logged_scans([client], agent.digest, policy_for(rolled.keyring, rolled.log), stored,
                                        statement_of(chosen))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert not result.ok and result.missing is not None
    assert result.missing.log_index == rolled.failing_index
    assert f"a newer scan (log index {rolled.failing_index} in {url}" in result.reason()


@pytest.mark.toolchain
def test_verify_denies_when_the_newer_scan_was_deleted_from_the_store(rolled: Rolled) -> None:
    """`agentfactory verify` with a trust policy naming the log (its key and URL): denied, naming the
    log index of the deleted re-scan."""
    proc, url = start_log(rolled.log.folder)
    try:
        policy_file = rolled.home / "trust.yaml"
        doc = yaml.safe_load(_policy_yaml(rolled))
        doc["spec"]["transparencyLogs"][0]["url"] = url
        policy_file.write_text(yaml.safe_dump(doc))
        exe = Path(sys.executable).with_name("agentfactory")
        verified = subprocess.run([str(exe), "verify", "htmlpage", "--policy", str(policy_file), "--json"],
                                  capture_output=True, text=True, cwd=rolled.home, env={**os.environ})
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    verdict = json.loads(verified.stdout)
    assert verdict["allowed"] is False
    reasons = " ".join(c["reason"] for c in verdict["checks"] if not c["ok"])
    assert f"a newer scan (log index {rolled.failing_index}" in reasons and "is missing from the store" in reasons


def _policy_yaml(rolled: Rolled) -> str:
    from agentfactory.trust import to_yaml

    return to_yaml(rolled.keyring.public_keys(), log_keys=[rolled.log.public_key_pem()])
