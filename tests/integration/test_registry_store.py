"""The registry backend against the real `docker-registry` (distribution 2.8): publish, verify,
copy with evidence, authentication, TLS, and registries that lie."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import hello_manifest, write_template
from lying_registry import Answer, lying_proxy
from registry_server import Registry, running_registry

from agentfactory.errors import DigestMismatchError, StoreError
from agentfactory.evidence import collect
from agentfactory.keys import open_provider
from agentfactory.store import OCILayoutStore, open_store
from agentfactory.store.copy import copy_agent
from agentfactory.store.registry import RegistryStore
from agentfactory.trust import from_public_keys
from agentfactory.verifier import verify
from pipelines.run import Signing, run_pipeline

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const {n})))'


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTFACTORY_REGISTRY_USERNAME", "AGENTFACTORY_REGISTRY_PASSWORD", "AGENTFACTORY_REGISTRY_CA",
                 "AGENTFACTORY_REGISTRY_PLAIN_HTTP", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def templates(tmp: Path, *names: str) -> Path:
    root = tmp / "templates"
    for i, name in enumerate(names):
        write_template(root, name, manifest=hello_manifest(name, language="wat", sources="[m.wat]"),
                       files={"m.wat": WAT.format(n=i + len(str(tmp)))})
    return root


def publish(tmp: Path, store_url: str, *names: str) -> RegistryStore:
    store = open_store(store_url)
    assert isinstance(store, RegistryStore)
    report = run_pipeline(templates(tmp, *names), store, signing=Signing(open_provider("local")), jobs=1)
    assert report.ok, [t.errors for t in report.templates]
    return store


def allowed(store: RegistryStore | OCILayoutStore, ref: str) -> bool:
    agent, wasm = store.fetch_wasm(ref)
    verdict = verify(agent.digest, wasm, collect(store, agent), from_public_keys(open_provider("local").public_keys()))
    return verdict.allowed


def test_publish_list_fetch_verify(tmp_path: Path, registry: Registry) -> None:
    store = publish(tmp_path, f"oci://{registry.host}/agents?plain-http=true", "alpha", "beta")
    names = {a.name: a for a in store.list_agents()}
    assert {"alpha", "beta"} <= set(names)
    assert names["alpha"].tag == "1.0.0"
    assert allowed(store, "alpha:1.0.0")
    assert allowed(store, f"alpha@{names['alpha'].digest}")
    # evidence lives beside the agent, found through the referrers tag schema (distribution 2.8 has no API)
    assert len(store.referrers(names["alpha"])) == 5  # Sigstore bundles: signature, 3 attestations, image
    # publishing the same thing again is a no-op that still succeeds
    again = run_pipeline(templates(tmp_path, "alpha", "beta"), store, signing=Signing(open_provider("local")))
    assert again.ok


def test_cli_verify_full_registry_reference(tmp_path: Path, registry: Registry) -> None:
    store = publish(tmp_path, f"oci://{registry.host}/cli?plain-http=true", "gamma")
    agent = store.resolve("gamma")
    exe = Path(sys.executable).with_name("agentfactory")
    env = {**os.environ, "AGENTFACTORY_REGISTRY_PLAIN_HTTP": "1"}
    proc = subprocess.run([str(exe), "verify", f"oci://{registry.host}/cli/gamma@{agent.digest}", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["allowed"]
    bad = subprocess.run([str(exe), "verify", f"oci://{registry.host}/cli/gamma@sha256:{'1' * 64}", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no such agent" in bad.stdout  # an unknown reference is bad input


def test_copy_layout_to_registry_and_back(tmp_path: Path, registry: Registry) -> None:
    layout = OCILayoutStore(tmp_path / "layout")
    assert run_pipeline(templates(tmp_path, "delta"), layout, signing=Signing(open_provider("local"))).ok
    agent = layout.resolve("delta")
    remote = open_store(f"oci://{registry.host}/copies?plain-http=true")
    first = copy_agent(layout, remote, agent)
    assert first.blobs_copied >= 2 and first.referrers == 5 and not first.errors
    again = copy_agent(layout, remote, agent)
    assert again.blobs_copied == 0 and again.blobs_present >= 2, "a second copy must be a no-op"
    assert allowed(remote, f"delta@{agent.digest}")
    back = OCILayoutStore(tmp_path / "back")
    copy_agent(remote, back, remote.resolve("delta"))
    assert allowed(back, "delta:1.0.0")
    assert back.resolve("delta").manifest_digest == agent.manifest_digest


def test_cli_store_copy_and_ls(tmp_path: Path, registry: Registry) -> None:
    layout = OCILayoutStore(tmp_path / "layout")
    assert run_pipeline(templates(tmp_path, "epsilon"), layout, signing=Signing(open_provider("local"))).ok
    exe = Path(sys.executable).with_name("agentfactory")
    env = {**os.environ, "AGENTFACTORY_REGISTRY_PLAIN_HTTP": "1"}
    dst = f"oci://{registry.host}/cli-copy"
    proc = subprocess.run([str(exe), "store", "copy", f"oci-layout:{layout.root}", dst, "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["agents"]
    assert row["referrers"] == 5
    ls = subprocess.run([str(exe), "store", "ls", "--store", dst, "--json"], capture_output=True, text=True,
                        env=env, timeout=120)
    assert [a["name"] for a in json.loads(ls.stdout)["agents"]] == ["epsilon"]


def test_resumable_copy(tmp_path: Path, registry: Registry) -> None:
    layout = OCILayoutStore(tmp_path / "layout")
    assert run_pipeline(templates(tmp_path, "zeta"), layout, signing=Signing(open_provider("local"))).ok
    agent = layout.resolve("zeta")
    remote = open_store(f"oci://{registry.host}/resume?plain-http=true")
    # an interrupted earlier copy left the module behind, nothing else
    remote.put_blob(layout.get_blob(agent.digest, 1 << 20), agent.digest, name="zeta")
    report = copy_agent(layout, remote, agent)
    assert report.blobs_present >= 1 and report.referrers == 5
    assert allowed(remote, "zeta:1.0.0")


# -- registries that lie ---------------------------------------------------------------------------

def test_blob_that_does_not_match_its_digest(tmp_path: Path, registry: Registry) -> None:
    honest = publish(tmp_path, f"oci://{registry.host}/lies?plain-http=true", "eta")
    agent = honest.resolve("eta")
    with lying_proxy(f"http://{registry.host}") as proxy:
        def flip(method: str, path: str, a: Answer) -> Answer:
            if method == "GET" and path.endswith(f"/blobs/{agent.digest}") and a.body:
                return Answer(a.status, a.headers, a.body[:-1] + bytes([a.body[-1] ^ 1]))
            return a

        proxy.lies.append(flip)
        liar = open_store(f"oci://{proxy.host}/lies?plain-http=true")
        with pytest.raises(DigestMismatchError, match="the registry sent bytes that hash to"):
            liar.fetch_wasm("eta:1.0.0")
        cache = OCILayoutStore(tmp_path / "cache")
        with pytest.raises(DigestMismatchError):
            copy_agent(liar, cache, liar.resolve("eta"))
        assert not cache.has_blob(agent.digest), "nothing a lying registry sent may be kept"


def test_manifest_of_the_wrong_media_type(tmp_path: Path, registry: Registry) -> None:
    publish(tmp_path, f"oci://{registry.host}/lies2?plain-http=true", "theta")
    with lying_proxy(f"http://{registry.host}") as proxy:
        def relabel(method: str, path: str, a: Answer) -> Answer:
            if "/manifests/" in path and a.status == 200:
                docker_type = "application/vnd.docker.distribution.manifest.v2+json"
                return Answer(a.status, {**a.headers, "content-type": docker_type}, a.body)
            return a

        proxy.lies.append(relabel)
        liar = open_store(f"oci://{proxy.host}/lies2?plain-http=true")
        with pytest.raises(StoreError, match="has media type 'application/vnd.docker.distribution.manifest.v2"):
            liar.resolve("theta:1.0.0")


def test_oversized_manifest_and_timeout(tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(tmp_path, f"oci://{registry.host}/lies3?plain-http=true", "iota")
    with lying_proxy(f"http://{registry.host}") as proxy:
        def inflate(method: str, path: str, a: Answer) -> Answer:
            if "/manifests/" in path and a.status == 200:
                return Answer(a.status, a.headers, a.body + b" " * (5 * 1024 * 1024))
            return a

        proxy.lies.append(inflate)
        liar = open_store(f"oci://{proxy.host}/lies3?plain-http=true")
        with pytest.raises(StoreError, match="the limit is"):
            liar.resolve("iota:1.0.0")
        proxy.lies.clear()
        proxy.delay_s = 2.0
        monkeypatch.setenv("AGENTFACTORY_REGISTRY_TIMEOUT", "0.5")
        slow = open_store(f"oci://{proxy.host}/lies3?plain-http=true")
        with pytest.raises(StoreError, match="timed out"):
            slow.resolve("iota:1.0.0")


def test_referrers_pointing_at_another_subject(tmp_path: Path, registry: Registry) -> None:
    store = publish(tmp_path, f"oci://{registry.host}/lies4?plain-http=true", "kappa", "lambda")
    kappa, lam = store.resolve("kappa"), store.resolve("lambda")
    # copy one of lambda's evidence manifests into kappa's repository and list it among kappa's referrers
    foreign = store.referrers(lam)[0]
    found = store.get_manifest(foreign.digest, name="lambda")
    assert found is not None
    for blob in json.loads(found[1])["layers"] + [json.loads(found[1])["config"]]:
        store.put_blob(store.get_blob(blob["digest"], 1 << 20, name="lambda"), blob["digest"], name="kappa")
    store.put_manifest(found[1], foreign.digest, name="kappa", media_type="application/vnd.oci.image.manifest.v1+json",
                       tag=None, annotations={})
    index = store.referrers_index(kappa)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": foreign.digest,
                               "size": len(found[1]), "artifactType": foreign.artifact_type})
    data = json.dumps(index).encode()
    from agentfactory.digest import digest_of

    store.put_manifest(data, digest_of(data), name="kappa", media_type="application/vnd.oci.image.index.v1+json",
                       tag=kappa.manifest_digest.replace(":", "-"), annotations={})
    evidence = collect(store, kappa)
    assert any(f"but its subject is {lam.manifest_digest}" in p for p in evidence.problems)
    with pytest.raises(StoreError, match=f"refers to {lam.manifest_digest}"):
        copy_agent(store, OCILayoutStore(tmp_path / "dst"), kappa)


# -- authentication and TLS ------------------------------------------------------------------------

def test_htpasswd_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_registry(tmp_path / "reg", auth="htpasswd") as reg:
        url = f"oci://{reg.host}/private?plain-http=true"
        anonymous = run_pipeline(templates(tmp_path / "anon", "mu"), open_store(url),
                                 signing=Signing(open_provider("local")), jobs=1)
        (failed,) = anonymous.templates
        assert failed.status == "failed" and "HTTP 401" in failed.errors[0] and "check credentials" in failed.errors[0]
        monkeypatch.setenv("AGENTFACTORY_REGISTRY_USERNAME", reg.username or "")
        monkeypatch.setenv("AGENTFACTORY_REGISTRY_PASSWORD", reg.password or "")
        store = publish(tmp_path / "auth", url, "nu")
        assert allowed(store, "nu:1.0.0")


def test_token_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_registry(tmp_path / "reg", auth="token") as reg:
        monkeypatch.setenv("AGENTFACTORY_REGISTRY_USERNAME", reg.username or "")
        monkeypatch.setenv("AGENTFACTORY_REGISTRY_PASSWORD", reg.password or "")
        store = publish(tmp_path, f"oci://{reg.host}/tokened?plain-http=true", "xi")
        assert allowed(store, "xi:1.0.0")


def test_tls_with_custom_ca(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", tls=True) as reg:
        assert reg.ca_file is not None
        store = publish(tmp_path, f"oci://{reg.host}/secure?ca={reg.ca_file}", "omicron")
        assert allowed(store, "omicron:1.0.0")
        with pytest.raises(StoreError, match="(?i)certificate|ssl|tls"):
            open_store(f"oci://{reg.host}/secure").list_agents()
