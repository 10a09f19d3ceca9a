"""Evidence signed through real OpenBao Transit: verify, rotate, revoke — in-process and by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import hello_manifest, write_template

from agentfactory.evidence import collect
from agentfactory.keys.vault import TransitKeyProvider
from agentfactory.store import OCILayoutStore
from agentfactory.trust import from_public_keys
from agentfactory.verifier import Verdict, verify
from pipelines.run import Signing, run_pipeline

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const {n})))'


def build(tmp: Path, store: OCILayoutStore, transit: TransitKeyProvider, name: str, n: int) -> str:
    templates = tmp / f"t-{name}"
    write_template(templates, name, manifest=hello_manifest(name, language="wat", sources="[m.wat]"),
                   files={"m.wat": WAT.format(n=n)})
    report = run_pipeline(templates, store, signing=Signing(transit), jobs=1)
    assert report.ok, [t.errors for t in report.templates]
    assert report.templates[0].evidence["provider"] == "vault"
    return str(report.templates[0].digest)


def judge(store: OCILayoutStore, transit: TransitKeyProvider, digest: str) -> Verdict:
    agent = store.resolve(digest)
    return verify(digest, store.fetch_wasm(digest)[1], collect(store, agent), from_public_keys(transit.public_keys()))


def test_transit_signed_evidence_survives_rotation_until_revoked(tmp_path: Path, transit: TransitKeyProvider) -> None:
    store = OCILayoutStore(tmp_path / "store")
    old = build(tmp_path, store, transit, "alpha", 1)
    assert judge(store, transit, old).allowed

    transit.rotate()
    new = build(tmp_path, store, transit, "beta", 2)
    assert judge(store, transit, old).allowed, "a rotation must not invalidate what v1 signed"
    assert judge(store, transit, new).allowed

    v1 = next(k for k in transit.public_keys() if k.version == 1)
    transit.revoke(v1.key_id)
    refused = judge(store, transit, old)
    assert not refused.allowed
    (status,) = [c for c in refused.checks if c.name == "key-status"]
    assert not status.ok and "revoked" in status.reason
    assert judge(store, transit, new).allowed, "v2 is still trusted"


def test_cli_verify_with_vault_keys(tmp_path: Path, transit: TransitKeyProvider, openbao, transit_mount: str) -> None:  # type: ignore[no-untyped-def]
    store = OCILayoutStore(tmp_path / "store")
    digest = build(tmp_path, store, transit, "gamma", 3)
    env = {**os.environ, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token,
           "AGENTFACTORY_TRANSIT_MOUNT": transit_mount, "AGENTFACTORY_KEY_PROVIDER": "vault"}
    exe = Path(sys.executable).with_name("agentfactory")

    def cli_verify() -> tuple[int, dict]:  # type: ignore[type-arg]
        proc = subprocess.run([str(exe), "verify", f"gamma@{digest}", "--store", f"oci-layout:{store.root}", "--json"],
                              env=env, capture_output=True, text=True, timeout=120)
        return proc.returncode, json.loads(proc.stdout)

    code, verdict = cli_verify()
    assert code == 0 and verdict["allowed"], verdict
    transit.rotate()
    signer = next(k for k in transit.public_keys() if k.version == 1)
    transit.revoke(signer.key_id)
    code, verdict = cli_verify()
    assert code == 1 and not verdict["allowed"]
    assert any(c["name"] == "key-status" and "revoked" in c["reason"] for c in verdict["checks"])
