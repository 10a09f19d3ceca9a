"""The scan stage of the real pipeline, and the verifier's "scan" check on what it (and a re-scan) signed.

The example agent (examples/scanning/templates/htmlpage) vendors lodash 4.17.20, which the real
advisory GHSA-35jh-r3h4-6jhm (HIGH) matches; the example VEX says htmlpage is not affected. One
signed-VEX build is made per module and copied per test (keys, store, build cache), so the tests
that re-scan and attach evidence each work on their own store.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING, ROOT

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.evidence import attach_attestations, collect
from agentfactory.fetchverify import verify_stored
from agentfactory.intoto import SCAN_V1, make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.policy import RegoEngine
from agentfactory.scan.attestation import sbom_digest
from agentfactory.scan.base import OsvScanner
from agentfactory.scan.report import ScanReport, scan, subject_of
from agentfactory.scan.vexdocs import load_vex, sign_vex
from agentfactory.store import ArtifactStore, StoredAgent, open_store
from agentfactory.trust import TrustPolicy, from_public_keys
from agentfactory.verifier import Verdict, verify
from pipelines.run import PipelineReport, Scanning, Signing, TemplateResult, run_pipeline

pytestmark = pytest.mark.toolchain

TEMPLATES = EXAMPLES_SCANNING / "templates"
EXAMPLE_VEX = EXAMPLES_SCANNING / "vex" / "htmlpage.openvex.json"
GHSA = "GHSA-35jh-r3h4-6jhm"
LODASH = "pkg:npm/lodash@4.17.20"
FUTURE = "9999-12-31T23:59:59.999Z"  # what a forger would claim: the newest scan of all


def _isolate(mp: pytest.MonkeyPatch, home: Path, toolchain_cache: Path) -> None:
    """The environment conftest's af_home gives a test, for a module-scoped fixture that runs before it."""
    mp.setenv("AGENTFACTORY_HOME", str(home))
    mp.setenv("AGENTFACTORY_TOOLCHAIN_CACHE", str(toolchain_cache))
    mp.setenv("AGENTFACTORY_OSV_DB", str(EXAMPLE_OSV))
    mp.delenv("AGENTFACTORY_STORE", raising=False)
    mp.delenv("AGENTFACTORY_KEY_PROVIDER", raising=False)
    mp.delenv("SOURCE_DATE_EPOCH", raising=False)


def copy_templates(dest: Path) -> Path:
    shutil.copytree(TEMPLATES, dest)
    return dest


def errors_of(report: PipelineReport) -> list[str]:
    return [e for t in report.templates for e in t.errors]


@dataclass
class Built:
    home: Path  # AGENTFACTORY_HOME of the build: keys/, store/, vex/, cache/
    result: TemplateResult


@pytest.fixture(scope="module")
def engine() -> RegoEngine:
    return RegoEngine(ROOT / "policies")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, toolchain_cache: Path, engine: RegoEngine) -> Built:
    """htmlpage built, scanned with the signed example VEX, signed and published: once per module."""
    root = tmp_path_factory.mktemp("scan-build")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home, toolchain_cache)
        keyring = LocalKeyring(home / "keys")
        keyring.create()
        (home / "vex").mkdir()
        (home / "vex" / "htmlpage.dsse.json").write_bytes(sign_vex(EXAMPLE_VEX.read_bytes(), str(EXAMPLE_VEX),
                                                                   keyring))
        store = open_store(f"oci-layout:{home}/store")
        report = run_pipeline(copy_templates(root / "templates"), store, engine=engine,
                              signing=Signing(keyring, scanning=Scanning(vex=(home / "vex",))))
    assert report.ok, errors_of(report)
    return Built(home, report.templates[0])


@dataclass
class World:
    """A private copy of the module's build: its own store, the same keys."""

    home: Path
    store: ArtifactStore
    keyring: LocalKeyring
    engine: RegoEngine

    @property
    def trust(self) -> TrustPolicy:
        return from_public_keys(self.keyring.public_keys())

    @property
    def agent(self) -> StoredAgent:
        return self.store.resolve("htmlpage")

    def verify(self) -> Verdict:
        return verify_stored(self.store, self.agent, self.trust, engine=self.engine)[0]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).with_name("agentfactory")
        env = {**os.environ, "AGENTFACTORY_HOME": str(self.home)}
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=self.home)

    def scan_attestations(self) -> list[dict[str, Any]]:
        """The scan predicates attached to the agent, in store order."""
        out = []
        for _, doc in collect(self.store, self.agent).attestations:
            statement = json.loads(base64.b64decode(json.loads(doc)["payload"]))
            if statement["predicateType"] == SCAN_V1:
                out.append(statement["predicate"])
        return out


@pytest.fixture
def world(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: RegoEngine) -> World:
    home = tmp_path / "home"
    shutil.copytree(built.home, home)
    monkeypatch.setenv("AGENTFACTORY_HOME", str(home))  # LocalKeyring() and the CLI now use the copy
    return World(home, open_store(f"oci-layout:{home}/store"), LocalKeyring(home / "keys"), engine)


@pytest.fixture
def fresh(tmp_path: Path, af_home: Path) -> tuple[Path, ArtifactStore, LocalKeyring]:
    """A copy of the example templates, an empty store and a new keyring, for a pipeline run of its own."""
    keyring = LocalKeyring(af_home / "keys")
    keyring.create()
    return copy_templates(tmp_path / "templates"), open_store(f"oci-layout:{tmp_path}/store"), keyring


def check(verdict: Verdict, name: str) -> tuple[bool, str]:
    (c,) = [c for c in verdict.checks if c.name == name]
    return c.ok, c.reason


def assert_refused_and_unpublished(report: PipelineReport, store: ArtifactStore) -> TemplateResult:
    (result,) = report.templates
    assert not report.ok and result.status == "failed" and not result.digest
    assert store.list_agents() == [] and store.entries() == []  # refused before publication
    return result


# --- the pipeline -----------------------------------------------------------------------------

def test_an_unanswered_advisory_refuses_publication(fresh: tuple[Path, ArtifactStore, LocalKeyring],
                                                    engine: RegoEngine) -> None:
    templates, store, keyring = fresh
    report = run_pipeline(templates, store, signing=Signing(keyring), engine=engine)
    result = assert_refused_and_unpublished(report, store)
    (error,) = result.errors
    assert f"{GHSA} (severity high, in {LODASH}) is not suppressed by any VEX statement" in error
    assert "upgrade it to 4.17.21, or publish a signed VEX statement" in error
    assert result.scan is not None
    assert result.scan["gate"] == {"failOn": "high", "ignoreUnfixed": False, "passed": False, "blocking": [GHSA]}
    (finding,) = result.scan["findings"]
    assert finding["id"] == GHSA and finding["package"] == LODASH and not finding["suppressed"]
    assert any(line.startswith(f"  BLOCKS     HIGH 7.2 {GHSA}") for line in result.scan_lines), result.scan_lines


def test_the_signed_vex_build_is_published_and_verifies(built: Built, world: World) -> None:
    result = built.result
    assert result.status == "built" and result.errors == []
    assert result.scan is not None and result.scan["gate"]["passed"]
    (finding,) = result.scan["findings"]
    assert finding["id"] == GHSA and finding["suppressed"]
    assert finding["suppressedBy"]["justification"] == "vulnerable_code_not_in_execute_path"
    (vex,) = result.scan["vex"]
    assert vex["uri"].endswith("htmlpage.dsse.json") and vex["signedBy"] == world.keyring.public_keys()[0].key_id
    assert result.scan["unusedVex"] == []
    assert result.evidence["signed"]

    verdict = world.verify()
    assert verdict.allowed, verdict.reasons
    assert check(verdict, "scan") == (True, f"{SCAN_V1} attestation signed by a trusted key, about this digest")
    (predicate,) = world.scan_attestations()
    assert predicate["sbom"]["digest"] == sbom_digest(verdict.sbom)  # bound to the signed SBOM, byte for byte
    assert predicate["subject"] == subject_of(verdict.sbom, "sbom") and predicate["findings"][0]["suppressed"]


def test_unsigned_vex_is_refused_naming_the_file(fresh: tuple[Path, ArtifactStore, LocalKeyring],
                                                 engine: RegoEngine) -> None:
    templates, store, keyring = fresh
    report = run_pipeline(templates, store, engine=engine,
                          signing=Signing(keyring, scanning=Scanning(vex=(EXAMPLE_VEX,))))
    result = assert_refused_and_unpublished(report, store)
    (error,) = result.errors
    assert error.startswith(f"{EXAMPLE_VEX}: this VEX document is not signed"), error
    assert "agentfactory vex sign" in error


def test_unsigned_vex_is_believed_when_allowed(fresh: tuple[Path, ArtifactStore, LocalKeyring],
                                               engine: RegoEngine) -> None:
    templates, store, keyring = fresh
    report = run_pipeline(templates, store, engine=engine,
                          signing=Signing(keyring, scanning=Scanning(vex=(EXAMPLE_VEX,), require_signed_vex=False)))
    assert report.ok, errors_of(report)
    (result,) = report.templates
    assert result.scan is not None and result.scan["findings"][0]["suppressed"]
    assert result.scan["vex"][0]["signedBy"] == ""  # recorded as unsigned in the attestation
    agent = store.resolve("htmlpage")
    verdict = verify_stored(store, agent, from_public_keys(keyring.public_keys()), engine=engine)[0]
    assert verdict.allowed, verdict.reasons


def test_vex_signed_by_a_key_of_the_given_trust_policy(fresh: tuple[Path, ArtifactStore, LocalKeyring],
                                                       engine: RegoEngine, tmp_path: Path) -> None:
    """A security team's key (not the pipeline's) signs VEX; the pipeline believes it only when the trust
    policy it is given (--vex-trust-policy) lists that key."""
    from agentfactory.scan.vexdocs import sign_vex

    templates, store, keyring = fresh
    team = LocalKeyring(tmp_path / "team-keys")
    team.create()
    signed = tmp_path / "vex" / "htmlpage.dsse.json"
    signed.parent.mkdir()
    signed.write_bytes(sign_vex(EXAMPLE_VEX.read_bytes(), str(EXAMPLE_VEX), team))
    refused = run_pipeline(templates, store, engine=engine,
                           signing=Signing(keyring, scanning=Scanning(vex=(signed.parent,))))
    (error,) = assert_refused_and_unpublished(refused, store).errors
    assert "the VEX signature is not trusted" in error and "which the trust policy does not list" in error
    team_policy = from_public_keys(team.public_keys())
    report = run_pipeline(templates, store, engine=engine,
                          signing=Signing(keyring, scanning=Scanning(vex=(signed.parent,), vex_trust=team_policy)))
    assert report.ok, errors_of(report)
    (result,) = report.templates
    assert result.scan is not None and result.scan["vex"][0]["signedBy"] == team.public_keys()[0].key_id


def test_vex_for_another_product_does_not_help_and_is_reported(fresh: tuple[Path, ArtifactStore, LocalKeyring],
                                                               engine: RegoEngine, tmp_path: Path) -> None:
    templates, store, keyring = fresh
    doc = json.loads(EXAMPLE_VEX.read_text())
    doc["statements"][0]["products"][0]["@id"] = "pkg:oci/otheragent"
    vex = tmp_path / "otheragent.dsse.json"
    vex.write_bytes(sign_vex(json.dumps(doc).encode(), "otheragent.openvex.json", keyring))  # signed, trusted
    report = run_pipeline(templates, store, engine=engine, signing=Signing(keyring, scanning=Scanning(vex=(vex,))))
    result = assert_refused_and_unpublished(report, store)
    assert any(GHSA in e and "is not suppressed by any VEX statement" in e for e in result.errors), result.errors
    assert result.scan is not None and not result.scan["findings"][0]["suppressed"]
    assert result.scan["vex"][0]["signedBy"] == keyring.public_keys()[0].key_id
    (unused,) = result.scan["unusedVex"]
    assert unused["vulnerability"] == GHSA and unused["products"] == ["pkg:oci/otheragent"]
    lines = result.scan_lines
    assert any(line.startswith("  unused VEX statement ") and "pkg:oci/otheragent" in line
               and "it matches no finding of pkg:oci/htmlpage@" in line for line in lines), lines


# --- re-scans and the verifier ----------------------------------------------------------------

def test_the_newest_scan_decides(world: World) -> None:
    assert world.verify().allowed
    # A re-scan without the VEX (say, by someone who lost it) is signed and attached: it is the newest.
    proc = world.cli("scan", "htmlpage", "--attest", "--tlog", "none", "--json")
    assert proc.returncode == 1, proc.stderr  # the gate blocks, and the attestation is attached all the same
    doc = json.loads(proc.stdout)
    assert doc["gate"]["passed"] is False and doc["attestation"]["agent"] == f"htmlpage@{world.agent.digest}"
    assert doc["attestation"]["keyId"] == world.keyring.public_keys()[0].key_id
    denied = world.verify()
    assert not denied.allowed
    assert check(denied, "scan")[0]  # a valid scan attestation: the policy, not the check, refuses
    ok, reason = check(denied, "policy")
    assert not ok and f"{GHSA} (severity high, in {LODASH}) is not suppressed by any VEX statement" in reason

    # A later re-scan with the signed VEX answers the finding again.
    proc = world.cli("scan", "htmlpage", "--attest", "--tlog", "none", "--require-signed-vex",
                     "--vex", str(world.home / "vex"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "suppressed HIGH 7.2" in proc.stdout and "attached a signed scan attestation" in proc.stdout
    verdict = world.verify()
    assert verdict.allowed, verdict.reasons
    scans = world.scan_attestations()
    assert [p["findings"][0]["suppressed"] for p in scans] == [True, False, True]
    assert [p["metadata"]["scanFinishedOn"] for p in scans] == sorted(p["metadata"]["scanFinishedOn"] for p in scans)


def _rescan(world: World, *, vex: bool) -> ScanReport:
    verdict = world.verify()
    bom = verdict.sbom
    docs = load_vex([world.home / "vex"], trust=world.trust, require_signed=True) if vex else []
    return scan(bom, [OsvScanner()], subject=subject_of(bom, "sbom"), vex=docs)


def _attach_signed(world: World, predicate: dict[str, Any], keyring: LocalKeyring) -> None:
    agent = world.agent
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement(agent.name, agent.digest, SCAN_V1, predicate),
                             keyring)
    attach_attestations(world.store, agent, [(SCAN_V1, envelope)])


def _attest_blocking(world: World) -> None:
    _attach_signed(world, _rescan(world, vex=False).to_predicate(), world.keyring)
    assert not world.verify().allowed


def test_a_forged_scan_by_an_untrusted_key_is_ignored(world: World, tmp_path: Path) -> None:
    from agentfactory.cli.scan_cmd import _attest

    # The trusted re-scan without VEX (signed by the local keyring, through the CLI's own code): denied.
    attached = _attest(world.store, world.agent, _rescan(world, vex=False), None, "none", None)
    assert attached["keyId"] == world.keyring.public_keys()[0].key_id and attached["logIndex"] is None
    assert not world.verify().allowed

    # A forger without the key claims a newer, clean scan: all suppressed, and dated in the future.
    forged = _rescan(world, vex=True).to_predicate()
    forged["metadata"]["scanFinishedOn"] = FUTURE
    stranger = LocalKeyring(tmp_path / "stranger")
    stranger.create()
    _attach_signed(world, forged, stranger)
    assert len(world.scan_attestations()) == 3
    verdict = world.verify()
    assert not verdict.allowed  # the trusted, blocking scan still decides
    assert check(verdict, "scan") == (True, f"{SCAN_V1} attestation signed by a trusted key, about this digest")
    assert GHSA in check(verdict, "policy")[1]


def test_a_scan_of_another_sbom_does_not_count(world: World) -> None:
    verdict = world.verify()
    bom = copy.deepcopy(verdict.sbom)
    bom["components"] = [c for c in bom["components"] if c.get("purl") != LODASH]  # a clean SBOM, not the signed one
    other = scan(bom, [OsvScanner()], subject=subject_of(bom, "sbom")).to_predicate()
    assert other["findings"] == [] and other["sbom"]["digest"] != sbom_digest(verdict.sbom)
    other["metadata"]["scanFinishedOn"] = FUTURE

    # Alone, it leaves the agent without a valid scan: the check fails, saying why.
    agent = world.agent
    statement = make_statement(agent.name, agent.digest, SCAN_V1, other)
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, world.keyring)  # signed by the trusted key, even
    evidence = collect(world.store, agent)
    evidence.attestations = [(w, d) for w, d in evidence.attestations if SCAN_V1.encode() not in base64.b64decode(
        json.loads(d)["payload"])] + [("mismatched", envelope.to_json())]
    alone = verify(agent.digest, world.store.fetch_wasm(agent.digest)[1], evidence, world.trust, engine=world.engine,
                   name=agent.name, version=agent.version)
    ok, reason = check(alone, "scan")
    assert not ok and not alone.allowed
    assert (f"the scan is of SBOM {other['sbom']['digest']}, not of this artifact's signed SBOM") in reason
    assert "scan" in check(alone, "policy")[1]  # a required check: the artifact policy refuses too

    # Beside valid ones, it never wins, however new it claims to be: a trusted blocking re-scan decides.
    _attest_blocking(world)
    _attach_signed(world, other, world.keyring)
    verdict = world.verify()
    assert not verdict.allowed and check(verdict, "scan")[0] and GHSA in check(verdict, "policy")[1]


def test_no_scan_attestation_fails_the_required_check(world: World) -> None:
    agent = world.agent
    evidence = collect(world.store, agent)
    evidence.attestations = [(w, d) for w, d in evidence.attestations
                             if SCAN_V1.encode() not in base64.b64decode(json.loads(d)["payload"])]
    verdict = verify(agent.digest, world.store.fetch_wasm(agent.digest)[1], evidence, world.trust, engine=world.engine,
                     name=agent.name, version=agent.version)
    ok, reason = check(verdict, "scan")
    found = "https://cyclonedx.org/bom, https://sigstore.dev/cosign/sign/v1, https://slsa.dev/provenance/v1"
    assert not ok and reason == f"no {SCAN_V1} attestation (found: {found})"  # with the image signature, for cosign
    assert not verdict.allowed
