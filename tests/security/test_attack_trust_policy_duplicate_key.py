"""Attack: a revoked key un-revoked by listing it twice in a trust policy.

The attacker edits (or contributes a change to) a trust policy file: after `{publicKeyFile: old.pem,
revoked: true}` they add the generated entry for the same key with `revoked: false`, and the last
entry used to win silently, so everything the stolen key signed verified again. The same trick can
list a build key as a promoter too, so that a build key alone could promote. What stops it: a key
listed twice, in one section or across `keys` and `promoters`, makes the policy fail to load, naming
both entries; a policy that does not load trusts nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import hello_manifest, write_template

from agentfactory.errors import ValidationFailed
from agentfactory.keys.local import LocalKeyring
from agentfactory.store import OCILayoutStore
from agentfactory.trust import load_trust_policy, to_yaml
from pipelines.run import Signing, run_pipeline


@pytest.fixture
def ring(tmp_path: Path) -> LocalKeyring:
    keyring = LocalKeyring(tmp_path / "keys")
    keyring.create()
    return keyring


def _policy(tmp_path: Path, ring: LocalKeyring, spec_keys: str, promoters: str = "") -> Path:
    (tmp_path / "old.pem").write_bytes(ring.public_keys()[0].pem)
    generated = to_yaml(ring.public_keys())  # the entry `trust init` writes: the same key, revoked: false
    entry = generated.split("  keys:\n", 1)[1].split("  builders:", 1)[0]
    path = tmp_path / "trust.yaml"
    path.write_text("apiVersion: agentfactory.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  keys:\n" + spec_keys
                    + entry + promoters)
    return path


def test_a_revoked_key_listed_again_as_not_revoked_is_refused_naming_both(tmp_path: Path, ring: LocalKeyring) -> None:
    path = _policy(tmp_path, ring, "  - publicKeyFile: old.pem\n    revoked: true\n")
    with pytest.raises(ValidationFailed) as failed:
        load_trust_policy(path)
    text = str(failed.value)
    key = ring.public_keys()[0].key_id
    assert f"spec.keys[1] (line 7) lists key {key[:16]}…, already listed by spec.keys[0] (line 5)" in text, text


def test_the_same_key_in_either_order_and_as_a_promoter_is_refused(tmp_path: Path, ring: LocalKeyring) -> None:
    # not revoked first, revoked second: still refused (which one wins is never a guess)
    path = _policy(tmp_path, ring, "", promoters="  promoters:\n  - publicKeyFile: old.pem\n")
    with pytest.raises(ValidationFailed, match=r"spec.promoters\[0\] \(line \d+\) lists key .*already listed by "
                                               r"spec.keys\[0\]"):
        load_trust_policy(path)
    (tmp_path / "old.pem").write_bytes(ring.public_keys()[0].pem)
    flipped = tmp_path / "flipped.yaml"
    flipped.write_text(path.read_text().split("  promoters:")[0] + "  - publicKeyFile: old.pem\n    revoked: true\n")
    with pytest.raises(ValidationFailed, match=r"spec.keys\[1\] .*already listed by spec.keys\[0\]"):
        load_trust_policy(flipped)


@pytest.mark.toolchain
def test_verify_with_such_a_policy_denies_what_the_revoked_key_signed(tmp_path: Path, ring: LocalKeyring) -> None:
    templates = tmp_path / "templates"
    write_template(templates, "alpha", manifest=hello_manifest("alpha", language="wat", sources="[m.wat]"),
                   files={"m.wat": '(module (memory (export "memory") 1) (func (export "_start")))'})
    store = OCILayoutStore(tmp_path / "store")
    assert run_pipeline(templates, store, signing=Signing(ring), jobs=1).ok
    path = _policy(tmp_path, ring, "  - publicKeyFile: old.pem\n    revoked: true\n")
    exe = str(Path(sys.executable).with_name("agentfactory"))
    done = subprocess.run([exe, "verify", "--store", f"oci-layout:{store.root}", "--policy", str(path), "alpha",
                           "--json"], capture_output=True, timeout=120)
    verdict = json.loads(done.stdout)
    assert done.returncode == 1 and not verdict["allowed"], verdict
    (check,) = verdict["checks"]
    assert check["name"] == "trust-policy" and "already listed by spec.keys[0]" in check["reason"], check
