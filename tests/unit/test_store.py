"""The OCI image-layout store: content addressing, tags, atomicity, tampering."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import wasmtime

from agentfactory.artifact import WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, build_agent_artifact
from agentfactory.digest import digest_of
from agentfactory.errors import ConfigError, DigestMismatchError, InputError, NotFoundError, StoreError
from agentfactory.store import OCILayoutStore, open_store


def module(n: int) -> bytes:
    return bytes(wasmtime.wat2wasm(f'(module (func (export "_start")) (global i32 (i32.const {n})))'))


def push(store: OCILayoutStore, name: str, version: str, n: int = 0) -> str:
    art = build_agent_artifact(module(n), name=name, version=version, created_epoch=1_700_000_000)
    return store.push_agent(art, name=name, version=version).digest


@pytest.fixture
def store(tmp_path: Path) -> OCILayoutStore:
    return OCILayoutStore(tmp_path / "store")


def test_layout_follows_the_oci_spec(store: OCILayoutStore) -> None:
    digest = push(store, "echo", "1.0.0")
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "echo:1.0.0"
    manifest = json.loads((store.root / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    assert manifest["config"]["mediaType"] == WASM_CONFIG_MEDIA_TYPE
    assert manifest["layers"] == [{"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": digest, "size": len(module(0))}]
    config = json.loads((store.root / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    assert config == {"architecture": "wasm", "os": "wasip1", "layerDigests": [digest],
                      "created": "2023-11-14T22:13:20Z"}


def test_artifact_is_deterministic() -> None:
    a = build_agent_artifact(module(1), name="x", version="1.0.0", created_epoch=5)
    b = build_agent_artifact(module(1), name="x", version="1.0.0", created_epoch=5)
    assert a.manifest.digest == b.manifest.digest and a.digest == digest_of(module(1))


def test_resolve_by_every_kind_of_reference(store: OCILayoutStore) -> None:
    d1 = push(store, "echo", "1.0.0", 1)
    d2 = push(store, "echo", "1.10.0", 2)
    push(store, "echo", "1.9.0", 3)
    push(store, "echo", "2.0.0-rc.1", 4)
    assert store.resolve("echo:1.0.0").digest == d1
    assert store.resolve(d1).version == "1.0.0"
    assert store.resolve(f"echo@{d2}").version == "1.10.0"
    assert store.resolve("echo").version == "2.0.0-rc.1" or store.resolve("echo").version == "1.10.0"
    manifest_digest = store.resolve("echo:1.0.0").manifest_digest
    assert store.resolve(manifest_digest).digest == d1
    with pytest.raises(NotFoundError, match="no such agent"):
        store.resolve("nope")
    with pytest.raises(NotFoundError):
        store.resolve(f"other@{d1}")
    with pytest.raises(InputError, match="sha256:<64"):
        store.resolve("echo@sha256:xyz")


def test_latest_is_by_semver_not_by_text(store: OCILayoutStore) -> None:
    push(store, "a", "1.9.0", 1)
    push(store, "a", "1.10.0", 2)
    push(store, "a", "1.10.0-beta", 3)
    assert store.resolve("a").version == "1.10.0"


def test_push_is_idempotent_and_a_tag_moves(store: OCILayoutStore) -> None:
    d1 = push(store, "echo", "1.0.0", 1)
    before = (store.root / "index.json").read_bytes()
    push(store, "echo", "1.0.0", 1)
    assert (store.root / "index.json").read_bytes() == before
    d2 = push(store, "echo", "1.0.0", 2)  # same version, new bytes: the tag moves
    assert store.resolve("echo:1.0.0").digest == d2
    assert store.resolve(d1).tag is None  # the old artifact stays reachable by digest
    agents = store.list_agents()
    assert [(a.digest, a.tag) for a in agents] == sorted([(d1, None), (d2, "echo:1.0.0")],
                                                         key=lambda t: t[0])


def test_fetch_verifies_bytes(store: OCILayoutStore) -> None:
    digest = push(store, "echo", "1.0.0")
    agent, wasm = store.fetch_wasm("echo:1.0.0")
    assert digest_of(wasm) == digest == agent.digest
    blob = store.root / "blobs/sha256" / digest[7:]
    blob.write_bytes(wasm[:-1] + b"\x01")
    with pytest.raises(DigestMismatchError, match="tampered with or corrupted"):
        store.fetch_wasm("echo:1.0.0")


def test_refuses_to_store_mislabelled_bytes(store: OCILayoutStore) -> None:
    with pytest.raises(DigestMismatchError):
        store.put_blob(b"abc", digest_of(b"abd"))
    assert not (store.root / "blobs").exists()


def test_corrupt_index_is_a_clear_error(store: OCILayoutStore) -> None:
    push(store, "echo", "1.0.0")
    (store.root / "index.json").write_text("{not json")
    with pytest.raises(StoreError, match="index.json: not valid JSON"):
        store.list_agents()


def test_index_pointing_at_wrong_artifact_is_refused(store: OCILayoutStore) -> None:
    push(store, "echo", "1.0.0", 1)
    d2 = push(store, "other", "1.0.0", 2)
    index = json.loads((store.root / "index.json").read_text())
    for m in index["manifests"]:
        if m["annotations"]["org.opencontainers.image.ref.name"] == "echo:1.0.0":
            m["annotations"]["dev.agentfactory.artifact.digest"] = d2
    (store.root / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match="the store is corrupt"):
        store.resolve("echo:1.0.0")


def test_manifest_of_wrong_media_type_is_refused(store: OCILayoutStore) -> None:
    push(store, "echo", "1.0.0")
    agent = store.resolve("echo:1.0.0")
    manifest_path = store.root / "blobs/sha256" / agent.manifest_digest[7:]
    doc = json.loads(manifest_path.read_bytes())
    doc["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    evil = json.dumps(doc).encode()
    store.put_blob(evil, digest_of(evil))
    with pytest.raises(InputError, match=r"layers\[0\].mediaType"):
        store.manifest(digest_of(evil), name="echo")


def test_concurrent_pushes_lose_nothing(store: OCILayoutStore) -> None:
    threads = [threading.Thread(target=push, args=(store, f"agent{i}", "1.0.0", i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.name for a in store.list_agents()) == sorted(f"agent{i}" for i in range(16))
    assert not list(store.root.rglob("*.tmp"))


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(f"oci-layout:{tmp_path}"), OCILayoutStore)
    assert isinstance(open_store(str(tmp_path)), OCILayoutStore)
    with pytest.raises(ConfigError, match="unknown scheme"):
        open_store("s3://bucket")
    with pytest.raises(ConfigError, match="give a folder"):
        open_store("oci-layout:")
    from agentfactory.store.registry import RegistryStore

    assert isinstance(open_store("oci://localhost:5000/agents?plain-http=true"), RegistryStore)
    for url, message in (("oci://localhost:5000/Agents", "not a valid repository path"),
                         ("oci://user:pw@localhost/agents", "no credentials in URLs"),
                         ("oci://localhost/agents?insecure=1", "unknown option"),
                         ("oci://localhost/agents?ca=/nonexistent.pem", "CA file")):
        with pytest.raises(ConfigError, match=message):
            open_store(url)


def test_empty_store_lists_nothing(store: OCILayoutStore) -> None:
    assert store.list_agents() == []
    with pytest.raises(NotFoundError):
        store.resolve("x")


def test_a_version_must_be_semver_before_any_lookup(store: OCILayoutStore) -> None:
    push(store, "echo", "1.0.0")
    for bad in ("echo:1.0", "echo:latest", 'echo:1.0.0"]},', "echo:" + "9" * 300):
        with pytest.raises(InputError, match="not a semantic version"):
            store.resolve(bad)


def test_identical_bytes_published_as_two_versions_is_ambiguous_by_digest(store: OCILayoutStore) -> None:
    from agentfactory.store.base import AmbiguousReference

    digest = push(store, "twin", "1.0.0")
    assert push(store, "twin", "1.1.0") == digest  # the same module: one wasm digest, two manifests
    for ref in (f"twin@{digest}", digest):
        with pytest.raises(AmbiguousReference, match=r"ask for one by name:version \(twin:1.0.0 or twin:1.1.0\)"):
            store.resolve(ref)
    a, b = store.resolve("twin:1.0.0"), store.resolve("twin:1.1.0")
    assert (a.version, b.version) == ("1.0.0", "1.1.0") and a.manifest_digest != b.manifest_digest
    assert store.resolve(f"twin@{a.manifest_digest}").version == "1.0.0"  # a manifest digest is exact


def test_a_listing_its_manifest_contradicts_is_refused(store: OCILayoutStore) -> None:
    from agentfactory.store.base import MislabelledAgent

    push(store, "echo", "1.0.0")
    index = json.loads((store.root / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.version"] = "9.0.0"  # a re-tag in the index
    (store.root / "index.json").write_text(json.dumps(index))
    for ref in ("echo", "echo:9.0.0"):
        with pytest.raises(MislabelledAgent, match="manifest says version '1.0.0': a re-tagged agent"):
            store.resolve(ref)
