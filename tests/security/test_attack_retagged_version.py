"""Attack: names, versions and run contracts not bound to the digest.

The attacker writes to the artifact store (tags, index, manifests and referrers; not the signing keys).
They re-tag an older signed build as a higher version, or republish its bytes under a new manifest
that says a higher version with the old evidence copied onto it, so that nodes serve the old build
as the new one. And two template versions that build to identical bytes but declare different run
contracts (env allowlist) share one digest: a node must apply the contract of the version asked for,
and refuse a request that cannot say which. What stops it: the store refuses a listing its own
manifest contradicts and a digest that several published versions share; the verifier requires the
signed provenance (name, version) to match the reference used; the runtime keys its caches by the
manifest, not by the wasm digest.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from promotion_helpers import agentfactory, promotion_trust, publish_logged
from runtime_helpers import OK_WAT, Signed, signed_store, wat_manifest

from agentfactory.artifact import Blob, build_agent_artifact
from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.evidence import Evidence, collect, proposed_for_envelope
from agentfactory.fetchverify import verify_stored
from agentfactory.intoto import SLSA_PROVENANCE_V1, make_statement
from agentfactory.store.base import AmbiguousReference, MislabelledAgent
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.verifier import verify

pytestmark = pytest.mark.toolchain

V2_WAT = OK_WAT.replace("ok\\n", "v2\\n")


@pytest.fixture
def two_versions(af_home: Path, tmp_path: Path) -> Signed:
    s = signed_store(af_home)
    manifest = wat_manifest("greeter")
    publish_logged(s, tmp_path / "v1", {"greeter": (manifest, {"src/main.wat": OK_WAT})})
    publish_logged(s, tmp_path / "v2", {"greeter": (manifest.replace("version: 1.0.0", "version: 1.1.0"),
                                                    {"src/main.wat": V2_WAT})})
    return s


def _run(s: Signed, trust: Path, *args: str) -> tuple[int, str, str]:
    done = agentfactory("run", "--store", s.store.url, "--policy", str(trust), *args)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def _trust_file(s: Signed, tmp_path: Path) -> Path:
    from promotion_helpers import REPOSITORIES

    from agentfactory.tlog.log import EmbeddedLog
    from agentfactory.trust import to_yaml

    path = tmp_path / "trust.yaml"
    path.write_text(to_yaml(s.keyring.public_keys(), repositories=REPOSITORIES,
                            log_keys=[EmbeddedLog().public_key_pem()]))
    return path


def test_an_index_retag_of_an_older_build_is_refused(two_versions: Signed, tmp_path: Path) -> None:
    s = two_versions
    old = s.store.resolve("greeter:1.0.0")
    index_path = Path(s.store.url.removeprefix("oci-layout:")) / "index.json"
    index = json.loads(index_path.read_text())
    kept = []
    for m in index["manifests"]:
        ann = m.get("annotations", {})
        if ann.get("org.opencontainers.image.ref.name") == "greeter:1.1.0":
            continue  # the real 1.1.0 is unlisted...
        if m["digest"] == old.manifest_digest:  # ...and the old build listed as 1.1.0
            ann.update({"org.opencontainers.image.ref.name": "greeter:1.1.0",
                        "org.opencontainers.image.version": "1.1.0"})
        kept.append(m)
    index["manifests"] = kept
    index_path.write_text(json.dumps(index))
    for ref in ("greeter:1.1.0", "greeter"):
        with pytest.raises(MislabelledAgent, match="re-tagged"):
            s.store.resolve(ref)
    code, out, err = _run(s, _trust_file(s, tmp_path), "greeter:1.1.0")
    assert code == 125 and out == "" and "re-tagged" in err, err


def test_an_old_build_republished_as_a_newer_version_with_its_evidence_is_refused(two_versions: Signed,
                                                                                  tmp_path: Path) -> None:
    s = two_versions
    old = s.store.resolve("greeter:1.0.0")
    data = s.store.fetch_wasm(old.digest)[1]
    fake = s.store.push_agent(build_agent_artifact(data, name="greeter", version="1.2.0", created_epoch=0),
                              name="greeter", version="1.2.0")
    for ref in s.store.referrers(old):  # every signature, attestation and log record, copied as they are
        payload = s.store.referrer_payload(old, ref)
        s.store.attach(fake, artifact_type=ref.artifact_type, layer=Blob(ref.artifact_type, payload),
                       annotations=ref.annotations or None)
    verdict, _ = verify_stored(s.store, s.store.resolve("greeter:1.2.0"), promotion_trust(s), engine=s.engine)
    (prov,) = [c for c in verdict.checks if c.name == "provenance"]
    assert not verdict.allowed and not prov.ok
    assert "the signed provenance is for greeter 1.0.0, not 1.2.0" in prov.reason, prov.reason
    trust = _trust_file(s, tmp_path)
    for ref in ("greeter", "greeter:1.2.0"):  # the highest tag is now the impostor
        code, out, err = _run(s, trust, ref)
        assert code == 125 and out == "" and "not 1.2.0" in " ".join(err.split()), (ref, err)
    assert _run(s, trust, "greeter:1.1.0")[1] == "v2\n"


@pytest.fixture
def twins(af_home: Path, tmp_path: Path) -> Signed:
    """twin 1.0.0 (no environment) and twin 1.1.0 (GREETING allowed): identical bytes, two contracts."""
    s = signed_store(af_home)
    publish_logged(s, tmp_path / "a", {"twin": (wat_manifest("twin"), {"src/main.wat": OK_WAT})})
    publish_logged(s, tmp_path / "b", {"twin": (wat_manifest("twin", env="[GREETING]").replace(
        "version: 1.0.0", "version: 1.1.0"), {"src/main.wat": OK_WAT})})
    a, b = s.store.resolve("twin:1.0.0"), s.store.resolve("twin:1.1.0")
    assert a.digest == b.digest and a.manifest_digest != b.manifest_digest
    return s


def test_identical_bytes_each_version_gets_its_own_contract(twins: Signed, tmp_path: Path) -> None:
    from runtime_helpers import serve_process

    s = twins
    digest = s.store.resolve("twin:1.0.0").digest
    with serve_process(s, tmp_path) as served, httpx.Client(base_url=served.url, timeout=60) as client:
        wide = client.post("/v1/agents/twin/invoke", params={"version": "1.1.0", "env": "GREETING=hi"})
        assert wide.status_code == 200, wide.text
        # The verdict cached for these bytes is 1.1.0's: 1.0.0 must still get its own, narrower contract.
        narrow = client.post("/v1/agents/twin/invoke", params={"version": "1.0.0", "env": "GREETING=hi"})
        assert narrow.status_code == 400 and "not in the agent's environment allowlist" in narrow.text, narrow.text
        ambiguous = client.post("/v1/agents/twin/invoke", params={"digest": digest})
        assert ambiguous.status_code == 400, ambiguous.text
        assert "ask for one by name:version (twin:1.0.0 or twin:1.1.0)" in ambiguous.json()["error"]
    with pytest.raises(AmbiguousReference, match="twin:1.0.0 or twin:1.1.0"):
        s.store.resolve(f"twin@{digest}")
    code, _, err = _run(s, _trust_file(s, tmp_path), f"twin@{digest}")
    assert code == 2 and "ask for one by name:version" in " ".join(err.split()), err


def _provenance_of(doc: bytes) -> dict[str, Any]:
    return json.loads(_payload(doc))["predicate"]  # type: ignore[no-any-return]


def _payload(doc: bytes) -> bytes:
    return base64.b64decode(json.loads(doc)["payload"])


def _signed_provenance(s: Signed, digest: str, pred: dict[str, Any], **params: Any) -> tuple[bytes, bytes]:
    """A provenance statement signed by the build key and logged: (envelope, log record)."""
    pred = copy.deepcopy(pred)
    pred["buildDefinition"]["externalParameters"].update(params)
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("twin", digest, SLSA_PROVENANCE_V1, pred),
                             s.keyring).to_json()
    pem = s.keyring.public_keys()[0].pem
    return envelope, EmbeddedLog().add(proposed_for_envelope(envelope, pem)).entry.to_json()


def test_several_provenances_for_one_digest_the_matching_contract_or_a_refusal(twins: Signed) -> None:
    s = twins
    a, b = s.store.resolve("twin:1.0.0"), s.store.resolve("twin:1.1.0")
    data = s.store.fetch_wasm("twin:1.0.0")[1]
    trust = promotion_trust(s)
    base = collect(s.store, a)
    others = [doc for _, doc in base.attestations if SLSA_PROVENANCE_V1.encode() not in _payload(doc)]
    narrow = _provenance_of(next(doc for _, doc in base.attestations if SLSA_PROVENANCE_V1.encode() in _payload(doc)))
    wide = _provenance_of(next(doc for _, doc in collect(s.store, b).attestations
                               if SLSA_PROVENANCE_V1.encode() in _payload(doc)))
    assert narrow["buildDefinition"]["externalParameters"]["agent"] != wide["buildDefinition"]["externalParameters"][
        "agent"]

    def evidence(*provenances: tuple[bytes, bytes]) -> Evidence:
        return Evidence(signatures=base.signatures, attestations=[("a", d) for d in others]
                        + [(f"p{i}", env) for i, (env, _) in enumerate(provenances)],
                        tlog=base.tlog + [(f"r{i}", rec) for i, (_, rec) in enumerate(provenances)])

    p10 = _signed_provenance(s, a.digest, narrow, name="twin", version="1.0.0")
    p11 = _signed_provenance(s, a.digest, wide, name="twin", version="1.1.0")
    both = evidence(p10, p11)
    v10 = verify(a.digest, data, both, trust, name="twin", version="1.0.0")
    assert v10.allowed and v10.runspec is not None and v10.runspec.env == (), v10.reasons
    v11 = verify(a.digest, data, both, trust, name="twin", version="1.1.0")
    assert v11.allowed and v11.runspec is not None and v11.runspec.env == ("GREETING",), v11.reasons
    unnamed = verify(a.digest, data, both, trust, name="twin")  # no version asked: which contract?
    (prov,) = [c for c in unnamed.checks if c.name == "provenance"]
    assert not unnamed.allowed and unnamed.runspec is None
    assert "ambiguous" in prov.reason and "ask for one version by name:version (twin:1.0.0, twin:1.1.0)" in prov.reason
    # Two signed provenances claiming the same name and version with different contracts: refused.
    clash = evidence(p10, _signed_provenance(s, a.digest, wide, name="twin", version="1.0.0"))
    refused = verify(a.digest, data, clash, trust, name="twin", version="1.0.0")
    (prov,) = [c for c in refused.checks if c.name == "provenance"]
    assert not refused.allowed and "conflicting provenances" in prov.reason, prov.reason
    # A provenance for another name never binds.
    other = verify(a.digest, data, evidence(_signed_provenance(s, a.digest, narrow, name="evil", version="1.0.0")),
                   trust, name="twin", version="1.0.0")
    assert not other.allowed and "is for agent 'evil', not 'twin'" in " ".join(other.reasons)


def test_a_promotion_of_one_version_does_not_promote_its_identical_twin(twins: Signed) -> None:
    from agentfactory.promotion import predicate, promoter_keyring, sign_and_attach

    s = twins
    b = s.store.resolve("twin:1.1.0")  # the wider contract
    claim = predicate(name="twin", version="1.0.0", digest=b.digest, stage="prod", action="promote",
                      resource_uri="x", gates={})
    sign_and_attach(s.store, b, claim, promoter_keyring(create=True), EmbeddedLog())  # a 1.0.0 promotion, on 1.1.0
    verdict, _ = verify_stored(s.store, b, promotion_trust(s), stage="prod")
    (check,) = [c for c in verdict.checks if c.name == "promotion"]
    assert not check.ok and "is of twin 1.0.0, not of twin 1.1.0" in check.reason, check.reason
