"""`agentfactory verify` and `agentfactory trust init` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES

pytestmark = pytest.mark.toolchain


def af(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env or os.environ.copy())


@pytest.fixture
def built(repo: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    proc = af(repo, "pipeline", "run", "--json", "--sbom-root", ".")
    assert proc.returncode == 0, proc.stderr
    return {t["name"]: t for t in json.loads(proc.stdout)["templates"]}


def verdict(repo: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = af(repo, "verify", "--json", *args)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(proc.stdout + proc.stderr) from None


def test_every_example_verifies(repo: Path, built: dict) -> None:  # type: ignore[type-arg]
    for name in EXAMPLES:
        row = built[name]
        assert row["evidence"]["signed"] and len(row["evidence"]["attestations"]) == 3
        code, v = verdict(repo, f"{name}@{row['digest']}")
        assert code == 0 and v["allowed"] and v["score"] == 10.0, v
        assert {c["name"] for c in v["checks"]} == {"digest", "signature", "key-status", "sbom", "provenance",
                                                    "scan", "builder", "source", "tlog", "policy"}
        assert row["evidence"]["tlog"]["log"].startswith("file://")  # the embedded log, by default
        assert len(row["evidence"]["tlog"]["indexes"]) == 5  # the signature, three attestations, image signature
        sbom = json.loads((repo / "sbom" / name / f"{row['version']}.cdx.json").read_text())
        assert sbom["metadata"]["component"]["hashes"][0]["content"] == row["digest"][7:]
    human = af(repo, "verify", f"{EXAMPLES[0]}:1.0.0")
    assert human.returncode == 0 and "ALLOWED" in human.stdout and "score 10.0/10" in human.stdout


def test_a_modified_copy_is_refused(repo: Path, built: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    wasm = tmp_path / "agent.wasm"
    assert af(repo, "store", "get", f"{EXAMPLES[0]}:1.0.0", "-o", str(wasm)).returncode == 0
    assert verdict(repo, str(wasm))[0] == 0  # the untouched file verifies by its digest
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 1
    wasm.write_bytes(bytes(data))
    code, v = verdict(repo, str(wasm))
    assert code == 1 and not v["allowed"]
    (sig,) = [c for c in v["checks"] if c["name"] == "signature"]
    assert "nothing was ever signed with these bytes" in sig["reason"]


def test_trust_policy_file(repo: Path, built: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    policy = tmp_path / "trust.yaml"
    proc = af(repo, "trust", "init", "-o", str(policy), "--repository", "file://*")
    assert proc.returncode == 0, proc.stderr
    ref = f"{EXAMPLES[0]}:1.0.0"
    assert verdict(repo, ref, "--policy", str(policy))[0] == 0
    strict = policy.read_text().replace("file://*", "https://github.com/example/*")
    (tmp_path / "strict.yaml").write_text(strict)
    code, v = verdict(repo, ref, "--policy", str(tmp_path / "strict.yaml"))
    assert code == 1 and any(c["name"] == "source" and not c["ok"] for c in v["checks"])
    # The promoters are written too: the local promoter key, apart from the build keys.
    import yaml

    spec = yaml.safe_load(policy.read_text())["spec"]
    assert [p["name"] for p in spec["promoters"]] == ["local:promoter"]
    assert {p["keyId"] for p in spec["promoters"]}.isdisjoint(k["keyId"] for k in spec["keys"])
    # Beyond the entry stage the promotion check denies, saying why: here no log to prove promotions by.
    code, v = verdict(repo, ref, "--policy", str(policy), "--stage", "canary")
    (promotion,) = [c for c in v["checks"] if c["name"] == "promotion"]
    assert code == 1 and not promotion["ok"] and "counts only when logged" in promotion["reason"], promotion


@pytest.mark.parametrize("text", ["apiVersion: [\n", "apiVersion: agentfactory.dev/v1alpha1\nkind: TrustPolicy\n"
                                  "spec:\n  keys:\n    - publicKey: not a pem\n"])
def test_a_policy_that_does_not_load_refuses_everything(repo: Path, built: dict, tmp_path: Path,  # type: ignore[type-arg]
                                                        text: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, v = verdict(repo, f"{EXAMPLES[0]}:1.0.0", "--policy", str(bad))
    assert code == 1 and not v["allowed"]
    (c,) = v["checks"]
    assert c["name"] == "trust-policy" and "nothing is trusted" in c["reason"] and str(bad) in c["reason"]


def test_artifact_policy_is_part_of_the_verdict(repo: Path, built: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    # prod asks for a score of 9.0: without trusted provenance the score drops and the policy refuses
    policy = tmp_path / "trust.yaml"
    assert af(repo, "trust", "init", "-o", str(policy), "--builder", "https://ci.example.com/other",
              "--repository", "https://github.com/example/*").returncode == 0
    code, v = verdict(repo, f"{EXAMPLES[0]}:1.0.0", "--policy", str(policy), "--stage", "prod")
    (check,) = [c for c in v["checks"] if c["name"] == "policy"]
    assert code == 1 and v["score"] == 8.0
    assert not check["ok"] and "artifact policy" in check["reason"] and "9" in check["reason"]
    code, v = verdict(repo, f"{EXAMPLES[0]}:1.0.0", "--policy", str(policy), "--stage", "dev")
    (check,) = [c for c in v["checks"] if c["name"] == "policy"]
    assert check["ok"], "dev asks for 8.0: the policy allows, the untrusted builder still denies the verdict"


def test_unknown_reference_is_denied(repo: Path, built: dict) -> None:  # type: ignore[type-arg]
    code, v = verdict(repo, "nope:9.9.9")  # denied, and a reference error: exit 2 (docs/cli.md)
    assert code == 2 and not v["allowed"] and "no such agent" in v["checks"][0]["reason"]
