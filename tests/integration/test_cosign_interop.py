"""The real cosign (v3, `make tools`) reads what the pipeline signs with a key: `verify-blob` on an agent's wasm
and its signature bundle, `verify` and `verify-attestation` on the agent pushed to the real registry (Debian's
docker-registry, referrers through the tag schema), all offline with `--key` and a trusted root naming the
embedded transparency log (`agentfactory cosign trusted-root`). Good agents are accepted; a flipped byte,
another key, a forged log entry, another log and bundles re-attached to a tampered image are refused.

cosign runs with HOME and TUF_ROOT in the test's folder: with `--trusted-root` it needs neither the network nor
the public-good TUF repository, and nothing it writes leaves the test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_template
from peer_tools import require
from registry_server import Registry, running_registry
from runtime_helpers import OK_WAT, wat_manifest

from agentfactory.artifact import Blob, build_agent_artifact
from agentfactory.cli.cosign_cmd import cosign
from agentfactory.evidence import collect
from agentfactory.keys.local import LocalKeyring
from agentfactory.sigstore_bundles import BUNDLE_ARTIFACT_TYPE
from agentfactory.store import ArtifactStore, StoredAgent, open_store
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.trust import from_public_keys
from agentfactory.verifier import verify
from pipelines.run import Signing, run_pipeline

pytestmark = pytest.mark.toolchain

HANG_GUARD_S = 300  # cosign answers in well under a second; this only stops a hung process
SCAN_TYPE = "https://agentfactory.dev/attestation/scan/v1"
UNLOGGED = "not enough verified log entries from transparency log: 0 < 1"
OTHER_IMAGE = "no matching attestations: .*provided artifact digest does not match any digest in statement"


@dataclass
class Signed:
    """One agent signed by the pipeline, with everything a cosign user holds."""

    home: Path
    store: ArtifactStore
    agent: StoredAgent
    wasm: Path
    key: Path  # the signing key's public PEM (`agentfactory keys export`)
    root: Path  # trusted_root.json from `agentfactory cosign trusted-root`
    bundles: dict[str, bytes]  # "signature" or the predicate type -> bundle JSON
    keyring: LocalKeyring
    log_pem: bytes


def cosign_run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp / "cosign-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "TUF_ROOT": str(home / "tuf"),
           "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.run([str(require("cosign")), *args], capture_output=True, text=True, env=env,
                          timeout=HANG_GUARD_S, check=False)


def accepted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"cosign refused: {result.stderr[-2000:]}"


def refused(result: subprocess.CompletedProcess[str], why: str) -> None:
    """cosign refused, for the reason `why` matches. cosign prints a line per bundle it tried, in the order the
    registry lists the referrers (which varies), so `why` may span lines."""
    assert result.returncode != 0, f"cosign accepted: {result.stdout[-1000:]}"
    assert re.search(why, result.stderr, re.DOTALL), result.stderr[-2000:]


def sign(tmp: Path, store_url: str, toolchain_cache: Path) -> Signed:
    home = tmp / "af-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFACTORY_HOME", str(home))
        mp.setenv("AGENTFACTORY_TOOLCHAIN_CACHE", str(toolchain_cache))
        keyring = LocalKeyring(home / "keys")
        keyring.create()
        write_template(tmp / "t", "greeter", manifest=wat_manifest("greeter"), files={"src/main.wat": OK_WAT})
        log = EmbeddedLog()  # the embedded default: $AGENTFACTORY_HOME/tlog
        store = open_store(store_url)
        report = run_pipeline(tmp / "t", store, run_tests=False,
                              signing=Signing(keyring, tlog=log, tlog_key_pem=log.public_key_pem()), jobs=1)
        assert report.ok, [t.errors for t in report.templates]
        agent, wasm = store.fetch_wasm("greeter:1.0.0")
        root = tmp / "trusted_root.json"
        result = CliRunner().invoke(cosign, ["trusted-root", "-o", str(root)])
        assert result.exit_code == 0, result.output
        log_pem = log.public_key_pem()
        log.close()
    (tmp / "greeter.wasm").write_bytes(wasm)
    (tmp / "cosign.pub").write_bytes(keyring.public_keys()[0].pem)
    bundles = {}
    for ref in store.referrers(agent):
        assert ref.artifact_type == BUNDLE_ARTIFACT_TYPE
        bundles[ref.annotations.get("dev.sigstore.bundle.predicateType", "signature")] = \
            store.referrer_payload(agent, ref)
    for name, data in bundles.items():
        (tmp / f"{name.rstrip('/').rsplit('/', 2)[-2] if '/' in name else name}.bundle.json").write_bytes(data)
    return Signed(home, store, agent, tmp / "greeter.wasm", tmp / "cosign.pub", root, bundles, keyring, log_pem)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, toolchain_cache: Path) -> Signed:
    tmp = tmp_path_factory.mktemp("cosign-blob")
    return sign(tmp, f"oci-layout:{tmp / 'store'}", toolchain_cache)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, toolchain_cache: Path, registry: Registry) -> Signed:
    tmp = tmp_path_factory.mktemp("cosign-registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        return sign(tmp, f"oci://{registry.host}/agents?plain-http=true", toolchain_cache)


def image(registry: Registry, digest: str) -> str:
    return f"{registry.host}/agents/greeter@{digest}"


# --- what cosign needs: a checkpoint it reads as Rekor v1's ----------------------------------------------------


def test_checkpoints_are_shaped_as_rekor_v1(layout: Signed) -> None:
    """sigstore-go (cosign v3) reads an inclusion proof's checkpoint as Rekor v1's only when its origin ends in
    " - <decimal tree id>" (`rekor.sigstore.dev - 1193050959916656506`); any other origin is taken for a Rekor
    v2 note (another signature format) and the entry does not verify."""
    doc = json.loads(layout.bundles["signature"])
    origin = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]["envelope"].split("\n")[0]
    assert re.fullmatch(r".* - [0-9]+", origin), (
        f"the embedded log's checkpoint origin {origin!r} is not `<name> - <decimal tree id>`: cosign will take it "
        "for a Rekor v2 checkpoint and refuse every entry (agentfactory/tlog/note.py LogKey.origin)")


# --- verify-blob: the wasm and its signature bundle -------------------------------------------------------------


def test_verify_blob_accepts_the_agent(layout: Signed, tmp_path: Path) -> None:
    result = cosign_run(tmp_path, "verify-blob", "--key", str(layout.key), "--bundle",
                        str(layout.wasm.with_name("signature.bundle.json")), "--trusted-root", str(layout.root),
                        str(layout.wasm))
    accepted(result)
    assert "Verified OK" in result.stderr


def test_verify_blob_refuses_a_flipped_byte(layout: Signed, tmp_path: Path) -> None:
    bad = bytearray(layout.wasm.read_bytes())
    bad[len(bad) // 2] ^= 0x01
    (tmp_path / "tampered.wasm").write_bytes(bytes(bad))
    refused(cosign_run(tmp_path, "verify-blob", "--key", str(layout.key), "--bundle",
                       str(layout.wasm.with_name("signature.bundle.json")), "--trusted-root", str(layout.root),
                       str(tmp_path / "tampered.wasm")), "crypto/rsa: verification error")


def test_verify_blob_refuses_another_key(layout: Signed, tmp_path: Path) -> None:
    other = LocalKeyring(tmp_path / "keys")
    (tmp_path / "other.pub").write_bytes(other.create().pem)
    refused(cosign_run(tmp_path, "verify-blob", "--key", str(tmp_path / "other.pub"), "--bundle",
                       str(layout.wasm.with_name("signature.bundle.json")), "--trusted-root", str(layout.root),
                       str(layout.wasm)), "transparency log certificate does not match")  # it logs our key


def test_verify_blob_refuses_a_forged_log_entry_and_another_log(layout: Signed, tmp_path: Path) -> None:
    doc = json.loads(layout.bundles["signature"])
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)  # the SET no longer covers it
    (tmp_path / "forged.json").write_text(json.dumps(doc))
    refused(cosign_run(tmp_path, "verify-blob", "--key", str(layout.key), "--bundle", str(tmp_path / "forged.json"),
                       "--trusted-root", str(layout.root), str(layout.wasm)), UNLOGGED)
    with pytest.MonkeyPatch.context() as mp:  # a trusted root naming another log: the entry is not trusted
        mp.setenv("AGENTFACTORY_HOME", str(tmp_path / "other-home"))
        result = CliRunner().invoke(cosign, ["trusted-root", "-o", str(tmp_path / "other-root.json")])
        assert result.exit_code == 0, result.output
    refused(cosign_run(tmp_path, "verify-blob", "--key", str(layout.key), "--bundle",
                       str(layout.wasm.with_name("signature.bundle.json")), "--trusted-root",
                       str(tmp_path / "other-root.json"), str(layout.wasm)), UNLOGGED)


@pytest.mark.parametrize(("kind", "cosign_type"), [("cyclonedx.org", "cyclonedx"), ("provenance", "slsaprovenance1"),
                                                   ("scan", SCAN_TYPE)])
def test_verify_blob_attestation_accepts_each_attestation(layout: Signed, tmp_path: Path, kind: str,
                                                          cosign_type: str) -> None:
    accepted(cosign_run(tmp_path, "verify-blob-attestation", "--key", str(layout.key), "--bundle",
                        str(layout.wasm.with_name(f"{kind}.bundle.json")), "--trusted-root", str(layout.root),
                        "--type", cosign_type, str(layout.wasm)))


# --- verify and verify-attestation: the agent on the registry -----------------------------------------------------


def test_verify_accepts_the_pushed_agent(pushed: Signed, registry: Registry, tmp_path: Path) -> None:
    for ref in (image(registry, pushed.agent.manifest_digest), f"{registry.host}/agents/greeter:1.0.0"):
        result = cosign_run(tmp_path, "verify", "--key", str(pushed.key), "--trusted-root", str(pushed.root),
                            "--allow-http-registry", "--output", "json", ref)
        accepted(result)
        claims = json.loads(result.stdout)
        assert {c["critical"]["type"] for c in claims} >= {"https://sigstore.dev/cosign/sign/v1"}
        assert {c["critical"]["image"]["docker-manifest-digest"] for c in claims} == {pushed.agent.manifest_digest}
        assert "transparency log was verified offline" in result.stderr


@pytest.mark.parametrize("cosign_type", ["cyclonedx", "slsaprovenance1", SCAN_TYPE])
def test_verify_attestation_accepts_sbom_provenance_and_scan(pushed: Signed, registry: Registry, tmp_path: Path,
                                                            cosign_type: str) -> None:
    result = cosign_run(tmp_path, "verify-attestation", "--key", str(pushed.key), "--trusted-root", str(pushed.root),
                        "--allow-http-registry", "--type", cosign_type, image(registry, pushed.agent.manifest_digest))
    accepted(result)
    payloads = [json.loads(base64.b64decode(json.loads(line)["payload"])) for line in result.stdout.splitlines()
                if line.strip()]
    assert payloads and all(pushed.agent.digest[7:] in json.dumps(p["subject"]) for p in payloads)


def test_verify_refuses_another_key(pushed: Signed, registry: Registry, tmp_path: Path) -> None:
    other = LocalKeyring(tmp_path / "keys")
    (tmp_path / "other.pub").write_bytes(other.create().pem)
    refused(cosign_run(tmp_path, "verify", "--key", str(tmp_path / "other.pub"), "--trusted-root", str(pushed.root),
                       "--allow-http-registry", image(registry, pushed.agent.manifest_digest)),
            "no matching attestations: .*transparency log certificate does not match")


def test_verify_refuses_a_tampered_agent_carrying_the_genuine_bundles(pushed: Signed, registry: Registry,
                                                                      tmp_path: Path) -> None:
    """A flipped byte is another wasm, so another manifest: the genuine bundles re-attached to it name the
    genuine digests, and neither cosign nor the verifier accepts them for it."""
    bad = bytearray(pushed.wasm.read_bytes())
    bad[len(bad) // 2] ^= 0x01
    store = pushed.store
    tampered = store.push_agent(build_agent_artifact(bytes(bad), name="greeter", version="1.0.1", created_epoch=0),
                                name="greeter", version="1.0.1")
    for predicate_type, bundle in pushed.bundles.items():
        store.attach(tampered, artifact_type=BUNDLE_ARTIFACT_TYPE, layer=Blob(BUNDLE_ARTIFACT_TYPE, bundle),
                     annotations=None if predicate_type == "signature" else
                     {"dev.sigstore.bundle.content": "dsse-envelope",
                      "dev.sigstore.bundle.predicateType": predicate_type})
    ref = image(registry, tampered.manifest_digest)
    refused(cosign_run(tmp_path, "verify", "--key", str(pushed.key), "--trusted-root", str(pushed.root),
                       "--allow-http-registry", ref), OTHER_IMAGE)
    refused(cosign_run(tmp_path, "verify-attestation", "--key", str(pushed.key), "--trusted-root", str(pushed.root),
                       "--allow-http-registry", "--type", "cyclonedx", ref), OTHER_IMAGE)
    policy = from_public_keys(pushed.keyring.public_keys(), log_keys=[pushed.log_pem])
    verdict = verify(tampered.digest, bytes(bad), collect(store, tampered), policy, name="greeter", version="1.0.1")
    assert not verdict.allowed
    assert any(r.startswith("signature: a signature is for") for r in verdict.reasons), verdict.reasons
